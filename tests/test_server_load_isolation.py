"""Under load, engine work waits in the app's engine pool, never in a loop that reads a socket.

Real sockets on 127.0.0.1 and the real engine. Each test first fills every thread of the server's
engine pool with slow work (jobs that wait for a gate), then drives a session. While the pool is
busy the session must still read its socket — a ping sent after more frames than uvicorn's
32-message queue holds is answered — and its VAD must still detect speech; once the gate opens,
the turn must be heard and answered with the protocol's events in their usual order.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from conftest import timeout
from websockets.asyncio.client import connect
from websockets.sync.client import connect as sync_connect

from nbtoolkit.local.engine.asr import Speculation
from nbtoolkit.local.routes import ENGINE_WORKERS
from tests.test_server_realtime import TURN_ORDER, assert_in_order, transcripts

QUESTION = "one plus one equals what"
RATE = 16000
CHUNK = RATE * 2 // 10  # 100 ms of PCM16
#: More frames than uvicorn's WebSocket queue holds (32): a route that stopped reading while they
#: arrive would leave the ping after them unread.
BACKLOG = 60


@pytest.fixture(scope="module")
def question_pcm(engine: Any) -> bytes:
    """The spoken question, then 1 s of silence (enough for the server VAD to end the turn)."""
    speech = np.asarray(engine.synthesize(QUESTION, rate=RATE), dtype=np.int16)
    pcm = np.concatenate([np.zeros(RATE // 5, np.int16), speech, np.zeros(RATE, np.int16)])
    return pcm.astype("<i2").tobytes()


def chunks(pcm: bytes) -> list[bytes]:
    return [pcm[i : i + CHUNK] for i in range(0, len(pcm), CHUNK)]


@contextmanager
def busy_engine_pool(server: Any) -> Iterator[threading.Event]:
    """Every engine-pool thread held by a job until the yielded gate is set (at the latest on exit)."""
    gate = threading.Event()
    running = threading.Semaphore(0)

    def hold() -> None:
        running.release()
        gate.wait(timeout(120))

    pool = server.app.state.engine_pool
    jobs = [pool.submit(hold) for _ in range(ENGINE_WORKERS)]
    try:
        for _ in jobs:
            assert running.acquire(timeout=timeout(10)), "the engine pool did not start the jobs"
        yield gate
    finally:
        gate.set()
        wait(jobs, timeout(10))


# ------------------------------------------------------------------ realtime
async def _realtime_turn(server: Any, pcm: bytes, gate: threading.Event) -> list[dict[str, Any]]:
    url = f"{server.endpoints.realtime_url}?model=qwen-omni-turbo-realtime"
    headers = {"Authorization": f"Bearer {server.token.reveal()}"}
    events: list[dict[str, Any]] = []

    async def until(kind: str, seconds: float) -> None:
        while kind not in (e["type"] for e in events):
            events.append(json.loads(await asyncio.wait_for(ws.recv(), timeout(seconds))))

    def append(chunk: bytes) -> str:
        audio = base64.b64encode(chunk).decode()
        return json.dumps({"type": "input_audio_buffer.append", "audio": audio})

    async with connect(url, additional_headers=headers, proxy=None, ping_interval=None) as ws:
        await until("session.created", 10)
        for chunk in chunks(pcm):
            await ws.send(append(chunk))
        await until("conversation.item.created", 20)  # the VAD ended the turn, pool or not
        for _ in range(BACKLOG):
            await ws.send(append(bytes(CHUNK)))
        pong = await ws.ping()
        await asyncio.wait_for(pong, timeout(10))
        kinds = [e["type"] for e in events]
        # the transcript still waits for the pool: the pong did not wait for it
        assert "conversation.item.input_audio_transcription.completed" not in kinds, kinds
        gate.set()
        await until("response.done", 60)
        await ws.send(json.dumps({"type": "session.finish"}))
        await until("session.finished", 20)
    return events


def test_realtime_session_reads_pings_and_detects_speech_while_the_engine_pool_is_busy(
    server: Any, question_pcm: bytes
) -> None:
    with busy_engine_pool(server) as gate:
        events = asyncio.run(_realtime_turn(server, question_pcm, gate))
    kinds = [e["type"] for e in events]
    assert_in_order(kinds, TURN_ORDER)
    heard = transcripts(events)[0]
    assert {"one", "plus"} <= set(heard.split()), heard
    # the silence sent while the transcript was pending started no second turn
    assert kinds.count("input_audio_buffer.speech_stopped") == 1
    done = next(e for e in events if e["type"] == "response.done")
    assert done["response"]["status"] == "completed"


# ------------------------------------------------------------------ dialog
def _envelope(action: str, directive: str, parameters: Any = None) -> str:
    payload: dict[str, Any] = {"model": None, "input": {"directive": directive, "dialog_id": None}}
    if parameters is not None:
        payload["parameters"] = parameters
    return json.dumps({"header": {"action": action, "task_id": "t" * 32}, "payload": payload})


def test_dialog_session_reads_pings_and_detects_speech_while_the_engine_pool_is_busy(
    server: Any, question_pcm: bytes
) -> None:
    url = server.endpoints.websocket_base
    headers = {"Authorization": f"Bearer {server.token.reveal()}"}
    start = {"upstream": {"mode": "duplex"}, "downstream": {"sample_rate": 16000}}
    seen: list[str] = []
    heard = ""

    def until(ws: Any, event: str, seconds: float) -> None:
        nonlocal heard
        while event not in seen:
            message = ws.recv(timeout=timeout(seconds))
            if isinstance(message, bytes):
                continue  # answer audio
            output = json.loads(message)["payload"].get("output") or {}
            seen.append(output.get("event") or json.loads(message)["header"]["event"])
            if output.get("event") == "SpeechContent" and output.get("finished"):
                heard = output["text"]

    with (
        busy_engine_pool(server) as gate,
        sync_connect(url, additional_headers=headers, open_timeout=timeout(10)) as ws,
    ):
        ws.send(_envelope("run-task", "Start", start))
        until(ws, "Started", 10)
        for chunk in chunks(question_pcm):
            ws.send(chunk)
        until(ws, "SpeechStarted", 20)  # the VAD runs, pool or not
        for _ in range(BACKLOG):
            ws.send(bytes(CHUNK))
        assert ws.ping().wait(timeout(10)), "the ping was not answered"
        assert "SpeechEnded" not in seen, seen  # the transcript still waits for the pool
        gate.set()
        until(ws, "RespondingEnded", 60)
        ws.send(_envelope("finish-task", "Stop"))
        until(ws, "task-finished", 20)
    order = [
        "SpeechStarted",
        "SpeechContent",
        "SpeechEnded",
        "RespondingStarted",
        "RespondingEnded",
    ]
    assert [seen.index(k) for k in order] == sorted(seen.index(k) for k in order), seen
    assert {"one", "plus"} <= set(heard.split()), heard


# ------------------------------------------------------------------ speculation on a busy pool
def test_speculation_dropped_while_queued_on_a_busy_pool_is_never_decoded() -> None:
    """Speech that resumes makes the earlier guess useless: queued, it is cancelled, not decoded."""
    decoded: list[int] = []

    def transcribe(pcm: np.ndarray, rate: int) -> str:
        decoded.append(len(pcm))
        return f"{len(pcm)} samples"

    gate = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        pool.submit(gate.wait, timeout(10))  # the pool's one thread is busy
        ahead = Speculation(transcribe, pool)
        ahead.start(bytes(200), RATE)  # a pause: guess from the speech so far
        ahead.start(bytes(400), RATE)  # the speech resumed and paused again
        final = ahead.future(bytes(400), RATE)  # the turn ended with that audio
        gate.set()
        assert final.result(timeout(10)) == "200 samples"
    assert decoded == [200]
