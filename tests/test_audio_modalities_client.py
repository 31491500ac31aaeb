"""AudioModalitiesClient against the local server (faults included), and serve_audio_modalities
exposing other backends in the same format."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import timeout
from test_protocol_audio_modalities import openai_stream
from test_server_audio_modalities import assert_says, words

from nbtoolkit.audio.clip import Clip
from nbtoolkit.backends.audio_modalities import AudioModalitiesClient, serve_audio_modalities
from nbtoolkit.errors import (
    AuthError,
    ConnectionLost,
    ProtocolError,
    RateLimited,
    ServerError,
)
from nbtoolkit.ledger import Ledger
from nbtoolkit.local import Faults
from nbtoolkit.results import Reply, Turn
from nbtoolkit.retry import RetryPolicy

FAST_RETRY = RetryPolicy(max_retries=2, initial=0.01, maximum=0.05)


def client(server: Any, **kw: Any) -> AudioModalitiesClient:
    kw.setdefault("ledger", Ledger())
    kw.setdefault("timeout", timeout(60))
    kw.setdefault("retry", FAST_RETRY)
    return AudioModalitiesClient(server.endpoints.audio_modalities_url, server.token, **kw)


def tone(seconds: float, rate: int) -> Clip:
    t = np.arange(round(seconds * rate)) / rate
    return Clip.from_array(0.3 * np.sin(2 * np.pi * 330 * t), rate)


# --------------------------------------------------------------------------- against the server
def test_complete_returns_transcript_and_16khz_speech_and_records_the_call(server, engine) -> None:
    ledger = Ledger()
    reply = client(server, ledger=ledger).complete("one plus one equals what")
    assert "two" in words(reply.text)
    assert reply.audio is not None and reply.audio.rate == 16000
    assert_says(engine, reply.audio, reply.text)
    assert reply.local and reply.raw["complete"] and not reply.raw["openai_like"]
    assert reply.request_id == reply.raw["message_id"]
    assert [(e.backend, e.offline, e.cost) for e in ledger.entries] == [
        ("audio_modalities", True, 0.0)
    ]


def test_stream_yields_the_transcript_then_audio_pieces(server) -> None:
    c = client(server)
    pieces = list(c.stream("one plus one equals what"))
    assert isinstance(pieces[0], str) and "two" in words(pieces[0])
    clips = pieces[1:]
    assert clips and all(isinstance(p, Clip) and p.rate == 16000 for p in clips)
    assert all(len(p) == 640 for p in clips[:-1])  # 40 ms at 16 kHz
    assert c.last_reply is not None and c.last_reply.audio is not None
    assert sum(len(p) for p in clips) == len(c.last_reply.audio)


def test_429_with_retry_after_is_retried_before_the_stream(faulty_server) -> None:
    faulty_server.faults = Faults(status=429, retry_after=0, fail_times=1)
    reply = client(faulty_server).complete("one plus one equals what")
    assert "two" in words(reply.text)
    assert faulty_server.faults.fail_times == 0


def test_retry_after_beyond_the_cap_is_raised_at_once(faulty_server) -> None:
    faulty_server.faults = Faults(status=429, retry_after=300, fail_times=2)
    with pytest.raises(RateLimited) as info:
        client(faulty_server).complete("hi")
    assert info.value.retry_after == 300 and info.value.status == 429
    assert faulty_server.faults.fail_times == 1  # one attempt only


def test_500_once_is_retried_and_500_every_time_raises_server_error(faulty_server) -> None:
    faulty_server.faults = Faults(status=500, fail_times=1)
    assert "two" in words(client(faulty_server).complete("one plus one equals what").text)
    faulty_server.faults = Faults(status=500, fail_times=10)
    with pytest.raises(ServerError) as info:
        client(faulty_server).complete("hi")
    assert info.value.status == 500
    assert faulty_server.faults.fail_times == 10 - (1 + FAST_RETRY.max_retries)


def test_drop_mid_stream_raises_connection_lost_keeping_transcript_and_audio(
    faulty_server, engine
) -> None:
    faulty_server.faults = Faults(drop_after=5)  # transcript frame + 4 audio frames, then drop
    c = client(faulty_server)
    with pytest.raises(ConnectionLost) as info:
        c.complete("one plus one equals what")
    partial = info.value.partial
    assert isinstance(partial, Reply) and "two" in words(partial.text)
    assert partial.audio is not None and partial.audio.duration == pytest.approx(0.16)
    assert partial.raw["complete"] is False
    assert c.last_reply is None


def test_malformed_frame_raises_protocol_error_with_what_arrived(faulty_server) -> None:
    faulty_server.faults = Faults(malformed_after=3)
    with pytest.raises(ProtocolError, match="not JSON") as info:
        client(faulty_server).complete("one plus one equals what")
    partial = info.value.partial
    assert "two" in words(partial.text)
    assert partial.audio is not None and partial.audio.duration == pytest.approx(0.08)


def test_a_server_that_never_answers_times_out_as_connection_lost(faulty_server) -> None:
    faulty_server.faults = Faults(never_answer=True)
    with pytest.raises(ConnectionLost, match="ReadTimeout") as info:
        client(faulty_server, timeout=0.5).complete("hi")
    assert info.value.partial.text == ""


def test_refused_connection_is_retried_then_raised() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = AudioModalitiesClient(
        f"http://127.0.0.1:{port}/audio/chat/completions", "tok", retry=FAST_RETRY, ledger=Ledger()
    )
    with pytest.raises(ConnectionLost, match="Could not connect"):
        c.complete("hi")


def test_wrong_key_is_an_auth_error_that_never_shows_the_key(server) -> None:
    key = "sk-wrong-key-4f9a2c"
    c = AudioModalitiesClient(server.endpoints.audio_modalities_url, key, ledger=Ledger())
    with pytest.raises(AuthError) as info:
        c.complete("hi")
    assert info.value.status == 401
    assert key not in str(info.value) and key not in repr(c)


def test_openai_shaped_stream_is_read_at_24khz_with_usage() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=openai_stream()
        )

    c = AudioModalitiesClient(
        "https://api.example.test/v1/chat/completions",
        "sk-test",
        transport=httpx.MockTransport(handler),
        ledger=Ledger(),
    )
    reply = c.complete("hello")
    assert reply.text == "Hello world"
    assert reply.audio is not None and reply.audio.rate == 24000 and len(reply.audio) == 3
    assert reply.usage.output_audio == 40 and reply.model == "gpt-4o-audio-preview"
    assert not reply.local and reply.raw["finish_reason"] == "stop"
    c16 = AudioModalitiesClient(
        "https://api.example.test/v1/chat/completions",
        "sk-test",
        sample_rate=16000,
        transport=httpx.MockTransport(handler),
        ledger=Ledger(),
    )
    audio = c16.complete("hello").audio
    assert audio is not None and audio.rate == 16000


# --------------------------------------------------------------------------- serve_audio_modalities
def test_serving_a_function_passes_text_and_audio_and_streams_its_answer() -> None:
    received: list[tuple[str, Clip | None]] = []

    def answer(text: str, audio: Clip | None) -> tuple[str, Clip | None]:
        received.append((text, audio))
        return f"you said {text}", tone(0.5, 24000)

    question = tone(0.3, 16000)
    with serve_audio_modalities(answer) as srv:
        c = AudioModalitiesClient(srv.url, srv.token, ledger=Ledger(), timeout=timeout(30))
        reply = c.complete("hello", audio=question)
        with pytest.raises(AuthError):
            AudioModalitiesClient(srv.url, "not-the-token", ledger=Ledger()).complete("x")
    assert reply.text == "you said hello"
    assert reply.audio is not None and reply.audio.rate == 16000
    assert reply.audio.duration == pytest.approx(0.5)
    ((text, audio),) = received
    assert text == "hello" and audio == question


class FakeQwenAudio:
    """Shaped like QwenAudio: ask(audio=, text=) -> Reply with text only."""

    def __init__(self) -> None:
        self.calls: list[tuple[Clip | None, str | None]] = []

    def ask(self, audio: Clip | None = None, text: str | None = None) -> Reply:
        self.calls.append((audio, text))
        return Reply(text="one plus one is two")


def test_serving_a_text_only_backend_speaks_its_answer_with_the_local_tts(engine) -> None:
    backend = FakeQwenAudio()
    with serve_audio_modalities(backend, engine=engine) as srv:
        reply = AudioModalitiesClient(srv.url, srv.token, ledger=Ledger()).complete("question")
    assert backend.calls == [(None, "question")]
    assert reply.text == "one plus one is two"
    assert "two" in assert_says(engine, reply.audio, reply.text)


class FakeDialog:
    """Shaped like Dialog: say(clip) / ask(text) -> Turn with 24 kHz audio."""

    def say(self, clip: Clip) -> Turn:
        return Turn(heard="...", text=f"heard {clip.duration:.1f} s", audio=tone(0.2, 24000))

    def ask(self, text: str) -> Turn:
        return Turn(heard="", text=f"asked {text}", audio=tone(0.2, 24000))


def test_serving_a_dialog_uses_say_for_audio_and_ask_for_text() -> None:
    with serve_audio_modalities(FakeDialog()) as srv:
        c = AudioModalitiesClient(srv.url, srv.token, ledger=Ledger())
        assert c.complete("hi").text == "asked hi"
        reply = c.complete(audio=tone(1.0, 16000))
    assert reply.text == "heard 1.0 s"
    assert reply.audio is not None and reply.audio.duration == pytest.approx(0.2)


class FakeOmni:
    """Shaped like OmniRealtime: an async context manager with async converse(clip) -> Turn."""

    def __init__(self) -> None:
        self.loop_threads: set[str] = set()
        self.closed = threading.Event()

    async def __aenter__(self) -> FakeOmni:
        self.loop_threads.add(threading.current_thread().name)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.closed.set()

    async def converse(self, clip: Clip) -> Turn:
        self.loop_threads.add(threading.current_thread().name)
        await asyncio.sleep(0)
        return Turn(heard="", text=f"{clip.duration:.2f} s of speech", audio=clip)


def test_serving_omni_runs_it_on_one_private_loop_and_speaks_text_requests_first(engine) -> None:
    omni = FakeOmni()
    with serve_audio_modalities(omni, engine=engine) as srv:
        c = AudioModalitiesClient(srv.url, srv.token, ledger=Ledger())
        assert c.complete(audio=tone(0.5, 16000)).text == "0.50 s of speech"
        spoken = c.complete("one plus one is two")
    assert spoken.text.endswith("s of speech")
    assert "two" in assert_says(engine, spoken.audio, "one plus one is two")
    assert len(omni.loop_threads) == 1 and omni.closed.is_set()


def test_serving_a_real_qwen_audio_answers_through_the_local_server(server, engine) -> None:
    from nbtoolkit.backends.qwen_audio import QwenAudio

    qa = QwenAudio(server.endpoints, ledger=Ledger())
    with serve_audio_modalities(qa, engine=engine) as srv:
        c = AudioModalitiesClient(srv.url, srv.token, ledger=Ledger(), timeout=timeout(60))
        reply = c.complete("one plus one equals what")
    assert "two" in words(reply.text)
    assert_says(engine, reply.audio, reply.text)


def test_an_unknown_chunk_mid_stream_is_ignored(faulty_server) -> None:
    faulty_server.faults = Faults(unknown_event_after=2)
    reply = client(faulty_server).complete("one plus one equals what")
    assert "two" in words(reply.text) and reply.raw["complete"]
    assert reply.audio is not None and reply.audio.rate == 16000


def test_a_backend_failure_after_the_stream_began_arrives_as_server_error() -> None:
    def broken(text: str, audio: Clip | None) -> tuple[str, Clip | None]:
        raise RuntimeError("the model is asleep")

    with serve_audio_modalities(broken) as srv:
        c = AudioModalitiesClient(srv.url, srv.token, ledger=Ledger(), retry=FAST_RETRY)
        with pytest.raises(ServerError, match="the model is asleep") as info:
            c.complete("hi")
    assert info.value.code == "server_error"
    assert info.value.partial.text == "" and info.value.partial.audio is None
