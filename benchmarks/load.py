"""Load: a classroom of realtime sessions on one local server, against one session alone.

Two scenarios, each on a fresh ``nbtoolkit serve`` (a subprocess, so this client does not share its
GIL) that measures what sessions cost as they run (see ``nbtoolkit.local.admission``):

* **eSpeak questions** — the engine's TTS saying "what is one plus one" (1.5 s), then 3 s of silence,
  over and over: the goal is that 20 sessions are all admitted and every question is answered, with
  first-audio p95 at most 1.5 × one session's.
* **real speech** — the LibriVox recordings in ``tests/data/speech/librivox/`` (3.0–5.3 s of read
  speech, which the open-vocabulary recogniser decodes far more slowly), each followed by 3 s of
  silence: sessions the server cannot serve must be refused at connect (HTTP 429), and every session
  it admitted must have every question answered, with first-audio p95 at most 2 × one session's.

Each session opens ``WS /api-ws/v1/realtime`` (server VAD on, the cloud's default) and streams 16 kHz
PCM in 100 ms appends at real-time pace, whole periods only (a question and its pause), so every
answer is due before its stream ends; then it leaves at once, without waiting — an answer still
running then would have been cut off by the next question anyway, and the server must not go on
working for a client that has gone. Sessions start spread evenly over one period. In each scenario,
first one session alone (the baseline, which also lets the server measure the cost of a session),
then N at once.

Reported per run: sessions admitted and refused (with the time the refusal took); questions sent,
heard, **answered** (responses completed; the rest were cancelled by the next question); first-audio
latency (end of speech as the server VAD placed it, on the clock of what was sent → first
``response.audio.delta``) and transcript latency, p50/p95; **frames lost** (appends missing from the
server's audio clock — the ``audio_end_ms`` of each ``speech_stopped`` must sit at the same offset
from the start of its question every time it is sent — and audio frames received short of the
``audio_tokens`` the server announces); the server's CPU per second; and **how long the server
process kept using CPU after the last client left** (its threads' run time in ``/proc/<pid>/task/*/schedstat`` sampled every 50 ms for
3 s: the end of the last 50 ms slice in which it used at least 10 % of a core). The 1-minute load
average is printed with every run: the machine is shared, so figures vary from run to run.

Run: ``.venv/bin/python benchmarks/load.py`` (20 sessions, 13 eSpeak questions / 6 recordings per
session, about 5 minutes); ``--quick`` (4 / 3 per session, about 2 minutes).
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
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _common import REPO, Row, print_table
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from nbtoolkit.protocols.tokens import audio_tokens

RATE = 16000
OUT_RATE = 24000
CHUNK_MS = 100
CHUNK_BYTES = RATE * 2 * CHUNK_MS // 1000
#: Silence before each question, and after it: the VAD needs 800 ms of it to end the turn; the rest
#: leaves room for the answer before the next question (which would barge in).
LEAD_S = 0.2
PAUSE_S = 3.0
MODEL = "qwen-omni-turbo-realtime"
LIBRIVOX = REPO / "tests" / "data" / "speech" / "librivox"
#: A 50 ms slice in which the server used this much CPU counts as busy.
BUSY_CPU = 0.10
IDLE_WINDOW_S = 3.0


@dataclass
class Stream:
    """What every session sends: one period of audio, and where each question starts in it."""

    name: str
    period: bytes
    starts_ms: list[int]  # each question's first sample, from the start of the period
    speech_ms: list[int]

    @property
    def period_ms(self) -> int:
        return len(self.period) * 1000 // (2 * RATE)


def _pad(samples: np.ndarray) -> np.ndarray:
    return np.concatenate([samples, np.zeros(-len(samples) % (CHUNK_BYTES // 2), np.int16)])


def make_stream(name: str, questions: list[np.ndarray]) -> Stream:
    """A period with each question between ``LEAD_S`` and ``PAUSE_S`` of silence, chunk-aligned."""
    parts: list[np.ndarray] = []
    starts, lengths, at = [], [], 0
    for q in questions:
        part = _pad(
            np.concatenate(
                [np.zeros(int(LEAD_S * RATE), np.int16), q, np.zeros(int(PAUSE_S * RATE), np.int16)]
            )
        )
        starts.append((at + int(LEAD_S * RATE)) * 1000 // RATE)
        lengths.append(len(q) * 1000 // RATE)
        parts.append(part)
        at += len(part)
    return Stream(name, np.concatenate(parts).astype("<i2").tobytes(), starts, lengths)


def espeak_stream() -> Stream:
    from nbtoolkit.local.engine import Engine

    speech = np.asarray(Engine().synthesize("what is one plus one", rate=RATE), dtype=np.int16)
    return make_stream("eSpeak questions", [speech])


def librivox_stream() -> Stream:
    questions = []
    for path in sorted(LIBRIVOX.glob("*.wav")):
        with wave.open(str(path)) as w:
            assert w.getframerate() == RATE and w.getsampwidth() == 2 and w.getnchannels() == 1
            questions.append(np.frombuffer(w.readframes(w.getnframes()), dtype="<i2"))
    return make_stream("real speech (LibriVox)", questions)


@dataclass
class Stats:
    """What one session saw."""

    refused: str = ""  # the 429's message, if the server refused the session
    refused_in: float = 0.0  # seconds from connecting to the refusal
    questions: int = 0
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


async def session(
    url: str, token: str, stream: Stream, periods: int, delay: float, ping: float | None
) -> Stats:
    """One realtime session: stream ``periods`` periods at real-time pace, then leave at once."""
    stats = Stats()
    await asyncio.sleep(delay)
    t_connect = time.monotonic()
    try:
        ws = await connect(
            url,
            additional_headers={"Authorization": f"Bearer {token}"},
            max_size=2**24,
            proxy=None,
            ping_interval=ping,
            ping_timeout=ping,
            open_timeout=30,
        )
    except InvalidStatus as exc:
        stats.refused_in = time.monotonic() - t_connect
        body = json.loads(exc.response.body or b"{}")
        stats.refused = f"{exc.response.status_code} {body.get('code')}: {body.get('message')}"
        return stats
    try:
        created = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert created["type"] == "session.created", created
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        # the server's audio clock starts at the first append, sent at t0 (time.monotonic's clock)
        receiver = asyncio.create_task(_receive(ws, stats, t0))
        chunks = [
            stream.period[i : i + CHUNK_BYTES] for i in range(0, len(stream.period), CHUNK_BYTES)
        ]
        try:
            for i in range(periods * len(chunks)):  # bounded: whole periods only
                await asyncio.sleep(max(0.0, t0 + i * CHUNK_MS / 1000 - loop.time()))
                audio = base64.b64encode(chunks[i % len(chunks)]).decode()
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
            stats.questions = periods * len(stream.starts_ms)
        except ConnectionClosed as exc:
            stats.dropped = str(exc)
        receiver.cancel()
        await asyncio.wait([receiver])
    finally:
        await ws.close()  # leave at once: no session.finish, no waiting for what is still running
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
                stats.heard += bool(event["transcript"].strip())
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
    except ConnectionClosed as exc:
        stats.errors.append(f"closed {exc.rcvd.code if exc.rcvd else 'abruptly'}")


def appends_lost(stats: Stats, stream: Stream) -> int:
    """Appends missing from the server's audio clock: how far each question's VAD end offset has
    drifted from the first time the same question was sent (the same audio and chunking give the
    same offset). A lost 100 ms append would shift every later offset by 100 ms."""
    period = stream.period_ms
    first: dict[int, int] = {}
    drift = 0
    for end in stats.speech_stopped:
        cycle, at = divmod(end, period)
        # the question this turn ended: the last one that started before its end
        q = max((k for k, s in enumerate(stream.starts_ms) if s <= at), default=0)
        offset = end - (cycle * period + stream.starts_ms[q])
        first.setdefault(q, offset)
        drift = max(drift, round(abs(offset - first[q]) / CHUNK_MS))
    return drift


def serve(token: str) -> tuple[subprocess.Popen[str], str]:
    """``nbtoolkit serve`` on a free loopback port; the process and its realtime URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbtoolkit.cli", "serve", "--port", "0", "--token", token],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # a server that fails to start says why
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


def cpu_s(pid: int) -> float:
    """CPU seconds process ``pid`` has used: the sum of its threads' run time in
    ``/proc/<pid>/task/*/schedstat`` (nanoseconds), else ``/proc/<pid>/stat`` (10 ms ticks).

    Ticks are too coarse for a 50 ms slice: a server with no client charges one 10 ms tick every
    2–3 s (measured: its threads ran 0.5–1.3 ms per 50 ms then), which the tick count turned into
    "busy for 0.9 s after the last client left".
    """
    total, seen = 0, False
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        tasks = []
    for tid in tasks:
        try:
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
            seen = True
        except (OSError, ValueError, IndexError):  # a thread that ended, or no schedstats
            continue
    if seen:
        return total / 1e9
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def busy_after_leaving(pid: int) -> float:
    """Seconds the server kept using CPU after the last client left (see the module docstring)."""
    start = time.monotonic()
    last_busy, before = 0.0, cpu_s(pid)
    step = 0.05
    for k in range(1, int(IDLE_WINDOW_S / step) + 1):
        time.sleep(max(0.0, start + k * step - time.monotonic()))  # sampling at a fixed rate
        now = cpu_s(pid)
        if now - before >= BUSY_CPU * step:
            last_busy = k * step
        before = now
    return last_busy


@dataclass
class Run:
    label: str
    stats: list[Stats]
    wall: float
    server_cpu: float
    busy_after: float
    load: tuple[float, float]

    def admitted(self) -> list[Stats]:
        return [s for s in self.stats if not s.refused]

    def refused(self) -> list[Stats]:
        return [s for s in self.stats if s.refused]

    def lat(self) -> list[float]:
        return [x for s in self.admitted() for x in s.latencies]

    def total(self, attr: str) -> int:
        return sum(getattr(s, attr) for s in self.admitted())


def timed_run(
    pid: int,
    label: str,
    url: str,
    token: str,
    stream: Stream,
    sessions: int,
    periods: int,
    ping: float | None,
) -> Run:
    load0 = os.getloadavg()[0]
    t, cpu0 = time.monotonic(), cpu_s(pid)
    spread = [i * stream.period_ms / 1000 / sessions for i in range(sessions)]

    async def all_sessions() -> list[Stats]:
        jobs = (session(url, token, stream, periods, d, ping) for d in spread)
        return list(await asyncio.gather(*jobs))

    stats = asyncio.run(all_sessions())
    wall = time.monotonic() - t
    server = cpu_s(pid) - cpu0
    busy = busy_after_leaving(pid)
    run = Run(label, stats, wall, server / wall, busy, (load0, os.getloadavg()[0]))
    print(
        f"  {stream.name}, {label}: {wall:.0f} s; server CPU {run.server_cpu:.2f} cores "
        f"(of {os.cpu_count()}), RSS {rss_mb(pid):.0f} MB; CPU used for {busy:.2f} s after the last "
        f"client left; load average {load0:.1f} → {run.load[1]:.1f}",
        flush=True,
    )
    for s in stats:
        for err in [s.dropped, *s.errors][:2]:
            if err and not err.startswith("closed"):
                print(f"    {label}: {err}")
    return run


def pct(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def details(stream: Stream, one: Run, many: Run) -> None:
    """The breakdown of both runs, side by side."""
    rows: list[tuple[str, Any, Any]] = []
    for name, f in [
        ("sessions admitted / refused", lambda r: f"{len(r.admitted())} / {len(r.refused())}"),
        ("questions sent (admitted sessions)", lambda r: r.total("questions")),
        ("turns ended by the VAD", lambda r: sum(len(s.speech_stopped) for s in r.admitted())),
        ("heard (non-empty transcript)", lambda r: r.total("heard")),
        (
            "answered / cancelled",
            lambda r: f"{r.total('responses') - r.total('cancelled')} / {r.total('cancelled')}",
        ),
        (
            "transcript p50 / p95 s",
            lambda r: _pair([x for s in r.admitted() for x in s.transcript_latencies]),
        ),
        ("first audio p50 / p95 s", lambda r: _pair(r.lat())),
        (
            "appends lost / audio frames short",
            lambda r: (
                f"{sum(appends_lost(s, stream) for s in r.admitted())} / {r.total('audio_frames_short')}"
            ),
        ),
        ("server CPU (cores)", lambda r: f"{r.server_cpu:.2f}"),
        ("CPU used after the last client left", lambda r: f"{r.busy_after:.2f} s"),
        ("load average (1 min) before → after", lambda r: f"{r.load[0]:.1f} → {r.load[1]:.1f}"),
    ]:
        rows.append((name, f(one), f(many)))
    width = max(len(r[0]) for r in rows)
    print(f"\n{stream.name}: {one.label} vs {many.label}")
    for name, a, b in rows:
        print(f"  {name:<{width}}  {a!s:>14}  {b!s:>14}")
    if many.refused():
        first = many.refused()[0]
        slowest = max(s.refused_in for s in many.refused())
        print(f"  refusal (slowest {slowest * 1000:.0f} ms after connecting): {first.refused}")


def _pair(values: list[float]) -> str:
    return f"{pct(values, 50):.2f} / {pct(values, 95):.2f}"


def goals(stream: Stream, one: Run, many: Run, *, ratio: float, all_admitted: bool) -> list[Row]:
    sent, answered = many.total("questions"), many.total("responses") - many.total("cancelled")
    base = pct(one.lat(), 95)
    p95 = pct(many.lat(), 95)
    n = len(many.stats)
    rows = []
    if all_admitted:
        expected = n * one.total("questions")
        rows.append(
            Row(
                f"{stream.name}: {n} sessions, questions answered",
                f"{answered}/{expected}",
                f"1 session: {one.total('responses') - one.total('cancelled')}/{one.total('questions')}",
                "",
                f"all {expected}",
                answered == expected,
            )
        )
    else:
        slowest = max((s.refused_in for s in many.refused()), default=0.0)
        rows.append(
            Row(
                f"{stream.name}: {n} sessions, admitted / refused at connect",
                f"{len(many.admitted())} / {len(many.refused())} (429 in ≤ {slowest * 1000:.0f} ms)",
                "",
                "",
                "≥ 1 admitted, the rest refused at once (≤ 1 s)",
                bool(many.admitted()) and slowest <= 1.0,
            )
        )
        rows.append(
            Row(
                f"{stream.name}: questions of admitted sessions answered",
                f"{answered}/{sent}",
                f"1 session: {one.total('responses') - one.total('cancelled')}/{one.total('questions')}",
                "",
                "all",
                answered == sent and sent > 0,
            )
        )
    rows.append(
        Row(
            f"{stream.name}: first-audio p95",
            f"{p95:.2f} s",
            f"{base:.2f} s (1 session)",
            f"{p95 / base:.2f}×",
            f"≤ {ratio:g}×",
            p95 <= ratio * base,
        )
    )
    lost = sum(
        appends_lost(s, stream) + s.audio_frames_short for r in (one, many) for s in r.admitted()
    )
    rows.append(Row(f"{stream.name}: frames lost", str(lost), "", "", "0", lost == 0))
    rows.append(
        Row(
            f"{stream.name}: server CPU after the last client left",
            f"{many.busy_after:.2f} s",
            f"{one.busy_after:.2f} s (1 session)",
            "",
            "≤ 1 s",
            many.busy_after <= 1.0,
        )
    )
    return rows


def scenario(
    stream: Stream,
    sessions: int,
    questions: int,
    ping: float | None,
    *,
    ratio: float,
    all_admitted: bool,
) -> list[Row]:
    periods = max(1, -(-questions // len(stream.starts_ms)))
    token = secrets.token_urlsafe(24)
    proc, url = serve(token)
    try:
        print(
            f"{stream.name}: period {stream.period_ms} ms, {periods} period(s) per session",
            flush=True,
        )
        one = timed_run(proc.pid, "1 session", url, token, stream, 1, periods, ping)
        many = timed_run(
            proc.pid, f"{sessions} sessions", url, token, stream, sessions, periods, ping
        )
    finally:
        proc.terminate()
        proc.wait(30)
    details(stream, one, many)
    return goals(stream, one, many, ratio=ratio, all_admitted=all_admitted)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument(
        "--quick", action="store_true", help="4 eSpeak questions and 3 recordings per session"
    )
    parser.add_argument(
        "--ping",
        type=float,
        default=20.0,
        help="client keepalive ping interval and timeout in s, as OmniRealtime's default (0: off)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.sessions <= 100:
        parser.error("use 1…100 sessions")
    ping = args.ping or None
    espeak_q, real_q = (4, 3) if args.quick else (13, 6)
    print(
        f"machine: {os.cpu_count()} cores, shared with other work; load average {os.getloadavg()[0]:.1f}"
    )
    rows = scenario(espeak_stream(), args.sessions, espeak_q, ping, ratio=1.5, all_admitted=True)
    rows += scenario(librivox_stream(), args.sessions, real_q, ping, ratio=2.0, all_admitted=False)
    print_table(
        "load.py — a classroom on one local server (shared machine: see load averages)", rows
    )
    return 0 if all(r.ok is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
