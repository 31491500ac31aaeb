"""``POST /audio/chat/completions`` on the local server: real SSE over 127.0.0.1, answered by the
offline engine, checked frame by frame and by the words its audio says."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import timeout

from nbtoolkit import serve_audio_modalities
from nbtoolkit.audio.clip import Clip
from nbtoolkit.backends.audio_modalities import AudioModalitiesClient
from nbtoolkit.errors import ConfigError, ProtocolError
from nbtoolkit.ledger import Ledger
from nbtoolkit.protocols.audio_modalities import user_message
from nbtoolkit.protocols.sse import SSEDecoder


def post(server: Any, body: Any, token: str | None = "server") -> tuple[httpx.Response, list[str]]:
    """POST like the seed's curl command; returns the response (body read) and each event's data."""
    token = server.token.reveal() if token == "server" else token
    return post_to(server.endpoints.audio_modalities_url, body, token)


def post_to(url: str, body: Any, token: str | None) -> tuple[httpx.Response, list[str]]:
    """POST ``body`` to ``url`` (with ``Bearer token``); the response (body read) and each event's data."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    decoder, datas = SSEDecoder(), []
    with httpx.stream(
        "POST",
        url,
        content=json.dumps(body),
        headers=headers,
        timeout=timeout(60),
    ) as response:
        response.read()
    datas.extend(e.data for e in decoder.feed(response.content))
    return response, datas


def frames_of(datas: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    assert datas[-1] == "[DONE]"
    chunks = [json.loads(d) for d in datas[:-1]]
    return chunks[0], chunks[1:]


def audio_of(frames: list[dict[str, Any]]) -> bytes:
    return b"".join(base64.b64decode(f["choices"][0]["delta"]["audio"]["data"]) for f in frames)


#: Words the open-vocabulary ASR writes for what eSpeak said ("two" comes back as "to").
HOMOPHONES = {"to": "two", "too": "two"}


def words(text: str) -> list[str]:
    return "".join(c if c.isalnum() else " " for c in text.lower()).split()


def assert_says(engine: Any, clip: Clip | None, transcript: str) -> list[str]:
    """The audio, recognised by the engine's ASR, is words of ``transcript`` (most of them)."""
    assert clip is not None
    heard = words(engine.transcribe(clip.resample(16000).samples, rate=16000))
    heard = [HOMOPHONES.get(w, w) for w in heard]
    said = words(transcript)
    assert heard and set(heard) <= set(said), (heard, said)
    assert len(heard) >= min(3, len(said)), (heard, said)
    return heard


def test_seed_curl_request_gets_transcript_frame_then_40ms_audio_frames_then_done(server) -> None:
    body = {
        "messages": [{"role": "user", "content": "请生成一段音频回复"}],
        "stream": True,
        "modalities": ["text", "audio"],
    }
    response, datas = post(server, body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    first, frames = frames_of(datas)
    audio = first["choices"][0]["delta"]["audio"]
    assert set(audio) == {"id", "transcript"} and audio["transcript"]
    assert first["choices"][0]["finish_reason"] is None and first["choices"][0]["index"] == 0
    assert frames, "the answer must be spoken"
    for frame in frames:
        assert frame["id"] == first["id"]
        assert frame["choices"][0]["delta"]["audio"]["id"] == audio["id"]
        assert frame["choices"][0]["finish_reason"] is None
    sizes = [len(base64.b64decode(f["choices"][0]["delta"]["audio"]["data"])) for f in frames]
    assert all(size == 1280 for size in sizes[:-1]) and 0 < sizes[-1] <= 1280


def test_spoken_arithmetic_answer_says_two_in_transcript_and_audio(server, engine) -> None:
    body = {"messages": [{"role": "user", "content": "one plus one equals what"}], "stream": True}
    response, datas = post(server, body)
    assert response.status_code == 200
    first, frames = frames_of(datas)
    transcript = first["choices"][0]["delta"]["audio"]["transcript"]
    assert "two" in words(transcript)
    assert_says(engine, Clip.from_pcm(audio_of(frames), 16000), transcript)


def test_question_asked_as_input_audio_is_heard_and_answered(server, engine) -> None:
    speech = Clip.from_array(engine.synthesize("what is two plus three", rate=16000), 16000)
    body = {"messages": [user_message(audio=speech)], "stream": True}
    response, datas = post(server, body)
    assert response.status_code == 200
    first, frames = frames_of(datas)
    assert "five" in words(first["choices"][0]["delta"]["audio"]["transcript"])
    assert frames


def test_missing_or_wrong_token_is_refused_with_401(server) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    for token in (None, "any-api-key"):
        response, _ = post(server, body, token=token)
        assert response.status_code == 401


def test_non_streaming_request_is_refused_with_400(server) -> None:
    response, _ = post(server, {"messages": [{"role": "user", "content": "hi"}], "stream": False})
    assert response.status_code == 400
    assert "stream" in response.json()["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"messages": []},
        {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
        {"messages": [{"role": "system", "content": "no user"}]},
    ],
)
def test_unusable_request_is_refused_with_400_before_streaming(server, body) -> None:
    response, _ = post(server, body)
    assert response.status_code == 400


# --------------------------------------------------------------------------- audio parameters
def _half_second_answer(text: str, audio: Clip | None) -> tuple[str, Clip | None]:
    """A served function: answers every request with half a second of 16 kHz tone."""
    t = np.arange(8000) / 16000
    return "a tone", Clip.from_array(0.3 * np.sin(2 * np.pi * 440 * t), 16000)


def test_a_server_at_24khz_in_20ms_chunks_streams_960_byte_chunks_the_client_reads() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    with serve_audio_modalities(_half_second_answer, sample_rate=24000, chunk_ms=20) as srv:
        response, datas = post_to(srv.url, body, srv.token.reveal())
        client = AudioModalitiesClient(
            srv.url, api_key=srv.token, sample_rate=24000, chunk_ms=20, ledger=Ledger()
        )
        reply = client.ask(text="hi")
    assert response.status_code == 200
    _, frames = frames_of(datas)
    sizes = [len(base64.b64decode(f["choices"][0]["delta"]["audio"]["data"])) for f in frames]
    assert set(sizes) == {960}  # 24000 × 2 × 0.020; half a second is 25 whole chunks
    assert sum(sizes) == 24000  # 0.5 s × 24000 Hz × 2 bytes
    assert reply.text == "a tone"
    assert reply.audio is not None and reply.audio.rate == 24000
    assert reply.audio.duration == pytest.approx(0.5)


def test_the_local_server_streams_the_agora_defaults_16khz_in_1280_byte_chunks(server) -> None:
    _, datas = post(server, {"messages": [{"role": "user", "content": "what is two plus two"}]})
    _, frames = frames_of(datas)
    sizes = [len(base64.b64decode(f["choices"][0]["delta"]["audio"]["data"])) for f in frames]
    assert set(sizes[:-1]) == {1280} and 0 < sizes[-1] <= 1280


def test_a_client_told_other_parameters_than_the_server_says_so_and_keeps_what_arrived() -> None:
    with serve_audio_modalities(_half_second_answer, sample_rate=24000, chunk_ms=40) as srv:
        client = AudioModalitiesClient(srv.url, api_key=srv.token, chunk_ms=40, ledger=Ledger())
        with pytest.raises(ProtocolError, match=r"1920 bytes.*1280 bytes") as info:
            client.ask(text="hi")
    partial = info.value.partial
    assert partial is not None and partial.text == "a tone"


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"sample_rate": 0}, "sample_rate=0"),
        ({"sample_rate": 96000}, "sample_rate=96000"),
        ({"chunk_ms": 0}, "chunk_ms=0"),
        ({"chunk_ms": 2.5}, "chunk_ms=2.5"),
        ({"sample_rate": 11025, "chunk_ms": 10}, "110.25 samples"),
    ],
)
def test_nonsense_audio_parameters_are_refused_by_server_and_client_before_any_request(
    options: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        serve_audio_modalities(_half_second_answer, **options)
    with pytest.raises(ConfigError, match=re.escape(named)):
        AudioModalitiesClient("http://127.0.0.1:9/x", api_key="k", ledger=Ledger(), **options)
