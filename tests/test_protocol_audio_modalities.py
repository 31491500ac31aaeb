"""The audio-modalities format without sockets: request parsing, the Agora sample's frames (with
their audio parameters), and the accumulator reading both the sample's and OpenAI's chunk shapes."""

from __future__ import annotations

import base64
import itertools
import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbtoolkit.audio.clip import Clip
from nbtoolkit.errors import ConfigError, ProtocolError, ServerError
from nbtoolkit.protocols.audio_modalities import (
    DEFAULT_RATE,
    OPENAI_RATE,
    AudioParams,
    StreamAccumulator,
    build_request,
    error_frame,
    parse_request,
    response_frames,
    user_message,
)
from nbtoolkit.protocols.sse import SSEDecoder


def tone(seconds: float, rate: int = DEFAULT_RATE) -> Clip:
    t = np.arange(round(seconds * rate)) / rate
    return Clip.from_array(0.3 * np.sin(2 * np.pi * 440 * t), rate)


def events(stream: bytes) -> list[str]:
    return [e.data for e in SSEDecoder().feed(stream)]


# --------------------------------------------------------------------------- requests
def test_seed_request_with_string_content_parses_and_streams_by_default() -> None:
    req = parse_request(
        b'{"messages": [{"role": "user", "content": "\xe8\xaf\xb7\xe7\x94\x9f\xe6\x88\x90"}],'
        b' "stream": true, "modalities": ["text", "audio"]}'
    )
    assert req.stream is True
    assert req.modalities == ("text", "audio")
    assert req.last_user().text == "请生成"
    assert parse_request({"messages": [{"role": "user", "content": "hi"}]}).stream is True


def test_user_message_with_text_and_wav_audio_round_trips_through_the_parser() -> None:
    clip = tone(0.25)
    body = build_request([user_message("what is this", clip)], model="m", voice="v")
    assert body["audio"] == {"format": "pcm16", "voice": "v"}
    req = parse_request(json.dumps(body))
    user = req.last_user()
    assert user.text == "what is this"
    assert user.audio[0].format == "wav"
    decoded = user.clip()
    assert decoded is not None and decoded.rate == DEFAULT_RATE
    assert np.array_equal(decoded.samples, clip.samples)
    assert (req.model, req.voice, req.audio_format) == ("m", "v", "pcm16")


def test_raw_pcm16_input_audio_is_taken_as_16khz() -> None:
    clip = tone(0.1)
    part = {"data": base64.b64encode(clip.to_pcm()).decode(), "format": "pcm16"}
    req = parse_request(
        {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": part}]}]}
    )
    assert req.last_user().clip() == clip


def test_last_user_message_is_the_one_answered() -> None:
    req = parse_request(
        {
            "messages": [
                {"role": "system", "content": ["be brief"]},
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": [{"type": "text", "text": "second"}]},
            ]
        }
    )
    assert req.last_user().text == "second"
    assert req.messages[0].text == "be brief"


def test_image_data_url_is_decoded_and_remote_urls_are_refused() -> None:
    jpeg = b"\xff\xd8\xff\xe0fake"
    url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
    req = parse_request(
        {
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}
            ]
        }
    )
    assert req.last_user().images == (jpeg,)
    with pytest.raises(ProtocolError, match="data: URLs"):
        parse_request(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": "https://x/y.jpg"}],
                    }
                ]
            }
        )


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"not json", "not JSON"),
        ({"messages": []}, "non-empty"),
        ({"messages": [{"content": "x"}]}, "role"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "input_audio", "input_audio": {"data": "@@"}}],
                    }
                ]
            },
            "base64",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_audio", "input_audio": {"data": "", "format": "ogg"}}
                        ],
                    }
                ]
            },
            "format",
        ),
        ({"messages": [{"role": "user", "content": [{"type": "video"}]}]}, "Unknown content"),
    ],
)
def test_unusable_requests_are_refused_with_status_400(body: object, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem) as info:
        parse_request(body)  # type: ignore[arg-type]
    assert info.value.status == 400


def test_a_request_without_a_user_message_has_nothing_to_answer() -> None:
    req = parse_request({"messages": [{"role": "system", "content": "x"}]})
    with pytest.raises(ProtocolError, match="no user message"):
        req.last_user()


# --------------------------------------------------------------------------- answer frames
def test_default_answer_is_transcript_then_40ms_frames_then_done() -> None:
    clip = tone(0.5)
    stream = b"".join(response_frames("hello there", clip, ids=("msg1", "aud1")))
    # data-only frames written as Agora's sample server and OpenAI write them: "data: <json>"
    assert all(line.startswith(b"data: ") for line in stream.split(b"\n") if line)
    datas = events(stream)
    assert datas[-1] == "[DONE]"
    chunks = [json.loads(d) for d in datas[:-1]]
    first = chunks[0]
    assert first == {
        "id": "msg1",
        "choices": [
            {
                "index": 0,
                "delta": {"audio": {"id": "aud1", "transcript": "hello there"}},
                "finish_reason": None,
            }
        ],
    }
    pcm = b""
    for chunk in chunks[1:]:
        audio = chunk["choices"][0]["delta"]["audio"]
        assert chunk["id"] == "msg1" and audio["id"] == "aud1"
        assert set(audio) == {"id", "data"}
        piece = base64.b64decode(audio["data"])
        assert len(piece) <= 1280
        pcm += piece
    assert AudioParams().chunk_bytes == 1280
    assert all(
        len(base64.b64decode(c["choices"][0]["delta"]["audio"]["data"])) == 1280
        for c in chunks[1:-1]
    )
    assert pcm == clip.to_pcm()


def test_reply_audio_at_another_rate_is_sent_at_16khz() -> None:
    datas = events(b"".join(response_frames("x", tone(0.2, 24000))))
    pcm = b"".join(
        base64.b64decode(json.loads(d)["choices"][0]["delta"]["audio"]["data"]) for d in datas[1:-1]
    )
    assert len(pcm) == 0.2 * DEFAULT_RATE * 2


def test_error_frame_has_the_agora_sample_shape() -> None:
    (data,) = events(error_frame("engine failed"))
    assert json.loads(data) == {"error": {"message": "engine failed", "type": "server_error"}}


# --------------------------------------------------------------------------- accumulator
def feed_all(acc: StreamAccumulator, stream: bytes) -> list[str | bytes]:
    out: list[str | bytes] = []
    for data in events(stream):
        out.extend(acc.feed(data))
    return out


def test_accumulator_reads_default_frames_as_16khz_with_the_whole_transcript() -> None:
    clip = tone(0.3)
    acc = StreamAccumulator()
    pieces = feed_all(acc, b"".join(response_frames("one two", clip, ids=("m", "a"))))
    assert pieces[0] == "one two"
    assert all(isinstance(p, bytes) for p in pieces[1:])
    assert acc.done and not acc.openai_like
    assert acc.rate == DEFAULT_RATE
    assert acc.clip() == clip
    assert (acc.message_id, acc.audio_id, acc.usage) == ("m", "a", None)


OPENAI_CHUNKS = [
    {"delta": {"role": "assistant", "content": None}},
    {"delta": {"audio": {"id": "audio_1", "transcript": "Hello"}}},
    {"delta": {"audio": {"data": base64.b64encode(b"\x01\x00\x02\x00").decode()}}},
    {"delta": {"audio": {"transcript": " world"}}},
    {"delta": {"audio": {"data": base64.b64encode(b"\x03\x00").decode()}}},
    {"delta": {"audio": {"expires_at": 1729234747}}},
    {"delta": {}, "finish_reason": "stop"},
]


def openai_stream(with_usage: bool = True) -> bytes:
    frames = []
    for part in OPENAI_CHUNKS:
        chunk = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1729231147,
            "model": "gpt-4o-audio-preview",
            "choices": [{"index": 0, "finish_reason": None, **part}],
        }
        frames.append(f"data: {json.dumps(chunk)}\n\n")
    if with_usage:
        usage = {
            "prompt_tokens": 30,
            "completion_tokens": 50,
            "total_tokens": 80,
            "prompt_tokens_details": {"audio_tokens": 10, "cached_tokens": 0},
            "completion_tokens_details": {"audio_tokens": 40, "text_tokens": 10},
        }
        chunk = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-audio-preview",
            "choices": [],
            "usage": usage,
        }
        frames.append(f"data: {json.dumps(chunk)}\n\n")
    frames.append("data: [DONE]\n\n")
    return "".join(frames).encode()


def test_accumulator_reads_openai_audio_chunks_as_24khz_with_incremental_transcript() -> None:
    acc = StreamAccumulator()
    pieces = feed_all(acc, openai_stream())
    assert pieces == ["Hello", b"\x01\x00\x02\x00", " world", b"\x03\x00"]
    assert acc.transcript == "Hello world"
    assert acc.openai_like and acc.rate == OPENAI_RATE
    assert acc.finish_reason == "stop" and acc.done
    assert bytes(acc.pcm) == b"\x01\x00\x02\x00\x03\x00"
    assert acc.model == "gpt-4o-audio-preview" and acc.audio_id == "audio_1"
    assert acc.usage is not None
    assert (acc.usage.input_text, acc.usage.input_audio) == (20, 10)
    assert (acc.usage.output_text, acc.usage.output_audio) == (10, 40)


def test_rate_override_wins_over_the_shape_rule() -> None:
    acc = StreamAccumulator(rate_override=22050)
    feed_all(acc, openai_stream(with_usage=False))
    assert acc.rate == 22050
    clip = acc.clip()
    assert clip is not None and clip.rate == 22050


def test_error_frame_raises_server_error_and_keeps_what_arrived() -> None:
    acc = StreamAccumulator()
    frames = list(response_frames("partial answer", tone(0.1)))
    for data in events(b"".join(frames[:2])):
        acc.feed(data)
    (err,) = events(error_frame("TTS crashed"))
    with pytest.raises(ServerError, match="TTS crashed") as info:
        acc.feed(err)
    assert info.value.code == "server_error"
    assert acc.transcript == "partial answer" and len(acc.pcm) == AudioParams().chunk_bytes


def test_malformed_frame_raises_protocol_error_naming_the_frame() -> None:
    acc = StreamAccumulator()
    acc.feed(events(next(response_frames("x", None)))[0])
    with pytest.raises(ProtocolError, match="frame 2 is not JSON"):
        acc.feed('{"id": "broken')


def test_frames_after_done_are_ignored() -> None:
    acc = StreamAccumulator()
    feed_all(acc, b"".join(response_frames("done", None)))
    assert acc.feed('{"choices":[{"index":0,"delta":{"audio":{"transcript":"more"}}}]}') == []
    assert acc.transcript == "done"


@settings(max_examples=40, deadline=None)
@given(
    transcript=st.text(max_size=40),
    samples=st.lists(st.integers(-32768, 32767), min_size=1, max_size=3000),
    cuts=st.lists(st.integers(0, 10_000), max_size=12),
)
def test_any_split_of_a_default_stream_reassembles_exactly(
    transcript: str, samples: list[int], cuts: list[int]
) -> None:
    clip = Clip(np.array(samples, dtype=np.int16), DEFAULT_RATE)
    stream = b"".join(response_frames(transcript, clip))
    bounds = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    decoder, acc = SSEDecoder(), StreamAccumulator()
    for a, b in itertools.pairwise(bounds):
        for event in decoder.feed(stream[a:b]):
            acc.feed(event.data)
    assert acc.done
    assert acc.transcript == transcript
    assert acc.clip() == clip


# --------------------------------------------------------------------------- audio parameters
def _audio_pieces(stream: bytes) -> list[bytes]:
    datas = events(stream)[1:-1]  # between the transcript frame and [DONE]
    return [base64.b64decode(json.loads(d)["choices"][0]["delta"]["audio"]["data"]) for d in datas]


@pytest.mark.parametrize(
    ("rate", "ms", "chunk"),
    [(16000, 40, 1280), (24000, 20, 960), (48000, 10, 960), (8000, 100, 1600), (22050, 40, 1764)],
)
def test_chunk_bytes_are_rate_times_two_times_duration(rate: int, ms: int, chunk: int) -> None:
    params = AudioParams(rate, ms)
    assert params.chunk_bytes == chunk
    clip = tone(0.5, 16000)
    pieces = _audio_pieces(b"".join(response_frames("x", clip, params=params)))
    assert {len(p) for p in pieces[:-1]} == {chunk} and 0 < len(pieces[-1]) <= chunk
    # the clip is resampled to the served rate: half a second of it
    assert sum(map(len, pieces)) == rate  # 0.5 s × rate × 2 bytes


@pytest.mark.parametrize(
    ("rate", "ms", "message"),
    [
        (0, 40, "sample_rate=0"),
        (192000, 40, "sample_rate=192000"),
        (16000.0, 40, "sample_rate=16000.0"),
        (True, 40, "sample_rate=True"),
        (16000, 0, "chunk_ms=0"),
        (16000, -40, "chunk_ms=-40"),
        (16000, 5000, "chunk_ms=5000"),
        (16000, "40", "chunk_ms='40'"),
        (11025, 10, "110.25 samples"),
    ],
)
def test_nonsense_audio_parameters_are_a_config_error_that_says_why(
    rate: object, ms: object, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        AudioParams(rate, ms)  # type: ignore[arg-type]
    assert info.value.fix  # every error says what to do instead


def test_raw_pcm_input_is_read_at_the_rate_it_is_given() -> None:
    clip = tone(0.25, 24000)
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "input_audio",
                        "input_audio": {
                            "data": base64.b64encode(clip.to_pcm()).decode(),
                            "format": "pcm16",
                        },
                    }
                ],
            }
        ]
    }
    user = parse_request(body).last_user()
    assert user.clip(24000) == clip
    decoded = user.clip()
    assert decoded is not None and decoded.rate == DEFAULT_RATE  # the default when none is given


def test_accumulator_with_the_servers_chunk_ms_reads_a_matching_stream() -> None:
    params = AudioParams(24000, 20)
    clip = tone(0.3, 24000)
    acc = StreamAccumulator(rate_override=24000, chunk_ms=20)
    feed_all(acc, b"".join(response_frames("ok", clip, params=params)))
    assert acc.done and acc.clip() == clip


def test_accumulator_told_other_parameters_than_the_server_raises_naming_both() -> None:
    stream = b"".join(response_frames("ok", tone(0.3, 24000), params=AudioParams(24000, 40)))
    acc = StreamAccumulator(chunk_ms=40)  # the default 16 kHz: 1280-byte chunks expected
    with pytest.raises(ProtocolError, match=r"1920 bytes.*1280 bytes \(16000 Hz") as info:
        feed_all(acc, stream)
    assert "sample_rate=" in (info.value.fix or "")
    assert acc.transcript == "ok"  # what arrived before is kept


def test_a_short_chunk_before_the_last_is_refused_when_chunks_are_checked() -> None:
    def frame(n: int) -> str:
        data = base64.b64encode(bytes(n)).decode()
        return json.dumps(
            {"id": "m", "choices": [{"index": 0, "delta": {"audio": {"data": data}}}]}
        )

    acc = StreamAccumulator(chunk_ms=40)
    acc.feed(frame(1280))
    acc.feed(frame(600))  # may be the last
    with pytest.raises(ProtocolError, match="600 bytes"):
        acc.feed(frame(1280))
    unchecked = StreamAccumulator()
    for n in (1280, 600, 1280):
        unchecked.feed(frame(n))
    assert len(unchecked.pcm) == 3160
