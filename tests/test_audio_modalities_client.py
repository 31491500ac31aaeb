"""AudioModalitiesClient against the local server (faults included), and serve_audio_modalities
exposing other backends in the same format."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import timeout
from test_protocol_audio_modalities import openai_stream
from test_server_audio_modalities import assert_says, words

from nbtoolkit import serve_audio_modalities
from nbtoolkit.audio.clip import Clip
from nbtoolkit.backends.audio_modalities import AudioModalitiesClient
from nbtoolkit.backends.dialog import Dialog
from nbtoolkit.backends.omni import OmniRealtime
from nbtoolkit.errors import (
    AuthError,
    ConnectionLost,
    ProtocolError,
    RateLimited,
    ServerError,
)
from nbtoolkit.ledger import Ledger
from nbtoolkit.local import Faults
from nbtoolkit.results import Reply
from nbtoolkit.retry import RetryPolicy

FAST_RETRY = RetryPolicy(max_retries=2, initial=0.01, maximum=0.05)


def client(server: Any, **kw: Any) -> AudioModalitiesClient:
    kw.setdefault("ledger", Ledger())
    kw.setdefault("timeout", timeout(60))
    kw.setdefault("retry", FAST_RETRY)
    return AudioModalitiesClient(server.endpoints.audio_modalities_url, api_key=server.token, **kw)


def tone(seconds: float, rate: int) -> Clip:
    t = np.arange(round(seconds * rate)) / rate
    return Clip.from_array(0.3 * np.sin(2 * np.pi * 330 * t), rate)


# --------------------------------------------------------------------------- against the server
def test_ask_returns_transcript_and_16khz_speech_and_records_the_call(server, engine) -> None:
    ledger = Ledger()
    reply = client(server, ledger=ledger).ask(text="one plus one equals what")
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
    pieces = [
        e.delta if e.type == "text.delta" else e.audio
        for e in c.stream(text="one plus one equals what")
        if e.type in ("text.delta", "audio.delta")
    ]
    assert isinstance(pieces[0], str) and "two" in words(pieces[0])
    clips = pieces[1:]
    assert clips and all(isinstance(p, Clip) and p.rate == 16000 for p in clips)
    assert all(len(p) == 640 for p in clips[:-1])  # 40 ms at 16 kHz
    assert c.last_reply is not None and c.last_reply.audio is not None
    assert sum(len(p) for p in clips) == len(c.last_reply.audio)


def test_429_with_retry_after_is_retried_before_the_stream(faulty_server) -> None:
    faulty_server.faults = Faults(status=429, retry_after=0, fail_times=1)
    reply = client(faulty_server).ask(text="one plus one equals what")
    assert "two" in words(reply.text)
    assert faulty_server.faults.fail_times == 0


def test_retry_after_beyond_the_cap_is_raised_at_once(faulty_server) -> None:
    faulty_server.faults = Faults(status=429, retry_after=300, fail_times=2)
    with pytest.raises(RateLimited) as info:
        client(faulty_server).ask(text="hi")
    assert info.value.retry_after == 300 and info.value.status == 429
    assert faulty_server.faults.fail_times == 1  # one attempt only


def test_500_once_is_retried_and_500_every_time_raises_server_error(faulty_server) -> None:
    faulty_server.faults = Faults(status=500, fail_times=1)
    assert "two" in words(client(faulty_server).ask(text="one plus one equals what").text)
    faulty_server.faults = Faults(status=500, fail_times=10)
    with pytest.raises(ServerError) as info:
        client(faulty_server).ask(text="hi")
    assert info.value.status == 500
    assert faulty_server.faults.fail_times == 10 - (1 + FAST_RETRY.max_retries)


def test_drop_mid_stream_raises_connection_lost_keeping_transcript_and_audio(
    faulty_server, engine
) -> None:
    faulty_server.faults = Faults(drop_after=5)  # transcript frame + 4 audio frames, then drop
    c = client(faulty_server)
    with pytest.raises(ConnectionLost) as info:
        c.ask(text="one plus one equals what")
    partial = info.value.partial
    assert isinstance(partial, Reply) and "two" in words(partial.text)
    assert partial.audio is not None and partial.audio.duration == pytest.approx(0.16)
    assert partial.raw["complete"] is False
    assert c.last_reply is None


def test_malformed_frame_raises_protocol_error_with_what_arrived(faulty_server) -> None:
    faulty_server.faults = Faults(malformed_after=3)
    with pytest.raises(ProtocolError, match="not JSON") as info:
        client(faulty_server).ask(text="one plus one equals what")
    partial = info.value.partial
    assert "two" in words(partial.text)
    assert partial.audio is not None and partial.audio.duration == pytest.approx(0.08)


def test_a_server_that_never_answers_times_out_as_connection_lost(faulty_server) -> None:
    faulty_server.faults = Faults(never_answer=True)
    with pytest.raises(ConnectionLost, match="ReadTimeout") as info:
        client(faulty_server, timeout=0.5).ask(text="hi")
    assert info.value.partial.text == ""


def test_refused_connection_is_retried_then_raised() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = AudioModalitiesClient(
        f"http://127.0.0.1:{port}/audio/chat/completions",
        api_key="a-token-nobody-checks",
        retry=FAST_RETRY,
        ledger=Ledger(),
    )
    with pytest.raises(ConnectionLost, match="Could not connect"):
        c.ask(text="hi")


def test_wrong_key_is_an_auth_error_that_never_shows_the_key(server) -> None:
    key = "sk-wrong-key-4f9a2c"
    c = AudioModalitiesClient(server.endpoints.audio_modalities_url, api_key=key, ledger=Ledger())
    with pytest.raises(AuthError) as info:
        c.ask(text="hi")
    assert info.value.status == 401
    assert key not in str(info.value) and key not in repr(c)


def test_openai_shaped_stream_is_read_at_24khz_with_usage() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=openai_stream()
        )

    c = AudioModalitiesClient(
        "https://api.example.test/v1/chat/completions",
        api_key="sk-test-0123456789abcdef",
        transport=httpx.MockTransport(handler),
        ledger=Ledger(),
    )
    reply = c.ask(text="hello")
    assert reply.text == "Hello world"
    assert reply.audio is not None and reply.audio.rate == 24000 and len(reply.audio) == 3
    assert reply.usage.output_audio == 40 and reply.model == "gpt-4o-audio-preview"
    assert not reply.local and reply.raw["finish_reason"] == "stop"
    c16 = AudioModalitiesClient(
        "https://api.example.test/v1/chat/completions",
        api_key="sk-test-0123456789abcdef",
        sample_rate=16000,
        transport=httpx.MockTransport(handler),
        ledger=Ledger(),
    )
    audio = c16.ask(text="hello").audio
    assert audio is not None and audio.rate == 16000


# --------------------------------------------------------------------------- serve_audio_modalities
def test_serving_a_function_passes_text_and_audio_and_streams_its_answer() -> None:
    received: list[tuple[str, Clip | None]] = []

    def answer(text: str, audio: Clip | None) -> tuple[str, Clip | None]:
        received.append((text, audio))
        return f"you said {text}", tone(0.5, 24000)

    question = tone(0.3, 16000)
    with serve_audio_modalities(answer) as srv:
        c = AudioModalitiesClient(srv.url, api_key=srv.token, ledger=Ledger(), timeout=timeout(30))
        reply = c.ask(question, text="hello")
        with pytest.raises(AuthError):
            AudioModalitiesClient(srv.url, api_key="not-the-server-token", ledger=Ledger()).ask(
                text="x"
            )
    assert reply.text == "you said hello"
    assert reply.audio is not None and reply.audio.rate == 16000
    assert reply.audio.duration == pytest.approx(0.5)
    ((text, audio),) = received
    assert text == "hello" and audio == question


def test_serving_a_dialog_answers_speech_and_text_through_it(server, engine) -> None:
    question = Clip.from_array(engine.synthesize("one plus one equals what", rate=16000), 16000)
    with (
        Dialog(server.endpoints, ledger=Ledger()) as dialog,
        serve_audio_modalities(dialog) as srv,
    ):
        c = AudioModalitiesClient(srv.url, api_key=srv.token, ledger=Ledger())
        by_text = c.ask(text="what is two times three")
        by_voice = c.ask(question)
    assert "six" in words(by_text.text) and "two" in words(by_voice.text)
    assert_says(engine, by_voice.audio, by_voice.text)


def test_serving_omni_speaks_text_requests_to_it_first_and_closes_it_on_stop(
    server, engine
) -> None:
    question = Clip.from_array(engine.synthesize("one plus one equals what", rate=16000), 16000)
    omni = OmniRealtime(server.endpoints, ledger=Ledger())
    with serve_audio_modalities(omni, engine=engine) as srv:
        c = AudioModalitiesClient(srv.url, api_key=srv.token, ledger=Ledger())
        by_voice = c.ask(question)
        by_text = c.ask(text="what is two times three")
        assert omni.connected  # by the first request
    assert "two" in words(by_voice.text) and "six" in words(by_text.text)
    assert not omni.connected  # closed with the server


def test_serving_a_real_qwen_audio_answers_through_the_local_server(server, engine) -> None:
    from nbtoolkit.backends.qwen_audio import QwenAudio

    qa = QwenAudio(server.endpoints, ledger=Ledger())
    with serve_audio_modalities(qa, engine=engine) as srv:
        c = AudioModalitiesClient(srv.url, api_key=srv.token, ledger=Ledger(), timeout=timeout(60))
        reply = c.ask(text="one plus one equals what")
    assert "two" in words(reply.text)
    assert_says(engine, reply.audio, reply.text)


def test_an_unknown_chunk_mid_stream_is_ignored(faulty_server) -> None:
    faulty_server.faults = Faults(unknown_event_after=2)
    reply = client(faulty_server).ask(text="one plus one equals what")
    assert "two" in words(reply.text) and reply.raw["complete"]
    assert reply.audio is not None and reply.audio.rate == 16000


def test_a_backend_failure_after_the_stream_began_arrives_as_server_error() -> None:
    def broken(text: str, audio: Clip | None) -> tuple[str, Clip | None]:
        raise RuntimeError("the model is asleep")

    with serve_audio_modalities(broken) as srv:
        c = AudioModalitiesClient(srv.url, api_key=srv.token, ledger=Ledger(), retry=FAST_RETRY)
        with pytest.raises(ServerError, match="the model is asleep") as info:
            c.ask(text="hi")
    assert info.value.code == "server_error"
    assert info.value.partial.text == "" and info.value.partial.audio is None
