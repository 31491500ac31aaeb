// Recorder view: captures the microphone, downsamples to 16 kHz int16 and streams ~100 ms chunks to
// the kernel as binary custom messages: {type: "chunk", seq, t} + [ArrayBuffer].
// Other messages to the kernel: {type: "ready"} on render, {type: "start", rate, t}, {type: "stop"},
// and {type: "record"} (the Record button of a simulated Recorder). From the kernel: start / stop.
// With the `camera` trait: a Snapshot button and {type: "snapshot", id} from the kernel both grab a
// camera frame and send {type: "frame", id, width, height} + [JPEG ArrayBuffer] (or {.., error}).

const OUT_RATE = 16000;

// The AudioWorklet processor, loaded from a Blob URL (an anywidget module has no URL of its own to
// resolve a sibling file against). It only batches raw samples; all maths stays on the main thread so
// the ScriptProcessor fallback shares it.
const WORKLET_SOURCE = `
class NbtoolkitCapture extends AudioWorkletProcessor {
  constructor() { super(); this.buf = new Float32Array(1024); this.n = 0; }
  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (ch) {
      for (let i = 0; i < ch.length; i++) {
        this.buf[this.n++] = ch[i];
        if (this.n === this.buf.length) {
          this.port.postMessage(this.buf, [this.buf.buffer]);
          this.buf = new Float32Array(1024);
          this.n = 0;
        }
      }
    }
    return true;
  }
}
registerProcessor("nbtoolkit-capture", NbtoolkitCapture);
`;

function nowMs() {
  return performance.timeOrigin + performance.now();
}

// Streaming windowed-sinc resampler: low-pass below the output Nyquist, then interpolate, so speech
// downsampled from 44.1/48 kHz carries no aliasing into the ASR band.
class Downsampler {
  constructor(inRate, outRate, half = 16) {
    this.step = inRate / outRate;
    this.half = half;
    this.cutoff = Math.min(1, outRate / inRate) * 0.92;
    this.buf = new Float32Array(half); // zero history: the first outputs have a full window
    this.pos = half;
  }

  kernel(x) {
    const y = this.cutoff * x;
    const sinc = y === 0 ? 1 : Math.sin(Math.PI * y) / (Math.PI * y);
    const w = 0.42 + 0.5 * Math.cos((Math.PI * x) / this.half) + 0.08 * Math.cos((2 * Math.PI * x) / this.half);
    return sinc * w;
  }

  push(input) {
    const buf = new Float32Array(this.buf.length + input.length);
    buf.set(this.buf);
    buf.set(input, this.buf.length);
    const out = [];
    while (Math.floor(this.pos) + this.half < buf.length) {
      const c = Math.floor(this.pos);
      const frac = this.pos - c;
      let acc = 0;
      let norm = 0;
      for (let k = 1 - this.half; k <= this.half; k++) {
        const w = this.kernel(k - frac);
        acc += buf[c + k] * w;
        norm += w;
      }
      out.push(acc / norm);
      this.pos += this.step;
    }
    const keep = Math.max(0, Math.floor(this.pos) - this.half + 1);
    this.buf = buf.slice(keep);
    this.pos -= keep;
    return out;
  }
}

function describeError(err) {
  const name = (err && err.name) || "Error";
  const fallback = "or pass source=Clip to Recorder to use a file instead";
  switch (name) {
    case "InsecureContext":
      return "This page is not a secure context, so the browser hides the microphone — open JupyterLab over https:// or at http://localhost / 127.0.0.1 (e.g. through an SSH tunnel), " + fallback;
    case "NoMediaDevices":
      return "This browser offers no microphone API (navigator.mediaDevices) — use a current Chrome, Firefox or Safari, " + fallback;
    case "NotAllowedError":
    case "SecurityError":
      return "Microphone access was denied — allow the microphone for this page (the icon left of the address bar) and press Record again, " + fallback;
    case "NotFoundError":
    case "OverconstrainedError":
      return "No microphone was found — connect one (or choose one in the system sound settings) and press Record again, " + fallback;
    case "NotReadableError":
      return "The microphone could not be opened (another program may hold it) — close that program and press Record again, " + fallback;
    case "TrackEnded":
      return "The microphone stopped delivering sound (unplugged?) — reconnect it and press Record again; what was recorded is kept";
    default:
      return `Recording failed (${name}: ${(err && err.message) || err}) — press Record to try again, ` + fallback;
  }
}

async function openCapture(ctx, stream, onBlock) {
  const src = ctx.createMediaStreamSource(stream);
  // a silent sink keeps the node pulled by the graph without playing the microphone back
  const sink = ctx.createGain();
  sink.gain.value = 0;
  sink.connect(ctx.destination);
  let node;
  if (ctx.audioWorklet && typeof AudioWorkletNode !== "undefined") {
    const url = URL.createObjectURL(new Blob([WORKLET_SOURCE], { type: "application/javascript" }));
    try {
      await ctx.audioWorklet.addModule(url);
    } finally {
      URL.revokeObjectURL(url);
    }
    node = new AudioWorkletNode(ctx, "nbtoolkit-capture", { channelCount: 1, channelCountMode: "explicit" });
    node.port.onmessage = (e) => onBlock(e.data);
  } else {
    node = ctx.createScriptProcessor(2048, 1, 1);
    node.onaudioprocess = (e) => onBlock(new Float32Array(e.inputBuffer.getChannelData(0)));
  }
  src.connect(node);
  node.connect(sink);
  if (ctx.state === "suspended") await ctx.resume();
  return () => {
    if (node.port) node.port.onmessage = null;
    src.disconnect();
    node.disconnect();
    stream.getTracks().forEach((t) => t.stop());
    ctx.close();
  };
}

const SNAPSHOT_QUALITY = 0.8;

// The camera for snapshots: opened on the first snapshot (not on render, so a displayed widget
// does not switch the camera on), kept open and previewed until the view goes away.
class Camera {
  constructor(video) {
    this.video = video;
    this.stream = null;
    this.opening = null;
  }

  async open() {
    if (this.stream) return;
    if (!this.opening) {
      this.opening = (async () => {
        if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) throw { name: "NoMediaDevices" };
        const stream = await navigator.mediaDevices.getUserMedia({
          video: { width: { ideal: 640 }, height: { ideal: 480 } },
        });
        this.video.srcObject = stream;
        this.video.style.display = "inline-block";
        await this.video.play().catch(() => {});
        if (this.video.readyState < 2) {
          await new Promise((resolve) => this.video.addEventListener("loadeddata", resolve, { once: true }));
        }
        this.stream = stream;
      })().finally(() => {
        this.opening = null;
      });
    }
    await this.opening;
  }

  async grab() {
    await this.open();
    const { videoWidth: width, videoHeight: height } = this.video;
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    canvas.getContext("2d").drawImage(this.video, 0, 0, width, height);
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", SNAPSHOT_QUALITY));
    if (!blob) throw { name: "EncodingError", message: "the browser could not encode a JPEG" };
    return { width, height, buffer: await blob.arrayBuffer() };
  }

  close() {
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    this.stream = null;
    this.video.srcObject = null;
    this.video.style.display = "none";
  }
}

function formatTime(s) {
  const m = Math.floor(s / 60);
  const sec = (s - m * 60).toFixed(1).padStart(4, "0");
  return `${String(m).padStart(2, "0")}:${sec}`;
}

function el(tag, cls, parent) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (parent) parent.appendChild(node);
  return node;
}

function render({ model, el: root }) {
  root.classList.add("nbtk-recorder");
  const row = el("div", "nbtk-row", root);
  const button = el("button", "nbtk-record", row);
  const meter = el("div", "nbtk-meter", row);
  const meterFill = el("div", "nbtk-meter-fill", meter);
  const time = el("span", "nbtk-time", row);
  const canvas = el("canvas", "nbtk-wave", row);
  canvas.width = 240;
  canvas.height = 36;
  const snap = el("button", "nbtk-snapshot", row);
  snap.textContent = "📷 Snapshot";
  const preview = el("video", "nbtk-camera", row);
  preview.muted = true;
  preview.playsInline = true;
  preview.style.cssText = "display:none;height:48px;margin-left:6px;border-radius:4px";
  const camera = new Camera(preview);
  const options = el("div", "nbtk-options", root);
  for (const [trait, label] of [
    ["echo_cancellation", "echo cancellation"],
    ["noise_suppression", "noise suppression"],
    ["auto_gain_control", "auto gain"],
  ]) {
    const lab = el("label", null, options);
    const box = el("input", null, lab);
    box.type = "checkbox";
    box.checked = model.get(trait);
    box.onchange = () => {
      model.set(trait, box.checked);
      model.save_changes();
    };
    lab.appendChild(document.createTextNode(" " + label));
    model.on(`change:${trait}`, () => {
      box.checked = model.get(trait);
      // a switch flipped mid-recording applies at once where the browser allows it
      if (session && session.stream) {
        session.stream.getAudioTracks().forEach((t) => t.applyConstraints(constraints()).catch(() => {}));
      }
    });
  }
  const info = el("div", "nbtk-info", root);
  const errorBox = el("div", "nbtk-error", root);

  let session = null; // {close, ctx, stream} while this view records
  const constraints = () => ({
    channelCount: 1,
    echoCancellation: model.get("echo_cancellation"),
    noiseSuppression: model.get("noise_suppression"),
    autoGainControl: model.get("auto_gain_control"),
  });
  const columns = []; // [min, max] per ~25 ms, for the live waveform
  const maxColumns = canvas.width;

  function sync() {
    const status = model.get("status");
    // a take simulated by the kernel (simulate()) records too, on a microphone Recorder as well
    const recording = session !== null || status === "recording";
    button.textContent = recording ? "■ Stop" : "● Record";
    button.classList.toggle("nbtk-on", recording);
    time.textContent = formatTime(model.get("elapsed"));
    const level = Math.min(1, Math.sqrt(model.get("level")) * 1.5); // perceptual-ish scale
    meterFill.style.width = `${(recording ? level : 0) * 100}%`;
    const path = model.get("path");
    info.textContent = path ? `${status} · saved to ${path}` : status;
    const error = model.get("error");
    errorBox.textContent = error;
    errorBox.style.display = error ? "block" : "none";
    snap.style.display = model.get("camera") ? "inline-block" : "none";
    if (!model.get("camera")) camera.close();
  }

  async function snapshot(id) {
    try {
      const { width, height, buffer } = await camera.grab();
      model.send({ type: "frame", id, width, height, t: nowMs() }, undefined, [buffer]);
    } catch (err) {
      const name = (err && err.name) || "Error";
      model.send({ type: "frame", id, error: `${name}: ${(err && err.message) || "no camera"}` });
    }
  }
  snap.onclick = () => snapshot(0);

  function draw() {
    const g = canvas.getContext("2d");
    const h = canvas.height;
    g.clearRect(0, 0, canvas.width, h);
    g.fillStyle = "#2a7ab9";
    columns.forEach(([lo, hi], x) => {
      const top = ((1 - hi) * h) / 2;
      g.fillRect(x, top, 1, Math.max(1, ((hi - lo) * h) / 2));
    });
  }

  async function start() {
    if (session) return;
    if (model.get("simulated")) {
      model.send({ type: "record" });
      return;
    }
    // created before any await: a click is the user gesture that lets audio start
    let ctx = null;
    const placeholder = { close: () => {} };
    session = placeholder;
    try {
      if (!window.isSecureContext) throw { name: "InsecureContext" };
      if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) throw { name: "NoMediaDevices" };
      ctx = new AudioContext();
      const stream = await navigator.mediaDevices.getUserMedia({ audio: constraints() });
      const chunkSamples = Math.round((OUT_RATE * model.get("chunk_ms")) / 1000);
      const down = new Downsampler(ctx.sampleRate, OUT_RATE);
      const colSamples = Math.round(ctx.sampleRate * 0.025);
      let pending = [];
      let seq = 0;
      let sent = 0;
      let col = [1, -1, 0];
      let lastReport = 0;
      let level = 0;
      const sendChunk = () => {
        const pcm = new Int16Array(pending.length);
        for (let i = 0; i < pending.length; i++) {
          const v = Math.max(-1, Math.min(1, pending[i]));
          pcm[i] = v < 0 ? Math.round(v * 32768) : Math.round(v * 32767);
        }
        pending = [];
        sent += pcm.length;
        model.send({ type: "chunk", seq: seq++, t: nowMs() }, undefined, [pcm.buffer]);
      };
      const onBlock = (block) => {
        let sum = 0;
        for (let i = 0; i < block.length; i++) {
          const v = block[i];
          sum += v * v;
          col[0] = Math.min(col[0], v);
          col[1] = Math.max(col[1], v);
          if (++col[2] >= colSamples) {
            columns.push([col[0], col[1]]);
            if (columns.length > maxColumns) columns.shift();
            col = [1, -1, 0];
          }
        }
        level = Math.sqrt(sum / Math.max(1, block.length));
        for (const v of down.push(block)) pending.push(v);
        while (pending.length >= chunkSamples) {
          const rest = pending.splice(chunkSamples);
          sendChunk();
          pending = rest;
        }
        const t = performance.now();
        if (t - lastReport >= 100) {
          // small state only, about 10 times a second
          lastReport = t;
          model.set("level", level);
          model.set("elapsed", sent / OUT_RATE);
          model.save_changes();
          draw();
        }
      };
      model.send({ type: "start", rate: ctx.sampleRate, t: nowMs() });
      const close = await openCapture(ctx, stream, onBlock);
      stream.getAudioTracks().forEach((track) => {
        track.onended = () => {
          if (session && session.ctx === ctx) finish({ name: "TrackEnded" });
        };
      });
      session = {
        ctx,
        stream,
        close: () => {
          close();
          if (pending.length) sendChunk();
        },
      };
      model.set("error", "");
      model.set("status", "recording");
      model.save_changes();
      sync();
    } catch (err) {
      session = null;
      if (ctx) ctx.close();
      model.set("error", describeError(err));
      model.set("status", "error");
      model.save_changes();
      sync();
    }
  }

  function finish(err) {
    if (!session || !session.ctx) return;
    const s = session;
    session = null;
    s.close();
    model.send({ type: "stop", t: nowMs() });
    model.set("status", err ? "error" : "stopped");
    if (err) model.set("error", describeError(err));
    model.set("level", 0);
    model.save_changes();
    sync();
  }

  button.onclick = () => {
    if (session) finish(null);
    else if (model.get("status") === "recording") model.send({ type: "stop" }); // a kernel-side take
    else start();
  };
  const onMsg = (msg) => {
    if (msg && msg.type === "start") start();
    if (msg && msg.type === "stop") finish(null);
    if (msg && msg.type === "snapshot") snapshot(msg.id);
  };
  model.on("msg:custom", onMsg);
  const events = "change:status change:elapsed change:level change:error change:path change:camera";
  model.on(events, sync);
  sync();
  model.send({ type: "ready" });
  return () => {
    finish(null);
    camera.close();
    model.off("msg:custom", onMsg);
    model.off(events, sync);
  };
}

export default { render };
