"""``POST /audio/chat/completions`` on the local server: real SSE over 127.0.0.1, answered by the
offline engine, checked frame by frame and by the words its audio says."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from conftest import timeout

from nbtoolkit.audio.clip import Clip
from nbtoolkit.protocols.audio_modalities import user_message
from nbtoolkit.protocols.sse import SSEDecoder


def post(server: Any, body: Any, token: str | None = "server") -> tuple[httpx.Response, list[str]]:
    """POST like the seed's curl command; returns the response (body read) and each event's data."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {server.token.reveal() if token == 'server' else token}"
    decoder, datas = SSEDecoder(), []
    with httpx.stream(
        "POST",
        server.endpoints.audio_modalities_url,
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
