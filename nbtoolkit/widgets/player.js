// Player view: schedules streamed PCM16 chunks back to back on the AudioContext timeline.
// From the kernel: {type: "pcm", rate} + [DataView], {type: "end"}, {type: "flush", epoch}.
// To the kernel: {type: "ready", rate} once it can play, {type: "flushed", epoch, played_ms}, and the
// traits buffered_ms / position_ms / underruns / playing / flushed about ten times a second.

function el(tag, cls, parent) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (parent) parent.appendChild(node);
  return node;
}

function render({ model, el: root }) {
  root.classList.add("nbtk-player");
  const state = el("span", "nbtk-state", root);
  const bar = el("div", "nbtk-buffer", root);
  const fill = el("div", "nbtk-buffer-fill", bar);
  const stats = el("span", "nbtk-stats", root);
  const unlock = el("button", null, root);
  unlock.textContent = "🔈 Enable sound";

  const ctx = new AudioContext({ latencyHint: "interactive" });
  let out = ctx.createGain(); // one gain per stream: a flush fades the old one out and drops it
  out.connect(ctx.destination);
  const sources = new Set();
  let nextTime = 0; // when the next chunk starts, on ctx.currentTime's clock
  let scheduled = 0; // seconds scheduled since the last flush
  let open = false; // a stream is running: running dry now is an underrun
  let starved = false; // the current gap was counted already
  let underruns = model.get("underruns");

  function buffered() {
    return sources.size ? Math.max(0, nextTime - ctx.currentTime) : 0;
  }

  function onPcm(msg, view) {
    const n = view.byteLength >> 1;
    if (!n) return;
    const buffer = ctx.createBuffer(1, n, msg.rate);
    const data = buffer.getChannelData(0);
    for (let i = 0; i < n; i++) data[i] = view.getInt16(2 * i, true) / 32768;
    const now = ctx.currentTime;
    const lead = model.get("prebuffer_ms") / 1000;
    let start;
    if (open && nextTime >= now) {
      start = nextTime; // gapless
    } else if (open) {
      if (!starved) underruns += 1; // arrived after the previous audio ran out
      start = now + lead;
    } else {
      start = Math.max(nextTime, now + lead); // a new stream follows anything still playing
    }
    open = true;
    starved = false;
    const src = ctx.createBufferSource();
    src.buffer = buffer;
    src.connect(out);
    src.onended = () => sources.delete(src);
    src.start(start);
    sources.add(src);
    nextTime = start + buffer.duration;
    scheduled += buffer.duration;
  }

  function flush(epoch) {
    const played = Math.max(0, scheduled - buffered());
    const t = ctx.currentTime;
    // a 4 ms fade then stop: silent within ~20 ms, without the click of a hard cut
    out.gain.setTargetAtTime(0, t, 0.004);
    for (const src of sources) src.stop(t + 0.02);
    sources.clear();
    const old = out;
    setTimeout(() => old.disconnect(), 100);
    out = ctx.createGain();
    out.connect(ctx.destination);
    nextTime = 0;
    scheduled = 0;
    open = false;
    starved = false;
    model.send({ type: "flushed", epoch, played_ms: played * 1000 });
    report(epoch);
  }

  let last = {};
  function report(epoch) {
    const b = buffered();
    if (open && sources.size === 0 && !starved && ctx.state === "running") {
      starved = true; // ran dry while the kernel still owes audio
      underruns += 1;
    }
    const now = {
      buffered_ms: Math.round(b * 1000),
      position_ms: Math.round(Math.max(0, scheduled - b) * 1000),
      underruns,
      playing: b > 0 && ctx.state === "running",
    };
    if (epoch !== undefined) now.flushed = epoch;
    let changed = false;
    for (const [k, v] of Object.entries(now)) {
      if (last[k] !== v) {
        model.set(k, v);
        changed = true;
      }
    }
    last = now;
    if (changed) model.save_changes();
    state.textContent = ctx.state !== "running" ? "muted" : now.playing ? "▶ playing" : "idle";
    fill.style.width = `${Math.min(100, (b / 2) * 100)}%`; // full bar = 2 s buffered
    stats.textContent = `buffered ${now.buffered_ms} ms · played ${(now.position_ms / 1000).toFixed(1)} s · underruns ${underruns}`;
    unlock.style.display = ctx.state === "running" ? "none" : "inline-block";
  }

  const onMsg = (msg, buffers) => {
    if (!msg) return;
    if (msg.type === "pcm" && buffers && buffers.length) onPcm(msg, buffers[0]);
    else if (msg.type === "end") open = false;
    else if (msg.type === "flush") flush(msg.epoch);
  };
  model.on("msg:custom", onMsg);
  unlock.onclick = () => ctx.resume();
  ctx.onstatechange = () => report();
  const timer = setInterval(() => report(), 100);
  report();
  model.send({ type: "ready", rate: ctx.sampleRate });
  return () => {
    clearInterval(timer);
    model.off("msg:custom", onMsg);
    ctx.close();
  };
}

export default { render };
