"""QwenAudio (our client on the dashscope SDK) against the local server: answers, streaming, chat
history, limits, error mapping, retries and faults — real sockets, real offline engine."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nbtoolkit.audio.clip import Clip
from nbtoolkit.backends.qwen_audio import QwenAudio
from nbtoolkit.config import Secret, local_endpoints
from nbtoolkit.errors import AudioError, AuthError, ConnectionLost, ProtocolError, ServerError
from nbtoolkit.ledger import Ledger
from nbtoolkit.local import Faults
from nbtoolkit.retry import RetryPolicy
from tests.conftest import text_deltas

FAST_RETRY = RetryPolicy(max_retries=2, initial=0.01, maximum=0.05)
S001_URL = "https://dashscope.oss-cn-beijing.aliyuncs.com/audios/welcome.mp3"


@pytest.fixture(scope="module")
def question(engine: Any) -> Clip:
    return Clip.from_array(engine.synthesize("one plus one equals what", rate=16000), 16000)


@pytest.fixture
def ledger() -> Ledger:
    return Ledger()


@pytest.fixture
def qa(server: Any, ledger: Ledger) -> QwenAudio:
    return QwenAudio(server.endpoints, ledger=ledger, retry=FAST_RETRY, timeout=30)


def test_ask_with_a_clip_and_text_answers_about_the_audio(
    qa: QwenAudio, question: Clip, ledger: Ledger
) -> None:
    reply = qa.ask(audio=question, text="What is said in the audio?")
    assert "one plus one equals what" in reply.text.lower()
    assert reply.local is True and reply.model == qa.model
    assert reply.usage.model == qa.model
    assert reply.usage.input_audio > 0 and reply.usage.output_text > 0
    assert reply.request_id and reply.latency is not None
    assert qa.last_reply is reply
    [entry] = ledger.entries
    assert entry.backend == "qwen_audio" and entry.request_id == reply.request_id


def test_voice_chat_is_audio_without_text(qa: QwenAudio, question: Clip) -> None:
    assert "two" in qa.ask(audio=question).text.lower()


def test_paths_file_urls_and_bytes_are_accepted_like_clips(
    qa: QwenAudio, question: Clip, tmp_path: Path
) -> None:
    path = question.save(tmp_path / "q.wav")
    for audio in (path, str(path), f"file://{path}", question.to_wav()):
        assert "two" in qa.ask(audio=audio).text.lower(), (
            audio if not isinstance(audio, bytes) else "bytes"
        )


def test_stream_yields_deltas_that_join_to_the_answer(qa: QwenAudio, question: Clip) -> None:
    deltas = list(text_deltas(qa.stream(audio=question)))
    assert len(deltas) > 2
    text = "".join(deltas)
    assert "two" in text.lower()
    assert qa.last_reply is not None and qa.last_reply.text == text
    assert qa.last_reply.first_token_latency is not None


def test_chat_keeps_history_and_sends_it_back(qa: QwenAudio, question: Clip) -> None:
    chat = qa.chat(system="Answer briefly.")
    first = chat.ask(audio=question)
    second = chat.ask(text="what is two times three")
    assert "two" in first.text.lower()
    assert "six" in second.text.lower()
    assert [m["role"] for m in chat.messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    assert chat.messages[2]["content"] == [{"text": first.text}]
    assert chat.messages[1]["content"][0]["audio"].startswith("oss://")  # uploaded once, reused
    assert len(chat) == 2


def test_url_is_passed_verbatim_and_the_refusal_says_what_to_do(qa: QwenAudio) -> None:
    with pytest.raises(ProtocolError) as info:
        qa.ask(audio=S001_URL, text="这段音频在说什么?")
    assert info.value.status == 400
    assert "file://" in str(info.value)


def test_wrong_key_raises_auth_error_that_never_shows_the_key(server: Any, question: Clip) -> None:
    wrong = Secret("sk-wrong-but-secret-123")
    qa = QwenAudio(local_endpoints(server.base_url, wrong), retry=FAST_RETRY, ledger=Ledger())
    for audio in (question, None):  # the upload is refused first; a text-only call at generation
        with pytest.raises(AuthError) as info:
            qa.ask(audio=audio, text="hello")
        assert info.value.status == 401
        assert "sk-wrong-but-secret-123" not in str(info.value)
        assert "connect()" in str(info.value)


def test_audio_over_30_seconds_is_trimmed_with_a_warning(qa: QwenAudio, question: Clip) -> None:
    from nbtoolkit.protocols.tokens import audio_tokens

    long = question + Clip.silence(35.0 - question.duration, question.rate)
    with pytest.warns(UserWarning, match="first 30 s"):
        reply = qa.ask(audio=long)
    assert "two" in reply.text.lower()
    assert reply.usage.input_audio == audio_tokens(30.0)


def test_audio_over_30_seconds_is_refused_when_asked(
    server: Any, question: Clip, ledger: Ledger
) -> None:
    qa = QwenAudio(server.endpoints, ledger=ledger, on_too_long="refuse")
    long = question + Clip.silence(31.0, question.rate)
    with pytest.raises(AudioError, match=r"clip\[:30\]"):
        qa.ask(audio=long)
    assert len(ledger.entries) == 0  # nothing was sent


def test_audio_file_over_10_mb_is_refused_before_sending(server: Any, ledger: Ledger) -> None:
    big = Clip(np.zeros(5_400_000, dtype=np.int16), 16000).to_wav()
    qa = QwenAudio(server.endpoints, ledger=ledger, on_too_long="refuse")
    with pytest.raises(AudioError, match="10 MB"):
        qa.ask(audio=big)


def test_nothing_to_ask_is_an_error_that_names_the_fix(qa: QwenAudio) -> None:
    with pytest.raises(AudioError, match="audio=clip"):
        qa.ask()


# ------------------------------------------------------------------------------------ faults
def test_rate_limit_is_retried_after_retry_after_and_then_answers(
    faulty_server: Any, qa: QwenAudio, caplog: pytest.LogCaptureFixture
) -> None:
    faulty_server.faults = Faults(status=429, retry_after=0.2)
    with caplog.at_level(logging.INFO, logger="nbtoolkit.retry"):
        reply = qa.ask(text="one plus one equals what")
    assert "two" in reply.text.lower()
    assert faulty_server.faults.fail_times == 0  # the server did refuse once
    [retry] = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert "429" in retry and "in 0.20 s" in retry  # the server's Retry-After, not the backoff


def test_server_error_twice_raises_server_error_after_the_retries(
    faulty_server: Any, server: Any, ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    faulty_server.faults = Faults(status=500, fail_times=2)
    qa = QwenAudio(server.endpoints, ledger=ledger, retry=RetryPolicy(max_retries=1, initial=0.01))
    with (
        caplog.at_level(logging.INFO, logger="nbtoolkit.retry"),
        pytest.raises(ServerError) as info,
    ):
        qa.ask(text="one plus one equals what")
    assert info.value.status == 500
    assert faulty_server.faults.fail_times == 0  # both attempts reached the server
    assert sum("retry" in r.getMessage() for r in caplog.records) == 1
    assert ledger.entries == []


def test_dropped_stream_raises_connection_lost_keeping_the_partial_text(
    faulty_server: Any, qa: QwenAudio, question: Clip
) -> None:
    faulty_server.faults = Faults(drop_after=3)
    received: list[str] = []
    with pytest.raises(ConnectionLost) as info:
        for delta in text_deltas(qa.stream(audio=question)):
            received.append(delta)
    assert len(received) == 3
    assert info.value.partial == "".join(received)
    assert faulty_server.faults.drop_after == 3  # a dropped stream is never retried


def test_malformed_chunk_raises_protocol_error_with_partial_text(
    faulty_server: Any, qa: QwenAudio
) -> None:
    faulty_server.faults = Faults(malformed_after=2)
    received: list[str] = []
    with pytest.raises(ProtocolError, match="not JSON") as info:
        for delta in text_deltas(qa.stream(text="one plus one equals what")):
            received.append(delta)
    assert info.value.partial == "".join(received) and len(received) == 2


def test_slow_server_within_the_timeout_still_answers(
    faulty_server: Any, server: Any, question: Clip
) -> None:
    faulty_server.faults = Faults(delay=0.05)
    qa = QwenAudio(server.endpoints, ledger=Ledger(), timeout=10)
    assert "two" in "".join(text_deltas(qa.stream(audio=question))).lower()


def test_server_that_never_answers_gives_a_bounded_timeout_error(
    faulty_server: Any, server: Any
) -> None:
    faulty_server.faults = Faults(never_answer=True)
    qa = QwenAudio(server.endpoints, ledger=Ledger(), timeout=0.5, retry=FAST_RETRY)
    with pytest.raises(ConnectionLost, match=r"within 0\.5 s") as info:
        qa.ask(text="one plus one equals what")
    assert info.value.code == "Timeout"
    with pytest.raises(ConnectionLost, match=r"within 0\.5 s"):
        list(qa.stream(text="one plus one equals what"))


def test_generation_parameters_pass_through_as_options(qa: QwenAudio, question: Clip) -> None:
    reply = qa.ask(question, temperature=0.5, top_p=0.9, seed=7, max_tokens=200)
    assert "two" in reply.text.lower()
    events = list(qa.stream(question, seed=7))
    assert events[-1].type == "done" and events[-1].reply.text == reply.text
