"""Admission by capacity and work that stops when its client goes (nbtoolkit.local.admission).

Real sockets on 127.0.0.1 and the real engine, behind a counter of the engine calls each server
makes. A server with one seat (``max_sessions=1``) refuses a second session at the handshake with
HTTP 429, ``Retry-After`` and DashScope's throttling body naming the limit, whichever client asks;
the seated session is still answered. A client that leaves while its work waits for an engine
thread leaves nothing behind: its queued job is cancelled and no follow-up work starts.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import timeout
from dashscope.multimodal.multimodal_dialog import MultiModalDialog
from dashscope.multimodal.multimodal_request_params import (
    ClientInfo,
    Device,
    Downstream,
    RequestParameters,
    Upstream,
)
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from nbtoolkit.audio.clip import Clip
from nbtoolkit.backends.dialog import Dialog
from nbtoolkit.backends.omni import OmniRealtime
from nbtoolkit.errors import RateLimited
from nbtoolkit.ledger import Ledger
from nbtoolkit.local import start
from nbtoolkit.local.admission import SESSION_RETRY_AFTER_S, Capacity, Refusal, Seat
from nbtoolkit.local.limits import MAX_UTTERANCE_SECONDS
from nbtoolkit.local.server import LocalServer
from nbtoolkit.retry import NO_RETRY
from tests.test_server_dialog import Recorder, sdk_dialog

SPEECH = Path(__file__).parent / "data" / "speech"

RATE = 16000
QUESTION = "what is one plus one"
ROUTES = {
    "realtime": "/api-ws/v1/realtime?model=qwen-omni-turbo-realtime",
    "dialog": "/api-ws/v1/inference",
}
#: Engine calls that cost real work (the VAD is not among them: it runs inline).
COSTLY = ("recognize", "transcribe", "respond", "synthesize")


class CountingEngine:
    """The real engine, counting its costly calls."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._engine, name)
        if name not in COSTLY:
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return counted


@contextmanager
def serving(engine: Any, **kw: Any) -> Iterator[LocalServer]:
    srv = start(engine=CountingEngine(engine), **kw)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def one_seat(engine: Any) -> Iterator[LocalServer]:
    with serving(engine, max_sessions=1) as srv:
        yield srv


def url(srv: LocalServer, route: str) -> str:
    return srv.base_url.replace("http://", "ws://") + ROUTES[route]


def auth(srv: LocalServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {srv.token.reveal()}"}


def words(text: str) -> list[str]:
    return re.sub(r"[^\w\s]", " ", text.lower()).split()


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout(90)))


@pytest.fixture(scope="module")
def question(engine: Any) -> Clip:
    return Clip.from_array(engine.synthesize(QUESTION, rate=RATE), RATE)


@contextmanager
def held_engine(srv: LocalServer) -> Iterator[threading.Event]:
    """Every engine thread of ``srv`` busy with a job that waits for the yielded gate."""
    gate = threading.Event()
    pool = srv.app.state.engine_pool
    for _ in range(pool.workers):
        pool.submit(gate.wait, timeout(120))
    assert pool.wait_for(lambda p: p.active == p.workers, timeout(10))
    try:
        yield gate
    finally:
        gate.set()


def assert_nothing_left(srv: LocalServer) -> None:
    """Once the gate opens, the pool drains and none of the client's engine work ever ran."""
    pool = srv.app.state.engine_pool
    assert pool.wait_idle(timeout(30)), (pool.queued, pool.active)
    assert (pool.queued, pool.active) == (0, 0)
    assert srv.engine.calls == Counter()


# ----------------------------------------------------------------------------- refused at connect
@pytest.mark.parametrize("route", sorted(ROUTES))
def test_session_over_the_limit_is_refused_at_the_handshake_with_429_naming_the_limit(
    one_seat: LocalServer, route: str
) -> None:
    capacity = one_seat.app.state.capacity
    with connect(url(one_seat, route), additional_headers=auth(one_seat)):
        assert capacity.sessions == 1
        with pytest.raises(InvalidStatus) as refused:
            connect(url(one_seat, route), additional_headers=auth(one_seat))
    response = refused.value.response
    assert response.status_code == 429
    assert response.headers["Retry-After"] == str(SESSION_RETRY_AFTER_S)
    body = json.loads(response.body)
    assert body["code"] == "Throttling.AllocationQuota"
    assert "limit of 1" in body["message"] and "--max-sessions" in body["message"]
    assert re.fullmatch(r"[0-9a-f]{32}", body["request_id"])
    # the seat is given back when the session ends
    assert capacity.wait_for(lambda c: c.sessions == 0, timeout(10))
    with connect(url(one_seat, route), additional_headers=auth(one_seat)):
        pass


def test_a_client_without_the_token_is_refused_as_unauthorised_not_as_throttled(
    one_seat: LocalServer,
) -> None:
    with connect(url(one_seat, "realtime"), additional_headers=auth(one_seat)) as seated:
        assert json.loads(seated.recv(timeout(10)))["type"] == "session.created"
        bad = {"Authorization": "Bearer not-the-token"}
        with (
            connect(url(one_seat, "realtime"), additional_headers=bad) as ws,
            pytest.raises(ConnectionClosed) as closed,
        ):
            ws.recv(timeout(10))
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


def test_omni_client_over_the_limit_gets_rate_limited_and_the_seated_session_is_answered(
    one_seat: LocalServer, question: Clip
) -> None:
    with connect(url(one_seat, "realtime"), additional_headers=auth(one_seat)) as seated:
        assert json.loads(seated.recv(timeout(10)))["type"] == "session.created"

        async def refused() -> RateLimited:
            rt = OmniRealtime(one_seat.endpoints, ledger=Ledger(), retry=NO_RETRY)
            with pytest.raises(RateLimited) as err:
                await rt.connect()
            return err.value

        err = run(refused())
        heard, said = converse(seated, question)
    assert err.status == 429 and err.retry_after == SESSION_RETRY_AFTER_S
    assert "plus" in words(heard) and "two" in words(said)


def converse(ws: Any, question: Clip) -> tuple[str, str]:
    """One manual realtime turn on a raw socket: what the server heard and what it said."""
    ws.send(json.dumps({"type": "session.update", "session": {"turn_detection": None}}))
    audio = base64.b64encode(question.to_pcm()).decode()
    ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
    ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
    ws.send(json.dumps({"type": "response.create"}))
    heard, said = "", ""
    while True:
        event = json.loads(ws.recv(timeout(60)))
        if event["type"] == "conversation.item.input_audio_transcription.completed":
            heard = event["transcript"]
        elif event["type"] == "response.audio_transcript.delta":
            said += event["delta"]
        elif event["type"] == "response.done":
            assert event["response"]["status"] == "completed", event
            return heard, said


def test_omni_client_error_names_the_limit(one_seat: LocalServer) -> None:
    async def main() -> RateLimited:
        with pytest.raises(RateLimited) as refused:
            await OmniRealtime(one_seat.endpoints, ledger=Ledger(), retry=NO_RETRY).connect()
        return refused.value

    with connect(url(one_seat, "realtime"), additional_headers=auth(one_seat)):
        assert "limit of 1" in str(run(main()))


def test_dialog_clients_over_the_limit_are_told_429_with_retry_after(
    one_seat: LocalServer,
) -> None:
    with connect(url(one_seat, "realtime"), additional_headers=auth(one_seat)):
        # the unmodified dashscope SDK: websocket-client's handshake error reaches on_error at once
        cb = Recorder()
        sdk = MultiModalDialog(
            app_id="your_app_id",
            workspace_id="your_workspace_id",
            url=one_seat.endpoints.websocket_base,
            request_params=RequestParameters(
                upstream=Upstream(type="AudioOnly", mode="push2talk", audio_format="pcm"),
                downstream=Downstream(voice="longxiaochun_v2", sample_rate=48000),
                client_info=ClientInfo(user_id="demo_user", device=Device(uuid="demo_device")),
            ),
            multimodal_callback=cb,
            api_key=one_seat.token.reveal(),
            model="multimodal-dialog",
        )
        starting = threading.Thread(target=_start_quietly, args=(sdk,), daemon=True)
        starting.start()
        _, error = cb.wait(lambda name, value: name == "error", 5)
        starting.join(timeout(15))
        # our Dialog client, on top of the same SDK
        with (
            pytest.raises(RateLimited) as refused,
            Dialog(one_seat.endpoints, ledger=Ledger(), retry=NO_RETRY),
        ):
            pass
    assert error.status_code == 429
    assert error.resp_headers["retry-after"] == str(SESSION_RETRY_AFTER_S)
    body = json.loads(error.resp_body)
    assert body["code"] == "Throttling.AllocationQuota" and "limit of 1" in body["message"]
    assert refused.value.status == 429 and refused.value.retry_after == SESSION_RETRY_AFTER_S


def _start_quietly(sdk: MultiModalDialog) -> None:
    # after a refused handshake the SDK polls 5 s, then its Start fails to send: that is the SDK's
    # own behaviour, already reported through on_error
    with contextlib.suppress(Exception):
        sdk.start("")


# ----------------------------------------------------------------------------- work stops
def test_realtime_client_that_leaves_mid_utterance_leaves_no_engine_work(
    engine: Any, question: Clip
) -> None:
    with serving(engine) as srv:
        pool, capacity = srv.app.state.engine_pool, srv.app.state.capacity
        with held_engine(srv):
            with connect(url(srv, "realtime"), additional_headers=auth(srv)) as ws:
                assert json.loads(ws.recv(timeout(10)))["type"] == "session.created"
                ws.send(json.dumps({"type": "session.update", "session": {"turn_detection": None}}))
                audio = base64.b64encode(question.to_pcm()).decode()
                ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
                ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
                # its transcript waits for an engine thread...
                assert pool.wait_for(lambda p: p.queued >= 1, timeout(10))
            # ...when the client leaves: the session ends at once and its job is dropped
            assert capacity.wait_for(lambda c: c.sessions == 0, timeout(10))
            assert pool.queued == 0
        assert_nothing_left(srv)


def test_dialog_client_that_leaves_mid_utterance_leaves_no_engine_work(
    engine: Any, question: Clip
) -> None:
    with serving(engine) as srv:
        pool, capacity = srv.app.state.engine_pool, srv.app.state.capacity
        with held_engine(srv), sdk_dialog(srv) as (conv, _):
            conv.start_speech()
            pcm = question.to_pcm()
            for i in range(0, len(pcm), 3200):
                conv.send_audio_data(pcm[i : i + 3200])
            conv.stop_speech()
            assert pool.wait_for(lambda p: p.queued >= 1, timeout(10))
            conv.close()
            assert capacity.wait_for(lambda c: c.sessions == 0, timeout(10))
            assert pool.queued == 0
        assert_nothing_left(srv)


def test_generation_request_whose_client_disconnects_runs_no_engine_work(engine: Any) -> None:
    body = json.dumps(
        {
            "model": "qwen-audio-turbo-latest",
            "input": {"messages": [{"role": "user", "content": [{"text": QUESTION}]}]},
        }
    ).encode()
    with serving(engine) as srv:
        pool, capacity = srv.app.state.engine_pool, srv.app.state.capacity
        with held_engine(srv):
            request = (
                "POST /api/v1/services/aigc/multimodal-generation/generation HTTP/1.1\r\n"
                f"Host: {srv.host}:{srv.port}\r\nAuthorization: Bearer {srv.token.reveal()}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            with socket.create_connection((srv.host, srv.port), timeout(10)) as sock:
                sock.sendall(request + body)
                assert pool.wait_for(lambda p: p.queued >= 1, timeout(10))
                assert capacity.requests == 1
            assert capacity.wait_for(lambda c: c.requests == 0, timeout(10))
            assert pool.queued == 0
        assert_nothing_left(srv)


def test_generation_requests_beyond_the_queue_get_429_with_retry_after(engine: Any) -> None:
    """While every engine thread is busy, requests queue up to the limit; the next is refused."""
    body = json.dumps(
        {
            "model": "qwen-audio-turbo-latest",
            "input": {"messages": [{"role": "user", "content": [{"text": QUESTION}]}]},
        }
    ).encode()
    with serving(engine) as srv:
        capacity = srv.app.state.capacity
        head = (
            "POST /api/v1/services/aigc/multimodal-generation/generation HTTP/1.1\r\n"
            f"Host: {srv.host}:{srv.port}\r\nAuthorization: Bearer {srv.token.reveal()}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        waiting: list[socket.socket] = []
        with held_engine(srv):
            try:
                for _ in range(capacity.max_requests):
                    sock = socket.create_connection((srv.host, srv.port), timeout(10))
                    waiting.append(sock)
                    sock.sendall(head + body)
                assert capacity.wait_for(lambda c: c.requests == c.max_requests, timeout(10))
                with socket.create_connection((srv.host, srv.port), timeout(10)) as extra:
                    extra.sendall(head + body)
                    reply = _read_http(extra)
            finally:
                for sock in waiting:
                    sock.close()
        status, headers, payload = reply
        assert status == 429 and int(headers["retry-after"]) >= 1
        refusal = json.loads(payload)
        assert refusal["code"] == "Throttling.RateQuota"
        assert f"limit of {capacity.max_requests}" in refusal["message"]


def _read_http(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed without answering"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    while len(rest) < int(headers["content-length"]):
        rest += sock.recv(65536)
    return int(lines[0].split()[1]), headers, rest


# ----------------------------------------------------------------------------- length caps
def test_dialog_utterance_past_a_minute_is_dropped_as_it_arrives_with_a_clear_error(
    engine: Any,
) -> None:
    seconds = MAX_UTTERANCE_SECONDS + 1
    noise = np.random.default_rng(7).integers(-3000, 3000, int(seconds * RATE), dtype=np.int16)
    pcm = noise.astype("<i2").tobytes()
    with serving(engine) as srv, sdk_dialog(srv) as (conv, cb):
        conv.start_speech()
        for i in range(0, len(pcm), 32000):
            conv.send_audio_data(pcm[i : i + 32000])
        # the error comes while the audio arrives, before any StopSpeech: nothing held for it
        _, error = cb.wait(lambda name, value: name == "error")
        conv.stop_speech()  # a StopSpeech after the drop starts no round
        conv.request_to_respond("prompt", QUESTION, None)  # the session goes on
        cb.wait(lambda name, value: name == "responding_ended")
        answer = cb.last("responding_content")["text"]
        calls = srv.engine.calls
    output = json.loads(error)["payload"]["output"]
    assert output["error_code"] == "InvalidParameter"
    message = output["error_message"]
    assert "passed 60 s without StopSpeech" in message and "send StopSpeech sooner" in message
    assert calls["recognize"] == calls["transcribe"] == 0
    assert "two" in words(answer)


def test_realtime_buffer_past_a_minute_is_cleared_as_it_arrives_with_a_clear_error(
    engine: Any,
) -> None:
    seconds = MAX_UTTERANCE_SECONDS + 1
    noise = np.random.default_rng(7).integers(-3000, 3000, int(seconds * RATE), dtype=np.int16)
    pcm = noise.astype("<i2").tobytes()
    with serving(engine) as srv, connect(url(srv, "realtime"), additional_headers=auth(srv)) as ws:
        assert json.loads(ws.recv(timeout(10)))["type"] == "session.created"
        ws.send(json.dumps({"type": "session.update", "session": {"turn_detection": None}}))
        for i in range(0, len(pcm), 5 * 2 * RATE):
            audio = base64.b64encode(pcm[i : i + 5 * 2 * RATE]).decode()
            ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
        while (event := json.loads(ws.recv(timeout(30))))["type"] != "error":
            pass
        # the buffer is empty again: the next question is heard and answered
        heard, said = converse(ws, Clip.from_array(engine.synthesize(QUESTION, rate=RATE), RATE))
        calls = srv.engine.calls
    message = event["error"]["message"]
    assert "passed 60 s without a commit" in message and "commit sooner" in message
    assert calls["recognize"] == 1  # the question's, never the long buffer's
    assert "plus" in words(heard) and "two" in words(said)


# ----------------------------------------------------------------------------- work done once
def test_an_answer_to_real_speech_does_not_recognise_the_utterance_again(
    engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer to an open sentence asks whether the speech was English at all; it uses the
    route's own recognition instead of decoding the utterance a second time (0.3-1.5 s of CPU)."""
    name = "sense_and_sensibility_01_austen_64kb-0930"
    sentence = (SPEECH / "librivox" / f"{name}.txt").read_text().strip().lower()
    clip = Clip.load(SPEECH / "librivox" / f"{name}.wav")
    recognitions: list[int] = []
    recognize = engine.recognizer.recognize

    def counted(pcm: Any, *args: Any, **kwargs: Any) -> Any:
        recognitions.append(len(pcm))
        return recognize(pcm, *args, **kwargs)

    monkeypatch.setattr(engine.recognizer, "recognize", counted)
    checks: list[int] = []
    check = engine._check_clip
    monkeypatch.setattr(engine.responder, "_check", lambda c: checks.append(1) or check(c))
    with serving(engine) as srv, connect(url(srv, "realtime"), additional_headers=auth(srv)) as ws:
        assert json.loads(ws.recv(timeout(10)))["type"] == "session.created"
        heard, said = converse(ws, clip)
    assert recognitions == [len(clip.resample(RATE).samples)]
    assert words(heard) == words(sentence) and f'"{sentence}"' in said.lower(), (heard, said)
    assert "cannot answer" in said
    # a second recogniser is consulted only where the first cannot tell English from not: Whisper
    # without language identification (tiny.en); pocketsphinx's own score and a multilingual
    # Whisper's identification tell it at no cost
    whisper = engine.recognizer.whisper
    blind = whisper is not None and not whisper.identifies_language(len(clip.samples))
    assert checks == ([1] if blind else [])


# ----------------------------------------------------------------------------- the rule
def test_session_limit_follows_the_measured_demand_and_the_cores_other_programs_leave() -> None:
    now = {"t": 0.0, "cpu": 0.0, "load": 0.0}
    capacity = Capacity(
        2,
        clock=lambda: now["t"],
        cpu_clock=lambda: now["cpu"],
        load_average=lambda: now["load"],
    )
    seat = capacity.join()
    assert isinstance(seat, Seat)
    # one session for five minutes, the server using 0.04 of a core; nothing else running
    now["t"], now["cpu"], now["load"] = 300.0, 12.0, 0.04
    assert capacity.demand == pytest.approx(0.04, rel=1e-3)
    assert capacity.free_cores == pytest.approx(2.0, rel=1e-3)
    assert capacity.max_sessions == 37  # floor(0.75 * 2 / 0.04)
    # other programs take the machine: 0.25 core is all the server counts on
    now["t"], now["cpu"], now["load"] = 301.0, 12.04, 8.0
    assert capacity.free_cores == pytest.approx(0.25)
    assert capacity.max_sessions == 4  # floor(0.75 * 0.25 / 0.04)
    seats = [capacity.join() for _ in range(3)]
    refused = capacity.join()
    assert all(isinstance(s, Seat) for s in seats) and isinstance(refused, Refusal)
    assert "its limit of 4" in refused.message and "0.25 free cores of 2" in refused.message
    # leaving gives the seat back
    capacity.leave(seat)
    assert isinstance(capacity.join(), Seat)


def test_a_busy_machine_still_admits_one_session_per_engine_thread() -> None:
    now = {"t": 0.0, "cpu": 0.0}
    capacity = Capacity(
        2, clock=lambda: now["t"], cpu_clock=lambda: now["cpu"], load_average=lambda: 50.0
    )
    first = capacity.join()
    now["t"], now["cpu"] = 300.0, 150.0  # half a core per session
    assert capacity.max_sessions == 2
    assert isinstance(first, Seat) and isinstance(capacity.join(), Seat)
    assert isinstance(capacity.join(), Refusal)


def test_model_loading_is_left_out_of_a_sessions_measured_demand() -> None:
    """Models load on first use, inside the first sessions; that one-off CPU is no session's cost."""
    from nbtoolkit.local.admission import work_cpu_seconds
    from nbtoolkit.local.engine._loading import loading

    process, work = time.process_time(), work_cpu_seconds()
    with loading():
        end = time.thread_time() + 0.2
        while time.thread_time() < end:  # a model load's CPU work
            pass
    assert time.process_time() - process >= 0.2
    assert work_cpu_seconds() - work < 0.05
