"""Load: N concurrent realtime sessions streaming live speech to the local server, against one session.

Each session opens ``WS /api-ws/v1/realtime`` (server VAD on, as the cloud's default) and streams
16 kHz PCM in 100 ms appends at real-time pace: the engine's own TTS saying "what is one plus one",
then a pause long enough for the server VAD to end the turn, over and over. Sessions start evenly
spread over one period, so their turns do not all land at the same instant.

Reported, for one session alone and then for N at once (same run, same server, same speech):

* **appends lost** — the server has no per-append ack, so loss is read from its audio clock: the
  ``audio_end_ms`` of each ``speech_stopped`` must sit at the same offset from the start of its
  utterance in what was sent (identical audio and chunking give identical VAD offsets). A lost
  100 ms append would shift every later offset by 100 ms. Also: utterances sent vs heard (a
  ``transcription.completed`` containing "plus").
* **audio frames lost** — ``response.audio.delta`` frames received vs announced: the response's
  ``usage.output_tokens_details.audio_tokens`` (counted by the server from the bytes it sent, 25 per
  second rounded up) against the same rule applied to the bytes received.
* **first-audio latency** — end of speech as the server VAD placed it (``speech_stopped.audio_end_ms``
  on the clock of what was sent) → first ``response.audio.delta`` of the answer received, p50 and
  p95, and their ratio N sessions / 1 session. Only answers that got audio count, so read it with
  **answered** (responses that completed) and **transcript latency** (end of speech → its
  ``transcription.completed``), which every turn has: an answer still pending when the next
  question starts is cancelled by it (barge-in, as the protocol says), with no audio.
* server RSS before and after, and CPU (server process and this client) per second of each run.

Loopback only; the server is ``nbtoolkit serve`` in a subprocess (so client work does not share its
GIL), stopped at the end. Every loop is bounded; the run stops by itself.

Run: ``.venv/bin/python benchmarks/load.py`` (defaults: 20 sessions × 60 s, about 2.5 minutes);
``--sessions 3 --seconds 10`` for a quick look.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from nbtoolkit.local.engine.usage import audio_tokens

REPO = Path(__file__).resolve().parent.parent
RATE = 16000
OUT_RATE = 24000
CHUNK_MS = 100
CHUNK_BYTES = RATE * 2 * CHUNK_MS // 1000
#: Silence after each question: the VAD needs 800 ms of it to end the turn; the rest leaves room
#: for the answer before the next question (which would barge in).
PAUSE_S = 3.0
MODEL = "qwen-omni-turbo-realtime"


@dataclass
class Stats:
    """What one session saw."""

    utterances_sent: int = 0
    appends_planned: int = 0
    appends_sent: int = 0
    dropped: str = ""  # why the connection ended early, if it did
    speech_stopped: list[int] = field(default_factory=list)  # server audio_end_ms
    heard: int = 0
    latencies: list[float] = field(default_factory=list)
    transcript_latencies: list[float] = field(default_factory=list)
    responses: int = 0
    cancelled: int = 0
    audio_frames: int = 0
    audio_frames_short: int = 0  # responses whose received audio is less than announced
    errors: list[str] = field(default_factory=list)


def question_pcm() -> tuple[bytes, int]:
    """One period of the stream (question + pause) as PCM16, and the question's length in ms."""
    from nbtoolkit.local.engine import Engine

    speech = np.asarray(Engine().synthesize("what is one plus one", rate=RATE), dtype=np.int16)
    pause = np.zeros(int(PAUSE_S * RATE), dtype=np.int16)
    period = np.concatenate([np.zeros(RATE // 5, np.int16), speech, pause])
    samples = CHUNK_BYTES // 2
    period = np.concatenate([period, np.zeros(-len(period) % samples, np.int16)])
    return period.astype("<i2").tobytes(), int(len(speech) * 1000 / RATE)


async def session(
    url: str,
    token: str,
    period: bytes,
    turn_ms: int,
    seconds: float,
    delay: float,
    drain: float,
    ping: float | None,
) -> Stats:
    """One realtime session: stream ``seconds`` of the repeating period, then drain answers."""
    stats = Stats()
    await asyncio.sleep(delay)
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(
        url,
        additional_headers=headers,
        max_size=2**24,
        proxy=None,
        ping_interval=ping,
        ping_timeout=ping,
    ) as ws:
        created = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert created["type"] == "session.created", created
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        # the server's audio clock starts at the first append, sent at t0 (time.monotonic's clock)
        receiver = asyncio.create_task(_receive(ws, stats, t0))
        chunks = [period[i : i + CHUNK_BYTES] for i in range(0, len(period), CHUNK_BYTES)]
        total = stats.appends_planned = int(seconds * 1000 / CHUNK_MS)
        try:
            for i in range(total):  # bounded: exactly `seconds` of audio
                await asyncio.sleep(max(0.0, t0 + i * CHUNK_MS / 1000 - loop.time()))
                if i % len(chunks) == 0 and (total - i) * CHUNK_MS >= turn_ms:
                    stats.utterances_sent += 1  # the question and its ending silence will go out
                audio = base64.b64encode(chunks[i % len(chunks)]).decode()
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
                stats.appends_sent += 1
            # let the last answers finish (bounded), then end the session
            await asyncio.sleep(drain)
            await ws.send(json.dumps({"type": "session.finish"}))
        except ConnectionClosed as exc:
            stats.dropped = str(exc)
        try:
            await asyncio.wait_for(receiver, 30)
        except TimeoutError:
            receiver.cancel()
            stats.errors.append("no session.finished within 30 s")
    return stats


async def _receive(ws: Any, stats: Stats, t0: float) -> None:
    stopped_at: float | None = None
    first_audio: set[str] = set()
    received: dict[str, int] = {}
    try:
        async for message in ws:
            event = json.loads(message)
            kind = event["type"]
            now = time.monotonic()
            if kind == "input_audio_buffer.speech_stopped":
                stats.speech_stopped.append(int(event["audio_end_ms"]))
                # when that audio was sent: a late speech_stopped frame must not hide the wait
                stopped_at = t0 + event["audio_end_ms"] / 1000
            elif kind == "conversation.item.input_audio_transcription.completed":
                stats.heard += "plus" in event["transcript"].split()
                if stopped_at is not None:
                    stats.transcript_latencies.append(now - stopped_at)
            elif kind == "response.audio.delta":
                rid = event["response_id"]
                stats.audio_frames += 1
                received[rid] = received.get(rid, 0) + len(base64.b64decode(event["delta"]))
                if rid not in first_audio:
                    first_audio.add(rid)
                    if stopped_at is not None:
                        stats.latencies.append(now - stopped_at)
                        stopped_at = None
            elif kind == "response.done":
                response = event["response"]
                stats.responses += 1
                stats.cancelled += response["status"] == "cancelled"
                usage = response.get("usage") or {}
                announced = (usage.get("output_tokens_details") or {}).get("audio_tokens", 0)
                got = audio_tokens(received.get(response["id"], 0) / 2 / OUT_RATE)
                stats.audio_frames_short += got < announced
            elif kind == "error":
                stats.errors.append(event["error"].get("message", "?"))
            elif kind == "session.finished":
                return
    except ConnectionClosed as exc:
        stats.errors.append(f"closed {exc.rcvd.code if exc.rcvd else 'abruptly'}")


def appends_lost(stats: Stats, period_ms: int) -> int:
    """Appends missing from the server's audio clock: the drift of each turn's VAD end offset."""
    offsets = [end - (k * period_ms) for k, end in enumerate(stats.speech_stopped)]
    if not offsets:
        return 0
    return max(round(abs(o - offsets[0]) / CHUNK_MS) for o in offsets)


def serve(token: str) -> tuple[subprocess.Popen[str], str]:
    """``nbtoolkit serve`` on a free loopback port; the process and its realtime URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbtoolkit.cli", "serve", "--port", "0", "--token", token],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C" in line:
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(120) or proc.poll() is not None:
        proc.kill()
        raise SystemExit(f"nbtoolkit serve did not start:\n{''.join(lines)}")
    match = re.search(r"Realtime WebSocket:\s+(\S+)", "".join(lines))
    assert match is not None
    return proc, f"{match.group(1)}?model={MODEL}"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_run(pid: int, label: str, *args: Any) -> list[Stats]:
    """One :func:`run`, then how long it took and the CPU the server and this client used."""
    t, server0, client0 = time.monotonic(), cpu_s(pid), time.process_time()
    stats = asyncio.run(run(*args))
    wall = time.monotonic() - t
    server, client = cpu_s(pid) - server0, time.process_time() - client0
    print(
        f"  {label} done in {wall:.0f} s; CPU per second: server {server / wall:.2f}, "
        f"client {client / wall:.2f} (of {os.cpu_count()} cores); server RSS {rss_mb(pid):.0f} MB"
    )
    return stats


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def run(
    url: str,
    token: str,
    sessions: int,
    seconds: float,
    period: bytes,
    turn_ms: int,
    ping: float | None,
) -> list[Stats]:
    period_s = len(period) / 2 / RATE
    spread = [i * period_s / sessions for i in range(sessions)]
    return list(
        await asyncio.gather(
            *(
                session(url, token, period, turn_ms, seconds, d, drain=period_s, ping=ping)
                for d in spread
            )
        )
    )


def summary(name: str, all_stats: list[Stats], period_ms: int) -> dict[str, Any]:
    lat = [x for s in all_stats for x in s.latencies]
    heard = [x for s in all_stats for x in s.transcript_latencies]
    row = {
        "run": name,
        "sessions": len(all_stats),
        "sessions dropped": sum(bool(s.dropped) for s in all_stats),
        "appends not sent (drop)": sum(s.appends_planned - s.appends_sent for s in all_stats),
        "utterances sent": sum(s.utterances_sent for s in all_stats),
        "turns ended by VAD": sum(len(s.speech_stopped) for s in all_stats),
        "heard 'plus'": sum(s.heard for s in all_stats),
        "appends lost": sum(appends_lost(s, period_ms) for s in all_stats),
        "responses": sum(s.responses for s in all_stats),
        "cancelled (barge-in)": sum(s.cancelled for s in all_stats),
        "answered": sum(s.responses - s.cancelled for s in all_stats),
        "audio frames": sum(s.audio_frames for s in all_stats),
        "audio frames lost": sum(s.audio_frames_short for s in all_stats),
        "errors": sum(len(s.errors) for s in all_stats),
        "transcript p50 s": pct(heard, 50),
        "transcript p95 s": pct(heard, 95),
        "first audio p50 s": pct(lat, 50),
        "first audio p95 s": pct(lat, 95),
    }
    for s in all_stats:
        for err in [s.dropped, *s.errors][:3]:
            if err:
                print(f"  {name}: {err}")
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument(
        "--ping",
        type=float,
        default=20.0,
        help="client keepalive ping interval and timeout in s, as OmniRealtime's default (0: off)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.sessions <= 200 or not 1 <= args.seconds <= 3600:
        parser.error("use 1…200 sessions and 1…3600 seconds")

    ping = args.ping or None
    period, speech_ms = question_pcm()
    period_ms = len(period) * 1000 // (2 * RATE)
    # lead-in silence + question + the VAD's 800 ms of silence + one chunk of slack
    turn_ms = 200 + speech_ms + 800 + CHUNK_MS
    token = secrets.token_urlsafe(24)
    proc, url = serve(token)
    try:
        rss0 = rss_mb(proc.pid)
        print(f"period {period_ms} ms (question {speech_ms} ms); server RSS {rss0:.0f} MB")
        one_stats = timed_run(
            proc.pid, "1 session", url, token, 1, args.seconds, period, turn_ms, ping
        )
        one = summary("1 session", one_stats, period_ms)
        rss_one = rss_mb(proc.pid)
        label = f"{args.sessions} sessions"
        many_stats = timed_run(
            proc.pid, label, url, token, args.sessions, args.seconds, period, turn_ms, ping
        )
        many = summary(label, many_stats, period_ms)
        rss1 = rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)

    width = max(len(k) for k in one)
    print(f"\n{'':<{width}}  {one['run']:>12}  {many['run']:>12}")
    for key in list(one)[1:]:
        a, b = one[key], many[key]
        fmt = (lambda v: f"{v:12.3f}") if isinstance(a, float) else (lambda v: f"{v:12d}")
        print(f"{key:<{width}}  {fmt(a)}  {fmt(b)}")
    for q in ("p50", "p95"):
        key = f"first audio {q} s"
        print(f"first-audio {q} ratio ({many['run']} / 1 session): {many[key] / one[key]:.2f}")
    print(
        f"server RSS: {rss0:.0f} MB idle, {rss_one:.0f} MB after 1 session (engine loaded), "
        f"{rss1:.0f} MB after {many['run']}"
    )
    lost = sum(
        run[key]
        for run in (one, many)
        for key in ("appends lost", "audio frames lost", "appends not sent (drop)")
    )
    print("frames lost: " + ("0 (goal met)" if lost == 0 else f"{lost} (goal is 0)"))
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
