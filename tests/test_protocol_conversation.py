"""The MultiModalConversation wire format without sockets: request parsing, response and SSE framing
(checked with the dashscope SDK's own stream parser), and the client-side error mapping."""

from __future__ import annotations

import base64
import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nbtoolkit.errors import ProtocolError
from nbtoolkit.protocols.conversation import (
    StreamEncoder,
    decode_data_uri,
    finish_reason,
    output_text,
    parse_request,
    response_body,
    split_for_stream,
    stream_error,
    usage_dict,
)
from nbtoolkit.results import Usage

S001_LOCAL_FILE_BODY = {
    "model": "qwen-audio-turbo-latest",
    "parameters": {"result_format": "message"},
    "input": {
        "messages": [
            {"role": "system", "content": [{"text": "You are a helpful assistant."}]},
            {
                "role": "user",
                "content": [
                    {"audio": "oss://dashscope-instant/abc/2025-01-01/xyz/welcome.mp3"},
                    {"text": "What is said in the audio?"},
                ],
            },
        ]
    },
}


class _Lines:
    """What the SDK's stream parser reads from a ``requests.Response``: ``iter_lines()``."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def iter_lines(self):  # type: ignore[no-untyped-def]
        return iter(self.raw.splitlines())


def sdk_events(raw: bytes) -> list[tuple[bool, int, dict]]:
    """Parse SSE bytes exactly as dashscope 2.0.2 does: (is_error, status, data)."""
    from dashscope.common.utils import _handle_stream

    return [
        (err, int(status), json.loads(ev.data)) for err, status, ev in _handle_stream(_Lines(raw))
    ]


# ------------------------------------------------------------------------------------ requests
def test_s001_local_file_body_parses_into_current_message_with_oss_audio() -> None:
    req = parse_request(S001_LOCAL_FILE_BODY)
    assert req.model == "qwen-audio-turbo-latest"
    assert req.result_format == "message"
    assert req.incremental_output is False
    assert req.current.text == "What is said in the audio?"
    [audio] = req.current.refs("audio")
    assert audio.scheme == "oss"
    assert req.history == []  # the system prompt is not a turn
    assert "helpful assistant" in req.all_text


def test_multi_turn_history_keeps_user_and_assistant_turns_before_the_current_one() -> None:
    body = {
        "model": "m",
        "input": {
            "messages": [
                {"role": "user", "content": [{"audio": "oss://k/a.wav"}, {"text": "first"}]},
                {"role": "assistant", "content": [{"text": "answer one"}]},
                {"role": "user", "content": [{"text": "second"}]},
            ]
        },
        "parameters": {"incremental_output": True, "seed": 7, "unknown_knob": "ignored"},
    }
    req = parse_request(body)
    assert req.history == [("user", "first"), ("assistant", "answer one")]
    assert req.current.text == "second"
    assert req.current.refs("audio") == []
    assert req.incremental_output is True
    assert req.parameters["unknown_knob"] == "ignored"


def test_video_frames_and_images_become_media_refs_in_order() -> None:
    body = {
        "model": "m",
        "input": {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"image": "data:image/png;base64,AAAA"},
                        {"video": ["https://x/1.jpg", "https://x/2.jpg"]},
                    ],
                }
            ]
        },
    }
    media = parse_request(body).current.media
    assert [(m.kind, m.scheme) for m in media] == [
        ("image", "data"),
        ("video", "http"),
        ("video", "http"),
    ]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ([], "JSON object"),
        ({"input": {"messages": [{"role": "user", "content": [{"text": "x"}]}]}}, "model"),
        ({"model": "m", "input": {"messages": []}}, "messages"),
        ({"model": "m", "input": {"messages": [{"role": "robot", "content": []}]}}, "role"),
        (
            {"model": "m", "input": {"messages": [{"role": "system", "content": [{"text": "s"}]}]}},
            "no user message",
        ),
        (
            {
                "model": "m",
                "input": {"messages": [{"role": "user", "content": [{"text": "x"}]}]},
                "parameters": {"result_format": "xml"},
            },
            "result_format",
        ),
        (
            {"model": "m", "input": {"messages": [{"role": "user", "content": [{"audio": 3}]}]}},
            "URI string",
        ),
    ],
)
def test_malformed_requests_are_refused_with_400_invalid_parameter(
    body: object, words: str
) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_request(body)
    assert info.value.status == 400
    assert info.value.code == "InvalidParameter"
    assert words in str(info.value)
    assert info.value.fix  # every refusal says what to do


def test_data_uris_decode_base64_and_percent_encoding() -> None:
    payload = b"RIFF\x00\x01binary"
    uri = "data:audio/wav;base64," + base64.b64encode(payload).decode()
    assert decode_data_uri(uri) == ("audio/wav", payload)
    assert decode_data_uri("data:text/plain,a%20b") == ("text/plain", b"a b")
    with pytest.raises(ProtocolError, match="base64"):
        decode_data_uri("data:audio/wav;base64,@@@")
    with pytest.raises(ProtocolError, match="malformed"):
        decode_data_uri("data:no-comma")


# ------------------------------------------------------------------------------------ responses
def test_message_response_has_s001_shape_and_usage_reads_back() -> None:
    usage = usage_dict(input_text=33, input_audio=85, output_text=10)
    body = response_body("It says hello.", usage, "rid-1")
    assert body["output"]["choices"][0] == {
        "finish_reason": "stop",
        "message": {"role": "assistant", "content": [{"text": "It says hello."}]},
    }
    assert body["usage"] == {"input_tokens": 33, "output_tokens": 10, "audio_tokens": 85}
    assert output_text(body["output"]) == "It says hello."
    assert finish_reason(body["output"]) == "stop"
    parsed = Usage.from_dashscope(body["usage"], model="qwen-audio-turbo-latest")
    assert (parsed.input_text, parsed.input_audio, parsed.output_text) == (33, 85, 10)


def test_text_result_format_puts_text_and_finish_reason_in_output() -> None:
    body = response_body("Two.", usage_dict(input_text=1, output_text=1), "r", "text")
    assert body["output"] == {"text": "Two.", "finish_reason": "stop"}
    assert output_text(body["output"]) == "Two."


def test_image_tokens_appear_only_when_images_were_sent() -> None:
    assert "image_tokens" not in usage_dict(input_text=1, output_text=1)
    assert usage_dict(input_text=1, output_text=1, input_image=64)["image_tokens"] == 64


def _usage(text: str) -> dict[str, int]:
    return usage_dict(input_text=5, input_audio=50, output_text=len(text.split()))


def test_incremental_stream_parsed_by_the_sdk_concatenates_to_the_answer() -> None:
    answer = "One plus one equals two."
    enc = StreamEncoder("rid", incremental=True, result_format="message", usage=_usage)
    raw = b"".join(enc.piece(p) for p in split_for_stream(answer)) + enc.finish()
    events = sdk_events(raw)
    assert all(not err for err, _, _ in events)
    outputs = [data["output"] for _, _, data in events]
    assert "".join(output_text(o) for o in outputs) == answer
    assert [finish_reason(o) for o in outputs[:-1]] == [None] * (len(outputs) - 1)
    assert outputs[-1]["choices"][0]["finish_reason"] == "stop"
    assert outputs[0]["choices"][0]["finish_reason"] == "null"  # the string, as the service sends
    tokens = [data["usage"]["output_tokens"] for _, _, data in events]
    assert tokens == sorted(tokens) and tokens[-1] == 5
    assert all(data["usage"]["audio_tokens"] == 50 for _, _, data in events)
    assert b"event:result" in raw and b"event: " not in raw and b"[DONE]" not in raw


def test_cumulative_stream_chunks_grow_to_the_full_answer() -> None:
    answer = "The audio says: hello world."
    enc = StreamEncoder("rid", incremental=False, result_format="text", usage=_usage)
    raw = b"".join(enc.piece(p) for p in split_for_stream(answer)) + enc.finish()
    texts = [output_text(data["output"]) for _, _, data in sdk_events(raw)]
    assert all(b.startswith(a) for a, b in itertools.pairwise(texts))
    assert texts[-1] == answer


def test_in_stream_error_is_recognised_by_the_sdk_with_its_status() -> None:
    enc = StreamEncoder("rid", incremental=True, result_format="message", usage=_usage)
    raw = enc.piece("Partial ") + enc.error(503, "ServiceUnavailable", "busy — try again")
    events = sdk_events(raw)
    assert events[0][0] is False
    is_error, status, data = events[1]
    assert (is_error, status) == (True, 503)
    assert data == {
        "code": "ServiceUnavailable",
        "message": "busy — try again",
        "request_id": "rid",
    }
    assert b"event:error\n" in stream_error(500, "InternalError", "x", "rid")


@given(st.text())
def test_stream_pieces_always_join_back_to_the_text(text: str) -> None:
    assert "".join(split_for_stream(text)) == text


def test_words_and_cjk_characters_stream_as_separate_pieces() -> None:
    assert split_for_stream("One plus one") == ["One ", "plus ", "one"]
    assert split_for_stream("一加一等于二。") == ["一", "加", "一", "等", "于", "二", "。"]
