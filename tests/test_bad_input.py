"""Bad input gets a clear error that names the fix, and nothing already received is lost.

The full table (with the cases other test files already cover) is docs/bad-input.md. Protocol cases
go to the local server over real sockets on 127.0.0.1; after each refusal the same connection must
still work and still hold what it had (the audio appended before a bad frame is still answered).
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import timeout
from websockets.sync.client import ClientConnection, connect

from nbtoolkit.errors import AudioError
from nbtoolkit.widgets import Player, Recorder

GENERATION = "/api/v1/services/aigc/multimodal-generation/generation"
AUDIO_CHAT = "/audio/chat/completions"
REALTIME = "/api-ws/v1/realtime?model=qwen-omni-turbo-realtime"
DIALOG = "/api-ws/v1/inference"


@pytest.fixture(scope="module")
def question_pcm(engine: Any) -> bytes:
    """ "What is one plus one" as PCM16 at 16 kHz, with silence after it."""
    speech = np.asarray(engine.synthesize("what is one plus one", rate=16000), dtype=np.int16)
    return np.concatenate([speech, np.zeros(8000, np.int16)]).astype("<i2").tobytes()


def post(server: Any, path: str, content: bytes) -> httpx.Response:
    headers = {
        "Authorization": f"Bearer {server.token.reveal()}",
        "Content-Type": "application/json",
    }
    return httpx.post(server.base_url + path, content=content, headers=headers, timeout=timeout(30))


def open_ws(server: Any, route: str) -> ClientConnection:
    url = f"ws://127.0.0.1:{server.port}{route}"
    headers = {"Authorization": f"Bearer {server.token.reveal()}"}
    return connect(url, additional_headers=headers, proxy=None, open_timeout=timeout(10))


def events(ws: ClientConnection, until: str, limit: int = 400) -> list[dict[str, Any]]:
    """Realtime events up to and including the first of type ``until`` (bounded)."""
    out: list[dict[str, Any]] = []
    for _ in range(limit):
        message = ws.recv(timeout=timeout(60))
        if isinstance(message, bytes):
            continue
        out.append(json.loads(message))
        if out[-1]["type"] == until:
            return out
    raise AssertionError(f"no {until} in {limit} frames: {[e['type'] for e in out][-10:]}")


# --------------------------------------------------------------------------- HTTP bodies
HTTP_CASES = [
    # (route, body, words the message must contain: problem and fix)
    (GENERATION, b"{not json", ["not JSON", "send {model, input, parameters}"]),
    (GENERATION, b"\xff\xfe\x00garbage", ["not JSON"]),
    (
        GENERATION,
        b'{"model": "qwen-audio-turbo-latest", "input": {}}',
        ["input.messages", "user message"],
    ),
    (
        GENERATION,
        b'{"input": {"messages": [{"role": "user", "content": "hi"}]}}',
        ["no model", '"model"'],
    ),
    (
        GENERATION,
        b'{"model": "m", "input": {"messages": [{"role": "robot", "content": []}]}}',
        ["role", '"user"'],
    ),
    (
        GENERATION,
        b'{"model": "m", "input": {"messages": [{"role": "user", "content": [{"audio": 5}]}]}}',
        ["not a URI string", "oss://"],
    ),
    (
        GENERATION,
        b'{"model": "m", "input": {"messages": [{"role": "user", "content": [{"audio": '
        b'"data:audio/wav;base64,@@@"}]}]}}',
        ["does not decode", "base64"],
    ),
    (AUDIO_CHAT, b"[1, 2", ["not JSON", "application/json"]),
    (AUDIO_CHAT, b'{"stream": true}', ["messages", "at least one user message"]),
    (
        AUDIO_CHAT,
        b'{"messages": [{"role": "user", "content": [{"type": "input_audio", '
        b'"input_audio": {"data": "AAAA", "format": "ogg"}}]}]}',
        ["ogg", "wav"],
    ),
    (
        AUDIO_CHAT,
        b'{"messages": [{"role": "user", "content": [{"type": "input_audio", '
        b'"input_audio": {"data": "' + base64.b64encode(b"not audio at all" * 20) + b'", '
        b'"format": "wav"}}]}]}',
        ["not audio", "WAV"],
    ),
    (
        AUDIO_CHAT,
        b'{"messages": [{"role": "user", "content": [{"type": "image_url", '
        b'"image_url": {"url": "http://example.com/a.jpg"}}]}]}',
        ["data: URLs", "data:image/jpeg;base64"],
    ),
]


@pytest.mark.parametrize(("path", "body", "words"), HTTP_CASES)
def test_unusable_http_body_is_a_400_naming_problem_and_fix(
    server: Any, path: str, body: bytes, words: list[str]
) -> None:
    response = post(server, path, body)
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["code"] == "InvalidParameter" and answer["request_id"]
    for word in words:
        assert word in answer["message"]


@pytest.mark.parametrize("path", [GENERATION, AUDIO_CHAT])
def test_json_nested_past_the_recursion_limit_is_a_400_not_a_500(server: Any, path: str) -> None:
    response = post(server, path, b"[" * 100_000 + b"]" * 100_000)
    assert response.status_code == 400, response.text
    assert "JSON" in response.json()["message"]


# --------------------------------------------------------------------------- realtime frames
def test_bad_realtime_frames_get_error_events_and_the_audio_before_them_is_still_answered(
    server: Any, question_pcm: bytes
) -> None:
    png = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (8, 8), "red").save(png, format="PNG")
    bad_frames: list[tuple[str | bytes, str, str]] = [
        ("{this is not json", "invalid_json", "JSON"),
        (b"\x00\x01binary where JSON belongs", "invalid_json", "JSON"),
        (json.dumps({"type": "input_audio_buffer.append"}), "missing_field", "audio"),
        (
            json.dumps({"type": "input_audio_buffer.append", "audio": "@@@"}),
            "invalid_value",
            "base64",
        ),
        (
            json.dumps({"type": "input_audio_buffer.append", "audio": "AA=="}),
            "invalid_value",
            "even",
        ),
        (
            json.dumps(
                {
                    "type": "input_image_buffer.append",
                    "image": base64.b64encode(png.getvalue()).decode(),
                }
            ),
            "invalid_value",
            "JPEG",
        ),
        (
            json.dumps(
                {
                    "type": "input_image_buffer.append",
                    "image": base64.b64encode(b"\xff\xd8\xff" + bytes(600 * 1024)).decode(),
                }
            ),
            "invalid_value",
            "500 KB",
        ),
        (
            json.dumps({"type": "session.update", "session": {"modalities": [1, "a"]}}),
            "invalid_value",
            "modalities",
        ),
        (
            json.dumps({"type": "response.cancel"}),
            "response_cancel_not_active",
            "no active response",
        ),
        (json.dumps({"type": "no.such.event"}), "invalid_event_type", "no.such.event"),
        ("[" * 100_000, "invalid_json", "JSON"),
    ]
    with open_ws(server, REALTIME) as ws:
        assert events(ws, "session.created")
        ws.send(json.dumps({"type": "session.update", "session": {"turn_detection": None}}))
        events(ws, "session.updated")
        ws.send(
            json.dumps(
                {
                    "type": "input_audio_buffer.append",
                    "audio": base64.b64encode(question_pcm).decode(),
                }
            )
        )
        for frame, code, words in bad_frames:
            ws.send(frame)
            error = events(ws, "error")[-1]["error"]
            assert (error["code"], words in error["message"]) == (code, True), error
        # the question appended before all that is still in the buffer, and answered
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        ws.send(json.dumps({"type": "response.create"}))
        answer = events(ws, "response.done")
    heard = [e["transcript"] for e in answer if e["type"].endswith("transcription.completed")]
    said = [e["transcript"] for e in answer if e["type"] == "response.audio_transcript.done"]
    assert "one plus one" in heard[0] and "two" in said[0].lower()


# --------------------------------------------------------------------------- dialog frames
def envelope(action: str, directive: str, **payload: Any) -> str:
    body = {"input": {"directive": directive, **payload.pop("input", {})}, **payload}
    return json.dumps({"header": {"action": action, "task_id": "t" * 32}, "payload": body})


def dialog_event(ws: ClientConnection, name: str, limit: int = 200) -> dict[str, Any]:
    """The output of the first dialog frame whose event is ``name`` (bounded)."""
    for _ in range(limit):
        message = ws.recv(timeout=timeout(30))
        if isinstance(message, bytes):
            continue
        doc = json.loads(message)
        output = doc["payload"].get("output") or {}
        if name in (output.get("event"), doc["header"]["event"]):
            return {**doc["header"], **output}
    raise AssertionError(f"no {name} in {limit} frames")


def test_bad_dialog_frame_before_start_fails_the_task_naming_the_fix(server: Any) -> None:
    with open_ws(server, DIALOG) as ws:
        ws.send("definitely not json")
        failed = dialog_event(ws, "task-failed")
    assert failed["error_code"] == "InvalidParameter" and "JSON" in failed["error_message"]


def test_bad_dialog_frames_after_start_are_error_events_and_the_session_goes_on(
    server: Any,
) -> None:
    bad = [
        ("{oops", "not JSON"),
        (json.dumps({"header": {}, "payload": {}}), "header.action"),
        (envelope("continue-task", "DanceNow"), "Unknown directive"),
        (envelope("continue-task", "RequestToRespond", input={"type": "prompt"}), "needs text"),
        (
            envelope(
                "continue-task",
                "RequestToRespond",
                input={"type": "prompt", "text": "hi"},
                parameters={"images": 7},
            ),
            "images",
        ),
        (
            envelope(
                "continue-task",
                "RequestToRespond",
                input={"type": "prompt", "text": "what is this"},
                parameters={
                    "images": [
                        {"type": "base64", "value": base64.b64encode(bytes(200 * 1024)).decode()}
                    ]
                },
            ),
            "KB",
        ),
    ]
    with open_ws(server, DIALOG) as ws:
        ws.send(envelope("run-task", "Start", parameters={"upstream": {"mode": "push2talk"}}))
        dialog_event(ws, "Started")
        ws.send(b"\x01")  # half a sample of audio outside SendSpeech: ignored, as the cloud does
        for frame, words in bad:
            ws.send(frame)
            error = dialog_event(ws, "Error")
            assert words in error["error_message"], error
        ws.send(envelope("continue-task", "HeartBeat"))
        assert dialog_event(ws, "HeartBeat")


def test_dialog_start_with_a_bad_rate_fails_naming_the_rate(server: Any) -> None:
    with open_ws(server, DIALOG) as ws:
        ws.send(envelope("run-task", "Start", parameters={"upstream": {"sample_rate": "fast"}}))
        failed = dialog_event(ws, "task-failed")
    assert "sample_rate" in failed["error_message"] and "16000" in failed["error_message"]


# --------------------------------------------------------------------------- widgets keep what they had
class _Comm:
    """Stands in for the browser view (what tests/test_widgets_python.py's FakeComm does)."""

    kernel = object()
    comm_id = "bad-input"

    def __init__(self) -> None:
        self.handler: Any = None

    def on_msg(self, callback: Any) -> None:
        self.handler = callback

    def send(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self, *args: Any, **kwargs: Any) -> None:
        pass

    def view(self, content: dict[str, Any], buffers: list[bytes] | None = None) -> None:
        msg = {
            "content": {"data": {"method": "custom", "content": content}},
            "buffers": buffers or [],
        }
        self.handler(msg)


@pytest.fixture
def recorder(tmp_path: Any) -> Iterator[tuple[Recorder, _Comm]]:
    rec = Recorder(save_dir=tmp_path)
    rec.comm = comm = _Comm()  # type: ignore[assignment]
    try:
        yield rec, comm
    finally:
        rec.close()


def test_recorder_take_survives_bad_chunks_from_the_browser(
    recorder: tuple[Recorder, _Comm],
) -> None:
    rec, comm = recorder
    good = [np.full(1600, v, np.int16).tobytes() for v in (100, 200, 300)]
    comm.view({"type": "start"})
    comm.view({"type": "chunk", "seq": 0, "t": "yesterday"}, [good[0]])  # a bad clock is ignored
    comm.view({"type": "chunk", "seq": 1}, [])  # no buffer
    comm.view({"type": "chunk", "seq": 1}, [b""])  # empty buffer
    comm.view({"type": "chunk", "seq": 1}, [good[1] + b"\x07"])  # half a sample too many
    comm.view({"type": "chunk", "seq": "one"}, [b"\x01\x02"])  # unreadable sequence number
    comm.view({"type": "warp-drive"})  # unknown message
    comm.view({"type": "chunk", "seq": 2}, [good[2]])
    comm.view({"type": "stop"})
    assert rec.clip is not None
    assert rec.clip.to_pcm() == b"".join(good)
    assert Recorder.recover(rec.path).to_pcm() == b"".join(good)


def test_player_refuses_half_a_sample_and_keeps_what_it_was_fed() -> None:
    player = Player()
    try:
        player.feed(np.full(2400, 5, np.int16).tobytes())
        for bad, words in ((b"\x01\x02\x03", "even number"), (b"\x01\x02", "between 1000")):
            with pytest.raises(AudioError, match=words) as info:
                player.feed(bad, rate=7 if len(bad) == 2 else None)
            assert info.value.fix
        played = player.played_clip
        assert played is not None and played.to_pcm() == np.full(2400, 5, np.int16).tobytes()
    finally:
        player.close()
