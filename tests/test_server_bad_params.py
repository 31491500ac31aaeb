"""Parameters out of their documented range, on real sockets: the local server answers each with
the protocol's error (realtime ``error`` event, dialog ``task-failed`` / ``Error``, HTTP 400 in
DashScope's shape), and the session goes on: audio sent before the bad frame is still heard and
answered. Also: the server's own 404/405/422 errors have DashScope's shape."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import timeout
from test_bad_input import (
    DIALOG,
    GENERATION,
    REALTIME,
    dialog_event,
    envelope,
    events,
    open_ws,
    post,
)

#: session.update values a JSON frame can carry that no documented range admits (raw JSON text).
BAD_SESSION_VALUES = [
    ('{"turn_detection": {"prefix_padding_ms": Infinity}}', "prefix_padding_ms"),
    ('{"turn_detection": {"prefix_padding_ms": NaN}}', "prefix_padding_ms"),
    ('{"turn_detection": {"prefix_padding_ms": 1e300}}', "prefix_padding_ms"),
    ('{"turn_detection": {"silence_duration_ms": -Infinity}}', "silence_duration_ms"),
    ('{"turn_detection": {"silence_duration_ms": "800"}}', "silence_duration_ms"),
    ('{"turn_detection": {"threshold": true}}', "threshold"),
    ('{"turn_detection": {"threshold": NaN}}', "threshold"),
    ('{"temperature": 1e300}', "temperature"),
    ('{"top_p": 0}', "top_p"),
    ('{"output_audio_format": "mp3"}', "output_audio_format"),
    ('{"instructions": 42}', "instructions"),
    ('{"voice": ["Ethan"]}', "voice"),
]


@pytest.fixture(scope="module")
def question(engine: Any) -> bytes:
    """ "What is one plus one" as PCM16 at 16 kHz, with half a second of silence after it."""
    speech = np.asarray(engine.synthesize("what is one plus one", rate=16000), dtype=np.int16)
    return np.concatenate([speech, np.zeros(8000, np.int16)]).astype("<i2").tobytes()


def said(answer: list[dict[str, Any]]) -> tuple[str, str]:
    heard = [e["transcript"] for e in answer if e["type"].endswith("transcription.completed")]
    spoken = [e["transcript"] for e in answer if e["type"] == "response.audio_transcript.done"]
    return heard[0], spoken[0].lower()


def append(pcm: bytes) -> str:
    audio = base64.b64encode(pcm).decode()
    return json.dumps({"type": "input_audio_buffer.append", "audio": audio})


def test_realtime_out_of_range_session_values_get_error_events_and_earlier_audio_is_answered(
    server: Any, question: bytes
) -> None:
    with open_ws(server, REALTIME) as ws:
        events(ws, "session.created")
        ws.send(json.dumps({"type": "session.update", "session": {"turn_detection": None}}))
        events(ws, "session.updated")
        ws.send(append(question))
        for session, name in BAD_SESSION_VALUES:
            ws.send('{"type": "session.update", "event_id": "e_bad", "session": ' + session + "}")
            error = events(ws, "error")[-1]["error"]
            assert error["code"] == "invalid_value" and error["event_id"] == "e_bad"
            assert error["param"].endswith(name) and "must be" in error["message"], error
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        ws.send(json.dumps({"type": "response.create"}))
        heard, answer = said(events(ws, "response.done"))
    assert "one plus one" in heard and "two" in answer


def test_realtime_server_vad_survives_an_infinite_padding_mid_question(
    server: Any, question: bytes
) -> None:
    half = len(question) // 4 * 2
    with open_ws(server, REALTIME) as ws:
        events(ws, "session.created")  # server VAD is on by default
        ws.send(append(question[:half]))
        ws.send(
            '{"type": "session.update", "session": {"turn_detection": {"prefix_padding_ms": Infinity}}}'
        )
        assert events(ws, "error")[-1]["error"]["param"].endswith("prefix_padding_ms")
        ws.send(append(question[half:] + bytes(2 * 16000)))  # then 1 s of silence
        heard, answer = said(events(ws, "response.done"))
    assert "one plus one" in heard and "two" in answer


@pytest.mark.parametrize(
    ("parameters", "name"),
    [
        ({"upstream": {"mode": "push2talk"}, "downstream": {"volume": 500}}, "volume"),
        ({"upstream": {"mode": "push2talk"}, "downstream": {"speech_rate": 1e300}}, "speech_rate"),
        ({"upstream": {"mode": "push2talk"}, "downstream": {"sample_rate": 32000}}, "sample_rate"),
        ({"upstream": {"mode": "push2talk", "type": "Hologram"}}, "type"),
        ({"upstream": {"mode": "push2talk"}, "downstream": {"voice": 7}}, "voice"),
    ],
)
def test_dialog_start_out_of_range_fails_the_task_naming_the_parameter(
    server: Any, parameters: dict[str, Any], name: str
) -> None:
    with open_ws(server, DIALOG) as ws:
        ws.send(envelope("run-task", "Start", parameters=parameters))
        failed = dialog_event(ws, "task-failed")
    assert failed["error_code"] == "InvalidParameter"
    assert name in failed["error_message"] and "use " in failed["error_message"]


def test_dialog_bad_update_info_is_an_error_event_and_the_question_is_still_answered(
    server: Any, question: bytes
) -> None:
    bad_images = {"images": [{"type": "url", "value": 7}]}
    with open_ws(server, DIALOG) as ws:
        ws.send(envelope("run-task", "Start", parameters={"upstream": {"mode": "push2talk"}}))
        dialog_event(ws, "Started")
        ws.send(envelope("continue-task", "SendSpeech"))
        for i in range(0, len(question), 3200):
            ws.send(question[i : i + 3200])
        ws.send(envelope("continue-task", "UpdateInfo", parameters=bad_images))
        assert "parameters.images[0]" in dialog_event(ws, "Error")["error_message"]
        ws.send(envelope("continue-task", "UpdateInfo", parameters="loud"))
        assert "parameters" in dialog_event(ws, "Error")["error_message"]
        ws.send(envelope("continue-task", "StopSpeech"))
        heard = ""
        while True:  # bounded: dialog_event reads at most 200 frames
            content = dialog_event(ws, "SpeechContent")
            if content.get("finished"):
                heard = content["text"]
                break
        while not (answer := dialog_event(ws, "RespondingContent")).get("finished"):
            pass
    assert "one plus one" in heard and "two" in answer["text"].lower()


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ('{"temperature": NaN}', "temperature"),
        ('{"top_p": Infinity}', "top_p"),
        ('{"seed": -1}', "seed"),
        ('{"max_tokens": 1e300}', "max_tokens"),
        ('{"incremental_output": "no"}', "incremental_output"),
        ('{"presence_penalty": true}', "presence_penalty"),
    ],
)
def test_generation_parameters_out_of_range_are_a_400_in_dashscope_shape(
    server: Any, raw: str, name: str
) -> None:
    body = (
        '{"model": "qwen-audio-turbo-latest", "input": {"messages": [{"role": "user", '
        '"content": [{"text": "what is one plus one"}]}]}, "parameters": ' + raw + "}"
    )
    reply = post(server, GENERATION, body.encode())
    assert reply.status_code == 400
    error = reply.json()
    assert set(error) == {"code", "message", "request_id"} and error["code"] == "InvalidParameter"
    assert f"parameters.{name}" in error["message"] and "use " in error["message"]
    # the same request in range is answered
    good = post(server, GENERATION, body.replace(raw, "{}").encode())
    assert good.status_code == 200 and "two" in json.dumps(good.json()).lower()


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/no/such/route", 404),
        ("GET", GENERATION, 405),
        ("DELETE", "/api/v1/uploads", 405),
    ],
)
def test_servers_own_errors_come_back_in_dashscope_shape(
    server: Any, method: str, path: str, status: int
) -> None:
    headers = {"Authorization": f"Bearer {server.token.reveal()}"}
    reply = httpx.request(method, server.base_url + path, headers=headers, timeout=timeout(30))
    assert reply.status_code == status
    error = reply.json()
    assert set(error) == {"code", "message", "request_id"}, error
    assert path.split("?")[0] in error["message"] and len(error["request_id"]) == 32
