"""The Qwen-Omni realtime protocol without sockets: typed events and the server session machine."""

from __future__ import annotations

import base64
import json
import re

import pytest

from nbtoolkit.errors import ProtocolError
from nbtoolkit.local.realtime_session import (
    ConfigureVad,
    FeedVad,
    NeedAnswer,
    NeedTranscript,
    RealtimeSession,
    StopAnswer,
    usage_dict,
)
from nbtoolkit.protocols.params import MAX_UTTERANCE_SECONDS
from nbtoolkit.protocols.realtime import (
    AudioDelta,
    ErrorEvent,
    InputAudioAppend,
    InputAudioClear,
    InputAudioCommit,
    InputImageAppend,
    ResponseCancel,
    ResponseCreate,
    ResponseDone,
    SessionFinish,
    SessionUpdate,
    UnknownEvent,
    parse_client_event,
    parse_server_event,
)
from nbtoolkit.protocols.realtime_turn import RealtimeTurnCollector

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 100
SPEECH = b"\x10\x00" * 16000  # 1 s of PCM16 at 16 kHz


def types(events: list) -> list[str]:
    return [e.type for e in events]


def manual_session() -> RealtimeSession:
    session = RealtimeSession(
        "qwen-omni-turbo-realtime", usage=lambda r: usage_dict(output_text=len(r.text))
    )
    session.opened()
    session.receive(SessionUpdate(session={"turn_detection": None}).to_json())
    return session


def committed(session: RealtimeSession, heard: str = "one plus one") -> str:
    session.receive(InputAudioAppend.of(SPEECH).to_json())
    step = session.receive(InputAudioCommit().to_json())
    need = step.actions[0]
    assert isinstance(need, NeedTranscript) and need.audio == SPEECH
    session.transcribed(need.item_id, heard)
    return need.item_id


# ------------------------------------------------------------------ events
def test_client_event_builders_use_event_prefixed_hex_ids() -> None:
    event = InputAudioAppend.of(b"\x01\x02")
    assert re.fullmatch(r"event_[0-9a-f]{32}", event.event_id)
    frame = json.loads(event.to_json())
    assert frame == {
        "event_id": event.event_id,
        "type": "input_audio_buffer.append",
        "audio": "AQI=",
    }
    assert InputAudioAppend.of(b"x" * 2).event_id != InputAudioAppend.of(b"x" * 2).event_id


def test_frames_round_trip_to_typed_events() -> None:
    update = SessionUpdate(session={"voice": "Ethan"})
    assert parse_client_event(update.to_json()) == update
    delta = AudioDelta(
        response_id="resp_1", item_id="item_1", delta=base64.b64encode(b"ab").decode()
    )
    parsed = parse_server_event(delta.to_json())
    assert isinstance(parsed, AudioDelta) and parsed.pcm == b"ab"
    assert parsed.output_index == 0 and parsed.content_index == 0


def test_unknown_event_type_becomes_unknown_event_not_error() -> None:
    event = parse_server_event({"type": "response.function_call_arguments.delta", "delta": "{"})
    assert isinstance(event, UnknownEvent)
    assert event.event_type == "response.function_call_arguments.delta"
    assert event.raw["delta"] == "{"


@pytest.mark.parametrize(
    "frame",
    [
        "{not json",
        b"\xff\xfe",
        "[1, 2]",
        '{"no_type": 1}',
        '{"type": 5}',
        '{"type": "response.audio.delta", "response_id": "r", "item_id": "i"}',
        '{"type": "response.audio.delta", "response_id": "r", "item_id": "i", "delta": 5}',
        '{"type": "session.created", "session": "not an object"}',
    ],
)
def test_malformed_frames_raise_protocol_error(frame: str | bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_server_event(frame)


def test_audio_delta_with_bad_base64_raises_protocol_error() -> None:
    event = AudioDelta(response_id="r", item_id="i", delta="***")
    with pytest.raises(ProtocolError, match="base64"):
        _ = event.pcm


# ------------------------------------------------------------------ session config
def test_session_created_carries_s003_defaults() -> None:
    step = RealtimeSession("qwen-omni-turbo-realtime").opened()
    session = step.events[0].to_dict()["session"]
    assert step.events[0].type == "session.created"
    assert session["id"].startswith("sess_")
    assert session["object"] == "realtime.session"
    assert session["model"] == "qwen-omni-turbo-realtime"
    assert session["modalities"] == ["text", "audio"]
    assert session["voice"] == "Chelsie"
    assert session["input_audio_transcription"] == {"model": "gummy-realtime-v1"}
    assert session["turn_detection"]["type"] == "server_vad"
    assert session["max_response_output_tokens"] == "inf"
    assert step.actions == [ConfigureVad(session["turn_detection"])]


def test_session_update_merges_and_reconfigures_vad() -> None:
    session = RealtimeSession("m")
    step = session.receive(
        SessionUpdate(
            session={"voice": "Ethan", "turn_detection": {"type": "server_vad", "threshold": 0.1}}
        ).to_json()
    )
    assert types(step.events) == ["session.updated"]
    merged = step.events[0].to_dict()["session"]
    assert merged["voice"] == "Ethan"
    assert merged["turn_detection"]["threshold"] == 0.1
    assert merged["turn_detection"]["silence_duration_ms"] == 800  # default kept
    assert merged["id"] == session.config["id"]
    assert step.actions == [ConfigureVad(merged["turn_detection"])]
    step = session.receive(SessionUpdate(session={"turn_detection": None}).to_json())
    assert step.actions == [ConfigureVad(None)]


def test_sdk_voice_none_keeps_the_current_voice() -> None:
    session = RealtimeSession("m")
    step = session.receive(SessionUpdate(session={"voice": None}).to_json())
    assert step.events[0].to_dict()["session"]["voice"] == "Chelsie"


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"modalities": ["audio"]}, "session.modalities"),
        ({"modalities": "text"}, "session.modalities"),
        ({"modalities": ["text", "video"]}, "session.modalities"),
        ({"voice": "Nobody"}, "session.voice"),
        ({"turn_detection": {"type": "semantic_vad"}}, "session.turn_detection.type"),
        (
            {"turn_detection": {"silence_duration_ms": 50}},
            "session.turn_detection.silence_duration_ms",
        ),
        ({"turn_detection": {"threshold": 3}}, "session.turn_detection.threshold"),
    ],
)
def test_invalid_session_update_is_refused_with_error_event(change: dict, param: str) -> None:
    session = RealtimeSession("m")
    before = dict(session.config)
    update = SessionUpdate(session=change)
    step = session.receive(update.to_json())
    assert len(step.events) == 1 and isinstance(step.events[0], ErrorEvent)
    error = step.events[0].error
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["event_id"] == update.event_id
    assert session.config == before


def test_text_only_modalities_are_accepted() -> None:
    session = RealtimeSession("m")
    step = session.receive(SessionUpdate(session={"modalities": ["text"]}).to_json())
    assert step.events[0].to_dict()["session"]["modalities"] == ["text"]


# ------------------------------------------------------------------ manual mode
def test_commit_with_empty_buffer_is_an_error() -> None:
    session = manual_session()
    commit = InputAudioCommit()
    step = session.receive(commit.to_json())
    assert isinstance(step.events[0], ErrorEvent)
    assert step.events[0].code == "input_audio_buffer_commit_empty"
    assert step.events[0].error["event_id"] == commit.event_id


def test_manual_turn_emits_the_documented_sequence_with_consistent_ids() -> None:
    session = manual_session()
    session.receive(InputAudioAppend.of(SPEECH).to_json())
    commit = session.receive(InputAudioCommit().to_json())
    assert types(commit.events) == ["input_audio_buffer.committed", "conversation.item.created"]
    user_item = commit.events[0].to_dict()["item_id"]
    assert commit.events[1].to_dict()["item"]["id"] == user_item
    heard = session.transcribed(user_item, "one plus one equals what")
    assert types(heard.events) == ["conversation.item.input_audio_transcription.completed"]
    assert heard.events[0].to_dict()["transcript"] == "one plus one equals what"
    assert heard.actions == []  # manual mode waits for response.create

    begin = session.receive(ResponseCreate().to_json())
    assert types(begin.events) == [
        "response.created",
        "response.output_item.added",
        "conversation.item.created",
        "response.content_part.added",
    ]
    need = begin.actions[0]
    assert isinstance(need, NeedAnswer)
    assert need.heard == "one plus one equals what" and need.audio == SPEECH and need.with_audio
    rid = need.response_id
    assert rid.startswith("resp_")
    assert begin.events[0].to_dict()["response"]["id"] == rid
    assistant = begin.events[1].to_dict()["item"]["id"]
    assert assistant.startswith("item_") and assistant != user_item

    stream = session.transcript_delta(rid, "One plus ") + session.audio_delta(
        rid, b"\x01\x00" * 2400
    )
    stream += session.transcript_delta(rid, "one is two.") + session.audio_delta(
        rid, b"\x02\x00" * 10
    )
    done = session.end_response(rid)
    assert types(done) == [
        "response.audio_transcript.done",
        "response.audio.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.done",
    ]
    for event in [*begin.events[1:], *stream, *done[:-1]]:
        frame = event.to_dict()
        assert frame.get("response_id", rid) == rid
        assert frame.get("item_id", assistant) == assistant
    assert done[0].to_dict()["transcript"] == "One plus one is two."
    response = done[-1].to_dict()["response"]
    assert response["id"] == rid and response["status"] == "completed"
    assert response["usage"]["output_tokens_details"]["text_tokens"] == len("One plus one is two.")
    assert set(response["usage"]["input_tokens_details"]) == {
        "text_tokens",
        "audio_tokens",
        "image_tokens",
    }
    assert session.response is None


def test_text_only_response_uses_text_events() -> None:
    session = manual_session()
    committed(session)
    begin = session.receive(ResponseCreate(response={"modalities": ["text"]}).to_json())
    need = begin.actions[0]
    assert isinstance(need, NeedAnswer) and not need.with_audio
    assert begin.events[-1].to_dict()["part"]["type"] == "text"
    events = session.text_delta(need.response_id, "Two.") + session.end_response(need.response_id)
    assert types(events) == [
        "response.text.delta",
        "response.text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.done",
    ]
    assert events[1].to_dict()["text"] == "Two."


def test_second_response_create_while_active_is_refused() -> None:
    session = manual_session()
    committed(session)
    session.receive(ResponseCreate().to_json())
    step = session.receive(ResponseCreate().to_json())
    assert step.events[0].to_dict()["error"]["code"] == "conversation_already_has_active_response"


def test_response_cancel_without_response_is_an_error() -> None:
    session = manual_session()
    step = session.receive(ResponseCancel().to_json())
    assert step.events[0].to_dict()["error"]["code"] == "response_cancel_not_active"
    assert step.actions == []


def test_cancel_stops_the_answer_and_later_deltas_are_dropped() -> None:
    session = manual_session()
    committed(session)
    rid = session.receive(ResponseCreate().to_json()).actions[0].response_id  # type: ignore[union-attr]
    session.transcript_delta(rid, "One plus")
    step = session.receive(ResponseCancel().to_json())
    assert step.actions == [StopAnswer(rid)]
    assert types(step.events)[-1] == "response.done"
    done = step.events[-1]
    assert isinstance(done, ResponseDone) and done.status == "cancelled"
    assert done.response["output"][0]["status"] == "incomplete"
    assert step.events[0].to_dict()["transcript"] == "One plus"  # what was said is kept
    assert session.audio_delta(rid, b"\x00\x00") == []
    assert session.end_response(rid) == []


def test_clear_empties_the_buffer() -> None:
    session = manual_session()
    session.receive(InputAudioAppend.of(SPEECH).to_json())
    assert types(session.receive(InputAudioClear().to_json()).events) == [
        "input_audio_buffer.cleared"
    ]
    assert session.receive(InputAudioCommit().to_json()).events[0].type == "error"


def test_a_buffer_past_the_utterance_cap_is_cleared_with_an_error_and_the_next_commit_works() -> (
    None
):
    session = manual_session()
    minute = SPEECH * int(MAX_UTTERANCE_SECONDS)
    assert session.receive(InputAudioAppend.of(minute).to_json()).events == []
    step = session.receive(InputAudioAppend.of(SPEECH).to_json())
    assert types(step.events) == ["error"]
    assert "60 s" in step.events[0].error["message"]
    assert "commit sooner" in step.events[0].error["message"]
    assert len(session.audio) == 0  # the server holds no more than one utterance
    assert committed(session)


# ------------------------------------------------------------------ images
def test_image_before_any_audio_is_refused() -> None:
    session = manual_session()
    step = session.receive(InputImageAppend.of(JPEG).to_json())
    assert "audio" in step.events[0].to_dict()["error"]["message"]


@pytest.mark.parametrize("image", [b"\x89PNG\r\n\x1a\n" + b"0" * 10, JPEG + b"0" * 600 * 1024])
def test_non_jpeg_or_oversized_image_is_refused(image: bytes) -> None:
    session = manual_session()
    session.receive(InputAudioAppend.of(SPEECH).to_json())
    step = session.receive(InputImageAppend.of(image).to_json())
    assert step.events[0].type == "error"


def test_images_are_committed_with_the_audio() -> None:
    session = manual_session()
    session.receive(InputAudioAppend.of(SPEECH[:3200]).to_json())
    assert session.receive(InputImageAppend.of(JPEG).to_json()).events == []
    session.receive(InputAudioAppend.of(SPEECH[3200:]).to_json())
    item_id = session.receive(InputAudioCommit().to_json()).actions[0].item_id  # type: ignore[union-attr]
    session.transcribed(item_id, "what do you see")
    need = session.receive(ResponseCreate().to_json()).actions[0]
    assert isinstance(need, NeedAnswer)
    assert need.images == (JPEG,) and need.audio == SPEECH


# ------------------------------------------------------------------ server VAD
def test_server_vad_commits_utterance_and_answers_without_response_create() -> None:
    session = RealtimeSession("m")
    session.opened()
    step = session.receive(InputAudioAppend.of(SPEECH).to_json())
    assert step.actions == [FeedVad(SPEECH)]
    started = session.speech_started(120)
    assert types(started.events) == ["input_audio_buffer.speech_started"]
    item = started.events[0].to_dict()["item_id"]
    stopped = session.speech_stopped(1800, SPEECH[:16000])
    assert types(stopped.events) == [
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.created",
    ]
    assert {e.to_dict().get("item_id", item) for e in stopped.events[:2]} == {item}
    assert stopped.events[0].to_dict()["audio_end_ms"] == 1800
    need = stopped.actions[0]
    assert isinstance(need, NeedTranscript) and need.audio == SPEECH[:16000]
    answer = session.transcribed(item, "hello")
    assert types(answer.events)[:2] == [
        "conversation.item.input_audio_transcription.completed",
        "response.created",
    ]
    assert isinstance(answer.actions[0], NeedAnswer) and answer.actions[0].heard == "hello"


def test_speech_during_answer_cancels_it_as_barge_in() -> None:
    session = RealtimeSession("m")
    session.opened()
    session.receive(InputAudioAppend.of(SPEECH).to_json())
    session.speech_started(0)
    item = session.speech_stopped(900, SPEECH).actions[0].item_id  # type: ignore[union-attr]
    rid = session.transcribed(item, "tell me a story").actions[0].response_id  # type: ignore[union-attr]
    step = session.speech_started(2000)
    assert types(step.events)[0] == "input_audio_buffer.speech_started"
    assert types(step.events)[-1] == "response.done"
    done = step.events[-1].to_dict()["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"]["reason"] == "turn_detected"
    assert step.actions == [StopAnswer(rid)]


def test_vad_events_are_ignored_in_manual_mode() -> None:
    session = manual_session()
    assert session.receive(InputAudioAppend.of(SPEECH).to_json()).actions == []
    assert session.speech_started(0).events == []


# ------------------------------------------------------------------ misc
def test_session_finish_cancels_active_response_then_finishes() -> None:
    session = manual_session()
    committed(session)
    session.receive(ResponseCreate().to_json())
    step = session.receive(SessionFinish().to_json())
    assert types(step.events)[-2:] == ["response.done", "session.finished"]
    assert [type(a).__name__ for a in step.actions] == ["StopAnswer", "EndConnection"]
    assert session.receive(InputAudioAppend.of(SPEECH).to_json()).events[0].type == "error"


@pytest.mark.parametrize("frame", ["{oops", '{"type": "conversation.item.truncate"}'])
def test_bad_client_frames_become_error_events(frame: str) -> None:
    step = manual_session().receive(frame)
    assert types(step.events) == ["error"] and step.actions == []


def test_turn_collector_folds_one_exchange() -> None:
    session = manual_session()
    collector = RealtimeTurnCollector()
    session.receive(InputAudioAppend.of(SPEECH).to_json())
    events = session.receive(InputAudioCommit().to_json()).events
    item = events[0].to_dict()["item_id"]
    events += session.transcribed(item, "one plus one").events
    begin = session.receive(ResponseCreate().to_json())
    rid = begin.actions[0].response_id  # type: ignore[union-attr]
    events += begin.events
    events += session.transcript_delta(rid, "Two.") + session.audio_delta(rid, b"\x01\x00" * 4)
    events += [AudioDelta(response_id="resp_other", item_id="x", delta="AAAA")]  # not ours
    events += session.end_response(rid)
    for event in events:
        collector.feed(parse_server_event(event.to_json()))
    assert collector.done and collector.status == "completed"
    assert collector.heard == "one plus one"
    assert collector.text == "Two."
    assert bytes(collector.audio) == b"\x01\x00" * 4
    assert collector.response_id == rid
    assert collector.usage is not None and "input_tokens_details" in collector.usage


def test_failed_transcription_is_reported_and_the_turn_still_answered() -> None:
    session = RealtimeSession("m")
    session.opened()
    session.receive(InputAudioAppend.of(SPEECH).to_json())
    session.speech_started(0)
    item = session.speech_stopped(900, SPEECH).actions[0].item_id  # type: ignore[union-attr]
    step = session.transcribed(item, "", "engine error: RuntimeError")
    assert types(step.events)[:2] == [
        "conversation.item.input_audio_transcription.failed",
        "response.created",
    ]
    assert step.events[0].to_dict()["error"]["message"] == "engine error: RuntimeError"
    assert isinstance(step.actions[0], NeedAnswer) and step.actions[0].heard == ""
