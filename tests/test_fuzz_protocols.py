"""Property tests of every parser and state machine in ``nbtoolkit.protocols`` (Hypothesis).

Contract (as websockets' fuzzing harnesses hold theirs): whatever arrives, a parser
returns typed values or raises one of the documented :mod:`nbtoolkit.errors` exceptions
(``ProtocolError``; ``ServerError`` for an in-stream error frame). State machines never raise
on client input at all: refusals become error events/frames, and their outputs always serialise.

About 11,000 generated inputs in all (``max_examples`` below); the module runs in well under a minute.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbtoolkit.errors import ProtocolError, ServerError
from nbtoolkit.local import realtime_session as rs
from nbtoolkit.protocols import audio_modalities as am
from nbtoolkit.protocols import conversation as conv
from nbtoolkit.protocols import dialog as dlg
from nbtoolkit.protocols import realtime as rt
from nbtoolkit.protocols.realtime_turn import RealtimeTurnCollector
from nbtoolkit.protocols.sse import SSEDecoder, SSEEvent, encode


def fuzz(examples: int) -> Callable[[Any], Any]:
    """Hypothesis settings for this module: a fixed example budget and no per-example deadline."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# --------------------------------------------------------------------------- strategies
_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
#: Any JSON document (floats include NaN/inf, which Python's json also emits and reads).
json_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=4,
)


def near(*keys: str) -> st.SearchStrategy[Any]:
    """A value for a field that is usually plausible: one of ``keys``-shaped strings or junk."""
    return st.sampled_from(keys) | json_values if keys else json_values


def splits(data: bytes) -> st.SearchStrategy[list[bytes]]:
    """``data`` cut into pieces at arbitrary points (every piece non-empty)."""
    cuts = st.lists(st.integers(1, max(1, len(data) - 1)), max_size=8, unique=True)
    return cuts.map(
        lambda cs: (
            [data[a:b] for a, b in zip([0, *sorted(cs)], [*sorted(cs), len(data)], strict=True)]
            if len(data) > 1
            else [data]
        )
    )


def feed_all(decoder: SSEDecoder, pieces: list[bytes]) -> list[SSEEvent]:
    out: list[SSEEvent] = []
    for piece in pieces:
        out += decoder.feed(piece)
    return out


def as_tuples(events: list[SSEEvent]) -> list[tuple[str, str, str | None, dict[str, str]]]:
    return [(e.data, e.event, e.id, e.fields) for e in events]


# --------------------------------------------------------------------------- SSE
_sse_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=30
)
_sse_frames = st.lists(
    st.builds(
        lambda data, event, id, space: encode(data, event=event, id=id, space=space),
        _sse_text,
        st.none() | st.sampled_from(["result", "error", "message"]),
        st.none() | st.text("0123456789", min_size=1, max_size=3),
        st.booleans(),
    ),
    min_size=1,
    max_size=5,
)


@fuzz(1000)
@given(data=st.data(), raw=st.binary(max_size=300))
def test_sse_decoder_gives_the_same_events_however_arbitrary_bytes_are_chunked(
    data: st.DataObject, raw: bytes
) -> None:
    whole = SSEDecoder().feed(raw)
    pieces = data.draw(splits(raw))
    assert as_tuples(feed_all(SSEDecoder(), pieces)) == as_tuples(whole)


@fuzz(600)
@given(data=st.data(), frames=_sse_frames, ending=st.sampled_from([b"\n", b"\r\n", b"\r"]))
def test_sse_frames_round_trip_through_any_chunking_and_line_ending(
    data: st.DataObject, frames: list[bytes], ending: bytes
) -> None:
    stream = b"".join(frames).replace(b"\n", ending)
    decoder = SSEDecoder()
    # a CR at the very end may be half of a CRLF still in transit; a final LF settles it either way
    events = feed_all(decoder, [*data.draw(splits(stream)), b"\n"])
    expected = [
        line.split(b":", 1)[1].removeprefix(b" ").decode()
        for frame in frames
        for line in frame.split(b"\n")
        if line.startswith(b"data:")
    ]
    assert [e.data for e in events] == expected


@fuzz(300)
@given(raw=st.binary(min_size=1, max_size=200), limit=st.integers(1, 64))
def test_sse_decoder_refuses_an_event_over_its_size_limit_with_a_value_error_only(
    raw: bytes, limit: int
) -> None:
    decoder = SSEDecoder(max_event_bytes=limit)
    try:
        decoder.feed(raw)
    except ValueError as exc:  # documented: "refuses events larger than max_event_bytes"
        assert str(limit) in str(exc)


# --------------------------------------------------------------------------- conversation
_media = st.fixed_dictionaries(
    {},
    optional={
        "text": near("what is one plus one"),
        "audio": near("oss://x/a.wav", "data:audio/wav;base64,UklGRg==", "file:///a.wav"),
        "image": near("oss://x/a.jpg"),
        "video": st.lists(near("oss://x/f.jpg"), max_size=3) | json_values,
    },
)
_conv_message = st.fixed_dictionaries(
    {"role": near("user", "assistant", "system")},
    optional={"content": st.lists(_media | json_values, max_size=3) | json_values},
)
_conv_body = st.fixed_dictionaries(
    {},
    optional={
        "model": near("qwen-audio-turbo-latest"),
        "input": st.fixed_dictionaries(
            {}, optional={"messages": st.lists(_conv_message, max_size=3) | json_values}
        )
        | json_values,
        "parameters": st.fixed_dictionaries(
            {},
            optional={"result_format": near("message", "text"), "incremental_output": json_values},
        )
        | json_values,
    },
)


@fuzz(900)
@given(body=_conv_body | json_values)
def test_conversation_request_parser_returns_a_request_or_a_400_protocol_error(body: Any) -> None:
    try:
        req = conv.parse_request(body)
    except ProtocolError as exc:
        assert exc.status == 400 and exc.code == "InvalidParameter" and exc.fix
        return
    assert req.current.role == "user"
    assert all(role in ("user", "assistant") for role, _ in req.history)
    assert isinstance(req.all_text, str)
    for message in req.messages:
        for ref in message.media:
            assert ref.scheme in ("oss", "data", "http", "file", "other")


@fuzz(400)
@given(uri=st.text(max_size=60).map(lambda s: "data:" + s) | st.text(max_size=40))
def test_data_uri_decoder_returns_bytes_or_a_protocol_error(uri: str) -> None:
    try:
        mime, payload = conv.decode_data_uri(uri)
    except ProtocolError as exc:
        assert exc.status == 400
        return
    assert isinstance(mime, str) and isinstance(payload, bytes)


_output = st.fixed_dictionaries(
    {},
    optional={
        "text": json_values,
        "finish_reason": near("stop", "null"),
        "choices": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "finish_reason": near("stop", "null"),
                    "message": st.fixed_dictionaries(
                        {}, optional={"content": st.lists(json_values, max_size=3) | json_values}
                    )
                    | json_values,
                },
            )
            | json_values,
            max_size=2,
        )
        | json_values,
    },
)


@fuzz(600)
@given(output=_output | json_values)
def test_reading_an_answer_never_fails_on_odd_output_objects(output: Any) -> None:
    assert isinstance(conv.output_text(output), str)
    reason = conv.finish_reason(output)
    assert reason is None or isinstance(reason, str)


@fuzz(300)
@given(text=st.text(max_size=80))
def test_stream_pieces_join_back_to_the_answer(text: str) -> None:
    assert "".join(conv.split_for_stream(text)) == text


# --------------------------------------------------------------------------- dialog
_directives = st.sampled_from(
    [
        "Start",
        "SendSpeech",
        "StopSpeech",
        "RequestToSpeak",
        "RequestToRespond",
        "UpdateInfo",
        "HeartBeat",
        "LocalRespondingStarted",
        "LocalRespondingEnded",
        "Stop",
        "NoSuchDirective",
    ]
)
_dialog_params = st.fixed_dictionaries(
    {},
    optional={
        "upstream": st.fixed_dictionaries(
            {},
            optional={
                "mode": near("push2talk", "tap2talk", "duplex"),
                "sample_rate": near("16000") | st.sampled_from([16000, 8000]),
                "audio_format": near("pcm"),
                "type": near("AudioOnly", "AudioAndVideo"),
            },
        )
        | json_values,
        "downstream": st.fixed_dictionaries(
            {},
            optional={
                "sample_rate": st.sampled_from([24000, 48000, 100]) | json_values,
                "voice": json_values,
            },
        )
        | json_values,
        "images": st.lists(
            st.fixed_dictionaries({"type": near("base64", "url"), "value": json_values})
            | json_values,
            max_size=2,
        )
        | json_values,
        "biz_params": st.fixed_dictionaries(
            {},
            optional={
                "videos": st.lists(st.fixed_dictionaries({"action": near("connect")}), max_size=2)
                | json_values
            },
        )
        | json_values,
    },
)
_dialog_envelope = st.builds(
    lambda action, task, directive, extra, params: {
        "header": {"action": action, "task_id": task, "streaming": "duplex"},
        "payload": {"input": {"directive": directive, **extra}, "parameters": params},
    },
    near("run-task", "continue-task", "finish-task"),
    near("t" * 32),
    _directives,
    st.fixed_dictionaries(
        {},
        optional={
            "type": near("prompt", "transcript"),
            "text": near("what is one plus one"),
            "dialog_id": json_values,
        },
    ),
    _dialog_params | json_values,
)


@fuzz(700)
@given(
    raw=st.binary(max_size=120)
    | st.text(max_size=120)
    | json_values.map(json.dumps)
    | _dialog_envelope
)
def test_dialog_envelope_parser_returns_a_message_or_a_protocol_error(raw: Any) -> None:
    try:
        msg = dlg.parse_client_message(raw)
    except ProtocolError as exc:
        assert exc.code == "InvalidParameter" and exc.fix
        return
    assert msg.action in ("run-task", "continue-task", "finish-task")
    assert isinstance(msg.directive, str) and isinstance(msg.text, str)


def _check_dialog_outputs(session: dlg.DialogSession, outputs: list[dlg.Output]) -> None:
    assert session.state in dlg.STATES
    for out in outputs:
        if isinstance(out, dlg.Frame):
            frame = json.loads(json.dumps(out.message))
            assert set(frame) == {"header", "payload"}  # the SDK drops frames missing either key
            assert isinstance(out.event, str)


# one step of a random conversation with the server session: a client frame, audio, or an engine result
_dialog_steps = st.lists(
    st.one_of(
        st.tuples(st.just("frame"), _dialog_envelope),
        st.tuples(st.just("text"), st.text(max_size=40) | json_values.map(json.dumps)),
        st.tuples(st.just("audio"), st.binary(max_size=64)),
        st.tuples(
            st.just("vad"),
            st.sampled_from(["speech_started", "speech_stopped", "noise"]),
            st.none() | st.binary(max_size=32),
        ),
        st.tuples(st.just("transcript"), st.integers(0, 6), st.text(max_size=30)),
        st.tuples(
            st.just("reply"),
            st.integers(0, 6),
            st.text(max_size=30),
            st.lists(st.dictionaries(st.text(max_size=5), json_values, max_size=2), max_size=2),
        ),
        st.tuples(
            st.just("spoken"),
            st.integers(0, 6),
            st.none() | st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
        ),
        st.tuples(st.just("failure"), st.integers(0, 6), st.text(max_size=10)),
    ),
    max_size=12,
)


def _start_frame(mode: str) -> dict[str, Any]:
    return {
        "header": {"action": "run-task", "task_id": "t" * 32},
        "payload": {"input": {"directive": "Start"}, "parameters": {"upstream": {"mode": mode}}},
    }


@fuzz(900)
@given(mode=st.sampled_from(dlg.MODES), started=st.booleans(), steps=_dialog_steps)
def test_dialog_session_never_raises_on_any_sequence_and_every_frame_serialises(
    mode: str, started: bool, steps: list[tuple[Any, ...]]
) -> None:
    session = dlg.DialogSession("d" * 32)
    if started:
        _check_dialog_outputs(
            session, session.receive(dlg.parse_client_message(_start_frame(mode)))
        )
    for kind, *args in steps:
        if kind in ("frame", "text"):
            try:
                msg = dlg.parse_client_message(args[0])
            except ProtocolError:  # what the route does with an unparsable frame
                continue
            outputs = session.receive(msg)
        elif kind == "audio":
            outputs = session.on_audio(args[0])
        elif kind == "vad":
            outputs = session.on_vad(args[0], args[1])
        elif kind == "transcript":
            outputs = session.on_transcript(args[0], args[1])
        elif kind == "reply":
            outputs = session.on_reply(args[0], args[1], commands=args[2])
        elif kind == "spoken":
            outputs = session.on_spoken(args[0], args[1])
        else:
            outputs = session.on_failure(args[0], "InternalError", args[1])
        _check_dialog_outputs(session, outputs)
        if session.stopped:
            assert session.receive(dlg.parse_client_message(_start_frame(mode))) == []


@fuzz(400)
@given(
    events=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "SpeechStarted",
                    "SpeechContent",
                    "SpeechEnded",
                    "RespondingStarted",
                    "RespondingContent",
                    "RespondingEnded",
                    "RequestAccepted",
                    "HeartBeat",
                    "DialogStateChanged",
                    "Other",
                ]
            ),
            st.none()
            | st.dictionaries(
                st.sampled_from(["text", "finished", "usage", "state", "extra_info"]),
                json_values | st.sampled_from(["Listening", "Thinking"]),
                max_size=4,
            ),
        ),
        max_size=12,
    )
)
def test_dialog_turn_collector_folds_any_event_sequence(events: list[tuple[str, Any]]) -> None:
    turn = dlg.DialogTurnCollector()
    for name, output in events:
        turn.event(name, output)
    assert turn.status in ("completed", "cancelled")
    assert isinstance(turn.heard, str) and isinstance(turn.text, str)
    assert all(isinstance(c, dict) for c in turn.commands)


# --------------------------------------------------------------------------- realtime
#: Numbers of every kind a JSON frame can carry to Python: ±Infinity and NaN (Python's json reads
#: them), 1e300, integers past float range, bools (ints to Python).
_numbers = (
    st.floats()
    | st.sampled_from([float("inf"), float("-inf"), float("nan"), 1e300, -1e300, 10**400])
    | st.integers()
    | st.booleans()
)


def _event_dicts(registry: dict[str, type[rt.RealtimeEvent]]) -> st.SearchStrategy[dict[str, Any]]:
    """Frames of the known types with each field present, missing or of a random type."""
    field_values = {
        "audio": st.sampled_from([base64.b64encode(b"\x01\x00" * 80).decode(), "%%%", "AAA="])
        | json_values,
        "image": st.sampled_from([base64.b64encode(b"\xff\xd8\xff" + b"\0" * 20).decode(), "AAAA"])
        | json_values,
        "delta": st.sampled_from([base64.b64encode(b"\0\0").decode(), "not base64!"]) | json_values,
        "session": st.fixed_dictionaries(
            {},
            optional={
                "modalities": st.sampled_from(
                    [["text"], ["text", "audio"], ["video"], [1, "a"], "text"]
                )
                | json_values,
                "voice": near(*rt.VOICES),
                "turn_detection": st.none()
                | st.fixed_dictionaries(
                    {},
                    optional={
                        "type": near("server_vad"),
                        "threshold": _numbers | json_values,
                        "silence_duration_ms": _numbers | st.integers(0, 9000) | json_values,
                        "prefix_padding_ms": _numbers | st.integers(-5, 500) | json_values,
                        "create_response": json_values,
                    },
                )
                | json_values,
                "input_audio_transcription": st.none() | json_values,
                "instructions": json_values,
            },
        )
        | json_values,
        "response": st.fixed_dictionaries(
            {},
            optional={
                "modalities": st.sampled_from([["text"], ["audio", "text"], [1, "a"], 5])
                | json_values,
                "instructions": json_values,
                "id": json_values,
                "status": json_values,
            },
        )
        | json_values,
        "item": st.fixed_dictionaries(
            {},
            optional={
                "type": near("message"),
                "content": st.lists(
                    st.fixed_dictionaries({"type": near("input_text", "text"), "text": json_values})
                    | json_values,
                    max_size=2,
                )
                | json_values,
            },
        )
        | json_values,
    }

    def build(name: str) -> st.SearchStrategy[dict[str, Any]]:
        from dataclasses import fields

        cls = registry[name]
        optional = {f.name: field_values.get(f.name, json_values) for f in fields(cls)}
        return st.fixed_dictionaries({"type": st.just(name)}, optional=optional)

    return st.sampled_from(sorted(registry)).flatmap(build)


_frames_in = st.binary(max_size=80) | st.text(max_size=80) | json_values.map(json.dumps)


@fuzz(800)
@given(frame=_frames_in | _event_dicts(rt.SERVER_EVENTS) | _event_dicts(rt.CLIENT_EVENTS))
def test_realtime_parsers_return_typed_events_or_a_protocol_error(frame: Any) -> None:
    for parse in (rt.parse_server_event, rt.parse_client_event):
        try:
            event = parse(frame if not isinstance(frame, dict) else json.dumps(frame))
        except ProtocolError as exc:
            assert exc.code in ("invalid_json", "invalid_event", "missing_field", "invalid_value")
            continue
        assert isinstance(event, rt.RealtimeEvent) and isinstance(event.event_id, str)
        # what was parsed serialises again and parses to the same type
        again = parse(event.to_json())
        assert type(again) is type(event)


def _check_vad_settings(settings: dict[str, Any] | None) -> None:
    """What the route hands the engine's VAD: finite, in range, convertible with int()."""
    if settings is None:
        return
    assert -1 <= float(settings["threshold"]) <= 1
    assert 0 <= int(settings["prefix_padding_ms"]) <= 6000
    assert 200 <= int(settings["silence_duration_ms"]) <= 6000


def _check_realtime_step(step: rs.Step, done: set[str]) -> None:
    for action in step.actions:
        if isinstance(action, rs.ConfigureVad):
            _check_vad_settings(action.settings)
    for event in step.events:
        parsed = rt.parse_server_event(event.to_json())
        assert type(parsed) is type(event)
        rid = getattr(event, "response_id", None)
        if isinstance(event, rt.ResponseDone):
            assert event.response_id not in done, "response.done twice for one response"
            done.add(event.response_id)
        elif rid is not None and isinstance(
            event, (rt.AudioDelta, rt.TextDelta, rt.AudioTranscriptDelta)
        ):
            assert rid not in done, "a delta after its response.done"


_rt_steps = st.lists(
    st.one_of(
        st.tuples(st.just("client"), _event_dicts(rt.CLIENT_EVENTS) | _frames_in),
        st.tuples(st.just("speech_started"), st.integers(0, 10**6)),
        st.tuples(
            st.just("speech_stopped"), st.integers(0, 10**6), st.none() | st.binary(max_size=64)
        ),
        st.tuples(
            st.just("transcribed"),
            st.integers(0, 3),
            st.text(max_size=20),
            st.none() | st.text(max_size=8),
        ),
        st.tuples(
            st.just("delta"),
            st.sampled_from(["audio", "text", "transcript"]),
            st.binary(max_size=16),
            st.text(max_size=8),
        ),
        st.tuples(st.just("end"), st.booleans()),
        st.tuples(
            st.just("begin"), st.none() | st.sampled_from([["text"], ["audio", "text"], ["x"]])
        ),
    ),
    max_size=12,
)


@fuzz(900)
@given(steps=_rt_steps)
def test_realtime_session_never_raises_and_never_sends_a_delta_after_response_done(
    steps: list[tuple[Any, ...]],
) -> None:
    session = rs.RealtimeSession("qwen-omni-turbo-realtime")
    done: set[str] = set()
    _check_realtime_step(session.opened(), done)
    answering: list[str] = []
    for kind, *args in steps:
        step = rs.Step([], [])
        if kind == "client":
            frame = args[0]
            step = session.receive(json.dumps(frame) if isinstance(frame, dict) else frame)
        elif kind == "speech_started":
            step = session.speech_started(args[0])
        elif kind == "speech_stopped":
            step = session.speech_stopped(args[0], args[1])
        elif kind == "transcribed":
            if session.inputs:
                item = session.inputs[args[0] % len(session.inputs)].item_id
                step = session.transcribed(item, args[1], args[2])
        elif kind == "delta" and answering:
            rid, (what, pcm, text) = answering[-1], args
            if what == "audio":
                events = session.audio_delta(rid, pcm[: len(pcm) // 2 * 2])
            elif what == "text":
                events = session.text_delta(rid, text)
            else:
                events = session.transcript_delta(rid, text)
            step = rs.Step(events, [])
        elif kind == "end" and answering:
            rid = answering[-1]
            step = rs.Step(
                session.end_response(rid) if args[0] else session.fail_response(rid, "x"), []
            )
        elif kind == "begin":
            try:
                step = session.begin_response(modalities=args[0])
            except (
                Exception
            ) as exc:  # the refusal type is private; the route only calls via receive
                assert type(exc).__name__ == "_Refused"
        answering += [a.response_id for a in step.actions if isinstance(a, rs.NeedAnswer)]
        _check_realtime_step(step, done)
        assert session.response is None or session.response.id not in done


def _answering_session() -> rs.RealtimeSession:
    """A manual-mode session with one committed input and a response in progress."""
    session = rs.RealtimeSession("qwen-omni-turbo-realtime")
    session.opened()
    session.receive(rt.SessionUpdate(session={"turn_detection": None}).to_json())
    session.receive(rt.InputAudioAppend.of(b"\x01\x00" * 160).to_json())
    session.receive(rt.InputAudioCommit().to_json())
    session.receive(rt.ResponseCreate().to_json())
    assert session.response is not None
    return session


@fuzz(1000)
@given(frame=_event_dicts(rt.CLIENT_EVENTS), answering=st.booleans())
def test_realtime_session_answers_any_client_event_with_frames_never_an_exception(
    frame: dict[str, Any], answering: bool
) -> None:
    session = _answering_session() if answering else rs.RealtimeSession("qwen-omni-turbo-realtime")
    step = session.receive(json.dumps(frame))
    _check_realtime_step(step, set())
    for event in step.events:
        if isinstance(event, rt.ErrorEvent):
            assert event.code and event.message


def test_deeply_nested_json_is_a_protocol_error_for_every_parser() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    for parse in (
        rt.parse_client_event,
        rt.parse_server_event,
        dlg.parse_client_message,
        am.parse_request,
        am.StreamAccumulator().feed,
    ):
        try:
            parse(deep)
        except ProtocolError:
            continue
        raise AssertionError(f"{parse} accepted 100,000 nested lists")
    step = rs.RealtimeSession("m").receive(deep)
    assert isinstance(step.events[0], rt.ErrorEvent) and step.events[0].code == "invalid_json"


@fuzz(500)
@given(events=st.lists(_event_dicts(rt.SERVER_EVENTS), max_size=8))
def test_realtime_turn_collector_folds_any_server_events(events: list[dict[str, Any]]) -> None:
    turn = RealtimeTurnCollector()
    for frame in events:
        try:
            turn.feed(rt.parse_server_event(frame))
        except ProtocolError:
            continue  # a bad frame or bad base64 audio: documented, and the turn keeps what it had
    assert isinstance(turn.text, str) and isinstance(turn.audio, bytearray)


# --------------------------------------------------------------------------- audio modalities
_am_part = st.one_of(
    st.fixed_dictionaries({"type": st.just("text")}, optional={"text": json_values}),
    st.fixed_dictionaries(
        {"type": st.just("input_audio")},
        optional={
            "input_audio": st.fixed_dictionaries(
                {},
                optional={
                    "data": st.sampled_from([base64.b64encode(b"\0\0" * 8).decode(), "@@"])
                    | json_values,
                    "format": near("wav", "pcm16", "flac"),
                },
            )
            | json_values
        },
    ),
    st.fixed_dictionaries(
        {"type": near("image_url", "image")},
        optional={
            "image_url": st.sampled_from(
                ["data:image/jpeg;base64,/9j/", "data:image/jpeg,xx", "http://x/a.jpg"]
            )
            | st.fixed_dictionaries({"url": json_values})
            | json_values
        },
    ),
    json_values,
)
_am_body = st.fixed_dictionaries(
    {},
    optional={
        "messages": st.lists(
            st.fixed_dictionaries(
                {"role": near("user", "system")},
                optional={"content": st.lists(_am_part, max_size=3) | json_values},
            )
            | json_values,
            max_size=3,
        )
        | json_values,
        "stream": json_values,
        "modalities": st.sampled_from([["text"], ["text", "audio"]]) | json_values,
        "audio": st.fixed_dictionaries({}, optional={"voice": json_values, "format": json_values})
        | json_values,
        "model": json_values,
    },
)


@fuzz(800)
@given(body=_am_body | json_values | st.binary(max_size=60) | st.text(max_size=60))
def test_audio_modalities_request_parser_returns_a_request_or_a_400(body: Any) -> None:
    try:
        req = am.parse_request(json.dumps(body) if isinstance(body, dict) else body)
    except ProtocolError as exc:
        assert exc.status == 400 and exc.fix
        return
    assert req.messages and all(isinstance(m.text, str) for m in req.messages)
    assert all(isinstance(m, str) for m in req.modalities)


_am_chunks = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "id": json_values,
            "object": json_values,
            "model": json_values,
            "usage": st.fixed_dictionaries(
                {},
                optional={
                    "prompt_tokens": st.integers() | st.floats() | json_values,
                    "completion_tokens": st.integers() | st.floats() | json_values,
                    "prompt_tokens_details": json_values,
                },
            )
            | json_values,
            "choices": st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "index": st.sampled_from([0, 1]) | json_values,
                        "finish_reason": json_values,
                        "delta": st.fixed_dictionaries(
                            {},
                            optional={
                                "content": json_values,
                                "audio": st.fixed_dictionaries(
                                    {},
                                    optional={
                                        "id": json_values,
                                        "transcript": json_values,
                                        "data": st.sampled_from(["AAAA", "##"]) | json_values,
                                        "expires_at": json_values,
                                    },
                                )
                                | json_values,
                            },
                        )
                        | json_values,
                    },
                )
                | json_values,
                max_size=2,
            )
            | json_values,
            "error": json_values,
        },
    ).map(json.dumps),
    json_values.map(json.dumps),
    st.text(max_size=40),
    st.just(am.DONE),
)


@fuzz(700)
@given(datas=st.lists(_am_chunks, max_size=8))
def test_stream_accumulator_returns_pieces_or_a_documented_error(datas: list[str]) -> None:
    acc = am.StreamAccumulator()
    for data in datas:
        before = (acc.transcript, bytes(acc.pcm))
        try:
            pieces = acc.feed(data)
        except (ProtocolError, ServerError):
            # what arrived before the bad frame is still there for .partial
            assert acc.transcript.startswith(before[0]) and bytes(acc.pcm).startswith(before[1])
            continue
        assert all(isinstance(p, (str, bytes)) for p in pieces)
    assert acc.rate in (am.DEFAULT_RATE, am.OPENAI_RATE)
    clip = acc.clip()
    assert clip is None or clip.rate == acc.rate


@fuzz(300)
@given(
    data=st.data(),
    transcript=st.text(max_size=30),
    pcm=st.binary(max_size=3000).map(lambda b: b[: len(b) // 2 * 2]),
)
def test_s002_answer_survives_any_tcp_chunking_into_the_same_transcript_and_pcm(
    data: st.DataObject, transcript: str, pcm: bytes
) -> None:
    from nbtoolkit.audio.clip import Clip

    clip = Clip.from_pcm(pcm, am.DEFAULT_RATE) if pcm else None
    stream = b"".join(am.response_frames(transcript, clip))
    acc = am.StreamAccumulator()
    for event in feed_all(SSEDecoder(), data.draw(splits(stream))):
        acc.feed(event.data)
    assert acc.done and acc.transcript == transcript and bytes(acc.pcm) == pcm
