"""The MultiModalDialog protocol without sockets: envelopes, the server session, the client's turn.

Client messages are produced by the SDK's own request builder, and server frames are fed to the
SDK's own response parser, so both directions are checked against the unmodified SDK code.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from dashscope.multimodal import dialog_state
from dashscope.multimodal.multimodal_dialog import MultiModalCallback, _Request, _Response
from dashscope.multimodal.multimodal_request_params import (
    BizParams,
    ClientInfo,
    Downstream,
    RequestParameters,
    RequestToRespondParameters,
    Upstream,
)

from nbtoolkit.errors import ProtocolError
from nbtoolkit.protocols.dialog import (
    Close,
    DetectSpeech,
    DialogSession,
    DialogTurnCollector,
    Frame,
    ImageRef,
    ResetDetector,
    Respond,
    Speak,
    StopSpeaking,
    Transcribe,
    parse_client_message,
)
from nbtoolkit.protocols.params import MAX_UTTERANCE_SECONDS

TASK = "a" * 32


class SDKClient:
    """Builds client frames exactly as MultiModalDialog does (ids are null after Start)."""

    def __init__(self) -> None:
        self.req = _Request()

    def start(self, mode: str = "push2talk", video: bool = False, rate: int = 48000) -> Any:
        params = RequestParameters(
            upstream=Upstream(type="AudioAndVideo" if video else "AudioOnly", mode=mode),
            downstream=Downstream(voice="longxiaochun_v2", sample_rate=rate),
            client_info=ClientInfo(user_id="u"),
        )
        raw = self.req.generate_start_request(
            direction_name="Start",
            dialog_id="",
            app_id="app",
            request_params=params,
            model="multimodal-dialog",
            workspace_id="ws",
            task_id=TASK,
        )
        return parse_client_message(raw)

    def directive(self, name: str) -> Any:
        if name == "Stop":
            return parse_client_message(self.req.generate_stop_request(name, None))
        return parse_client_message(self.req.generate_common_direction_request(name, None))

    def respond(
        self, kind: str, text: str, params: RequestToRespondParameters | None = None
    ) -> Any:
        raw = self.req.generate_request_to_response_json(
            "RequestToRespond", None, kind, text, params
        )
        return parse_client_message(raw)

    def update_info(self, params: RequestToRespondParameters) -> Any:
        return parse_client_message(self.req.generate_update_info_json("UpdateInfo", None, params))


def events(outputs: list[Any]) -> list[str]:
    """Frames as event names (DialogStateChanged as its state); actions as their class name."""
    names = []
    for out in outputs:
        if isinstance(out, Frame):
            output = out.message["payload"].get("output") or {}
            names.append(output.get("state") or out.event)
        else:
            names.append(type(out).__name__)
    return names


def started(mode: str = "push2talk", video: bool = False) -> tuple[DialogSession, SDKClient]:
    session, client = DialogSession("dlg1"), SDKClient()
    session.receive(client.start(mode, video))
    return session, client


def run_to_end(session: DialogSession, action: Any, heard: str, answer: str) -> list[str]:
    """Complete a round from a Transcribe (or Respond) action; returns every output's name."""
    names: list[str] = []
    if isinstance(action, Transcribe):
        out = session.on_transcript(action.round, heard)
        names += events(out)
        action = out[-1]
    if isinstance(action, Respond):
        out = session.on_reply(action.round, answer)
        names += events(out)
        action = out[-1]
    assert isinstance(action, Speak)
    return names + events(session.on_spoken(action.round))


# ----------------------------------------------------------------------------- parsing
def test_sdk_messages_parse_with_null_ids_after_start() -> None:
    client = SDKClient()
    start = client.start()
    assert (start.action, start.directive, start.task_id) == ("run-task", "Start", TASK)
    assert start.parameters["downstream"]["sample_rate"] == 48000
    speech = client.directive("SendSpeech")
    assert (speech.action, speech.dialog_id, speech.task_id) == ("continue-task", None, TASK)
    assert client.directive("Stop").action == "finish-task"
    params = RequestToRespondParameters(images=[{"type": "url", "value": "data:image/png,x"}])
    ask = client.respond("prompt", "what is this", params)
    assert (ask.type, ask.text, ask.images) == (
        "prompt",
        "what is this",
        (ImageRef("url", "data:image/png,x"),),
    )


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[1, 2]",
        json.dumps({"header": {"action": "run-task"}}),
        json.dumps({"header": {"action": "jump"}, "payload": {"input": {"directive": "Start"}}}),
        json.dumps({"header": {"action": "continue-task"}, "payload": {"input": {}}}),
    ],
)
def test_malformed_client_frames_raise_invalid_parameter(raw: str) -> None:
    with pytest.raises(ProtocolError) as err:
        parse_client_message(raw)
    assert err.value.code == "InvalidParameter"


def test_image_entries_without_a_known_type_are_refused_when_the_frame_is_read() -> None:
    client = SDKClient()
    with pytest.raises(ProtocolError, match="base64") as err:
        client.respond("prompt", "q", RequestToRespondParameters(images=[{"type": "ftp"}]))
    assert err.value.code == "InvalidParameter"
    with pytest.raises(ProtocolError, match=r"parameters\.images\[0\]"):
        client.update_info(RequestToRespondParameters(images=[{"type": "url", "value": 7}]))


# ----------------------------------------------------------------------------- session
def test_start_acknowledges_then_listens_and_every_frame_has_header_and_payload() -> None:
    session, client = DialogSession("dlg1"), SDKClient()
    out = session.receive(client.start())
    assert events(out) == ["task-started", "Started", "Listening"]
    for frame in out:
        assert isinstance(frame, Frame)
        assert set(frame.message) == {"header", "payload"}
        assert frame.message["header"]["task_id"] == TASK
    assert out[1].message["payload"]["output"]["dialog_id"] == "dlg1"
    assert session.state == "Listening"


def test_sdk_parser_dispatches_every_frame_of_a_round() -> None:
    seen: list[Any] = []

    class Recorder(MultiModalCallback):
        def on_error(self, error: Any) -> None:
            seen.append(("error", error))

        def on_state_changed(self, state: Any) -> None:
            seen.append(state.value)

        def on_responding_content(self, payload: Any) -> None:
            seen.append(payload["output"]["text"])

    response = _Response(dialog_state.StateMachine(), Recorder())
    session, client = DialogSession("dlg1"), SDKClient()
    frames = session.receive(client.start()) + session.receive(client.directive("SendSpeech"))
    frames += session.on_audio(b"\0\0" * 1600) + session.receive(client.directive("StopSpeech"))
    transcribe = frames[-1]
    assert isinstance(transcribe, Transcribe)
    out = session.on_transcript(transcribe.round, "one plus one equals what")
    respond = out[-1]
    assert isinstance(respond, Respond)
    out += session.on_reply(respond.round, "two")
    out += session.on_spoken(respond.round)
    for f in frames + out:
        if isinstance(f, Frame):
            response.handle_text_response(json.dumps(f.message))
    assert not [s for s in seen if isinstance(s, tuple)]  # nothing reached on_error
    assert seen[-3:] == ["two", "two", "Listening"]
    assert "Thinking" in seen and "Responding" in seen


def test_push2talk_round_follows_the_documented_order() -> None:
    session, client = started()
    assert session.on_audio(b"\1\0" * 100) == []  # no SendSpeech yet: ignored
    assert session.receive(client.directive("SendSpeech")) == []
    assert events(session.on_audio(b"\1\0" * 1600)) == ["SpeechStarted"]
    assert session.on_audio(b"\1\0" * 1600) == []
    out = session.receive(client.directive("StopSpeech"))
    assert isinstance(out[-1], Transcribe) and len(out[-1].pcm) == 6400
    names = run_to_end(session, out[-1], "one plus one equals what", "one plus one equals two")
    assert names == [
        "SpeechContent", "SpeechContent", "SpeechContent", "SpeechContent", "SpeechContent",
        "SpeechEnded", "Thinking", "Respond",
        "Responding", "RespondingStarted",
        "RespondingContent", "RespondingContent", "RespondingContent", "RespondingContent",
        "RespondingContent", "Speak",
        "RespondingContent", "RespondingEnded", "Listening",
    ]  # fmt: skip


def test_speech_content_is_cumulative_and_finishes_once() -> None:
    session, client = started()
    session.receive(client.directive("SendSpeech"))
    action = session.receive(client.directive("StopSpeech"))[-1]
    out = [
        f for f in session.on_transcript(action.round, "hello there you") if isinstance(f, Frame)
    ]
    contents = [f.message["payload"]["output"] for f in out if f.event == "SpeechContent"]
    assert [(c["text"], c["finished"]) for c in contents] == [
        ("hello", False),
        ("hello there", False),
        ("hello there you", True),
    ]


def test_nothing_recognised_ends_the_utterance_without_a_round() -> None:
    session, client = started()
    session.receive(client.directive("SendSpeech"))
    action = session.receive(client.directive("StopSpeech"))[-1]
    assert events(session.on_transcript(action.round, "")) == ["SpeechContent", "SpeechEnded"]
    assert session.state == "Listening"


def test_listening_waits_for_local_responding_ended_when_playback_is_local() -> None:
    session, client = started()
    session.receive(client.respond("transcript", "hello"))
    session.receive(client.directive("LocalRespondingStarted"))
    assert events(session.on_spoken(session.round)) == ["RespondingContent", "RespondingEnded"]
    assert session.state == "Responding"
    assert events(session.receive(client.directive("LocalRespondingEnded"))) == ["Listening"]


def test_tap2talk_detects_speech_only_after_send_speech_and_vad_ends_the_turn() -> None:
    session, client = started("tap2talk")
    assert session.on_audio(b"\0\0" * 1600) == []
    assert events(session.receive(client.directive("SendSpeech"))) == ["ResetDetector"]
    assert isinstance(session.on_audio(b"\0\0" * 1600)[0], DetectSpeech)
    assert events(session.on_vad("speech_started")) == ["SpeechStarted"]
    out = session.on_vad("speech_stopped", b"\5\0" * 800)
    assert isinstance(out[-1], Transcribe) and out[-1].pcm == b"\5\0" * 800
    assert session.on_audio(b"\0\0" * 1600) == []  # the next utterance needs SendSpeech again


def test_duplex_speech_during_responding_barges_in_and_drops_the_old_round() -> None:
    session, _ = started("duplex")
    assert isinstance(session.on_audio(b"\0\0" * 1600)[0], DetectSpeech)
    session.on_vad("speech_started")
    first = session.on_vad("speech_stopped", b"\1\0" * 1600)[-1]
    respond = session.on_transcript(first.round, "tell me a story")[-1]
    speak = session.on_reply(respond.round, "once upon a time")[-1]
    assert session.state == "Responding"
    assert isinstance(session.on_audio(b"\0\0" * 1600)[0], DetectSpeech)  # still listening
    barge = session.on_vad("speech_started")
    assert events(barge) == ["StopSpeaking", "RespondingEnded", "Listening", "SpeechStarted"]
    assert session.on_spoken(speak.round) == []  # the old round's end is ignored
    nxt = session.on_vad("speech_stopped", b"\2\0" * 1600)[-1]
    assert isinstance(nxt, Transcribe) and nxt.round > speak.round


def test_request_to_speak_stops_the_answer_and_acknowledges() -> None:
    session, client = started()
    speak = session.receive(client.respond("transcript", "a long answer"))[-1]
    assert isinstance(speak, Speak)
    out = session.receive(client.directive("RequestToSpeak"))
    assert events(out) == ["StopSpeaking", "RequestAccepted", "RespondingEnded", "Listening"]
    assert isinstance(out[0], StopSpeaking)
    assert events(session.receive(client.directive("RequestToSpeak"))) == ["RequestAccepted"]


def test_transcript_request_speaks_without_asking_the_responder() -> None:
    session, client = started()
    out = session.receive(client.respond("transcript", "hello world"))
    assert "Respond" not in events(out)
    assert isinstance(out[-1], Speak) and out[-1].text == "hello world" and out[-1].rate == 48000


def test_prompt_with_images_passes_them_to_the_responder() -> None:
    session, client = started()
    params = RequestToRespondParameters(images=[{"type": "base64", "value": "AAAA"}])
    out = session.receive(client.respond("prompt", "what is this", params))
    assert events(out) == ["Thinking", "Respond"]
    assert out[-1].images == (ImageRef("base64", "AAAA"),) and out[-1].text == "what is this"


def test_visual_qa_commands_travel_as_a_json_string() -> None:
    session, client = started()
    respond = session.receive(client.respond("prompt", "what is in front of me"))[-1]
    commands = [{"name": "visual_qa", "params": [{"name": "shot", "value": "x"}]}]
    out = session.on_reply(respond.round, "let me look", "visual_qa", commands)
    content = next(f for f in out if isinstance(f, Frame) and f.event == "RespondingContent")
    extra = content.message["payload"]["output"]["extra_info"]
    assert isinstance(extra["commands"], str) and json.loads(extra["commands"]) == commands


def test_live_video_questions_use_the_latest_frame() -> None:
    session, client = started("duplex", video=True)
    videos = [{"action": "connect", "type": "voicechat_video_channel"}]
    connect = RequestToRespondParameters(biz_params=BizParams(videos=videos))
    assert session.receive(client.respond("prompt", "", connect)) == []
    for value in ("first", "second"):
        frame = RequestToRespondParameters(images=[{"type": "base64", "value": value}])
        assert session.receive(client.update_info(frame)) == []
    session.on_vad("speech_started")
    utterance = session.on_vad("speech_stopped", b"\1\0" * 1600)[-1]
    respond = session.on_transcript(utterance.round, "what colour is it")[-1]
    assert isinstance(respond, Respond) and respond.images == (ImageRef("base64", "second"),)


def test_heartbeat_is_answered_and_stop_finishes_the_task_and_closes() -> None:
    session, client = started()
    assert events(session.receive(client.directive("HeartBeat"))) == ["HeartBeat"]
    out = session.receive(client.directive("Stop"))
    assert events(out) == ["Stopped", "task-finished", "Close"]
    assert out[-1] == Close(1000, "stopped")
    assert session.receive(client.directive("HeartBeat")) == []


def test_a_directive_before_start_fails_the_task_and_closes() -> None:
    session = DialogSession("d")
    out = session.receive(SDKClient().directive("SendSpeech"))
    assert events(out) == ["task-failed", "Close"]
    assert out[0].message["header"]["error_code"] == "InvalidParameter"


def test_refused_start_reports_the_status_as_task_failed() -> None:
    session = DialogSession("d")
    out = session.refuse(SDKClient().start(), 429)
    header = out[0].message["header"]
    assert (header["event"], header["status_code"], header["task_id"]) == ("task-failed", 429, TASK)
    assert header["error_code"].startswith("Throttling")


def test_unknown_directive_is_an_error_event_and_the_session_goes_on() -> None:
    session, client = started()
    raw = json.loads(client.req.generate_common_direction_request("Dance", None))
    out = session.receive(parse_client_message(raw))
    assert events(out) == ["Error"]
    assert out[0].message["payload"]["output"]["error_code"] == "InvalidParameter"
    assert events(session.receive(client.directive("HeartBeat"))) == ["HeartBeat"]


def test_start_with_an_unknown_mode_fails() -> None:
    session = DialogSession("d")
    raw = json.loads(SDKClient().req.generate_start_request("Start", "", "a", _params("walkie")))
    assert events(session.receive(parse_client_message(raw))) == ["task-failed", "Close"]


def _params(mode: str) -> RequestParameters:
    return RequestParameters(
        upstream=Upstream(mode=mode), downstream=Downstream(), client_info=ClientInfo(user_id="u")
    )


# ----------------------------------------------------------------------------- client turn
def test_turn_collector_ignores_the_listening_before_the_turn() -> None:
    c = DialogTurnCollector()
    c.event("DialogStateChanged", {"state": "Listening"})
    assert not c.done
    c.event("SpeechStarted")
    c.event("SpeechContent", {"text": "hi", "finished": True})
    c.event("DialogStateChanged", {"state": "Thinking"})
    c.event("RespondingStarted")
    c.event("RespondingContent", {"text": "hello", "finished": False})
    c.event("RespondingContent", {"text": "hello you", "finished": True})
    c.event("RespondingEnded", {"usage": {"input_tokens": 3}})
    assert not c.done
    c.event("DialogStateChanged", {"state": "Listening"})
    assert (c.done, c.heard, c.text, c.status, c.usage) == (
        True,
        "hi",
        "hello you",
        "completed",
        {"input_tokens": 3},
    )


def test_turn_collector_reads_commands_and_marks_interrupted_turns_cancelled() -> None:
    c = DialogTurnCollector()
    c.event("RespondingStarted")
    c.event(
        "RespondingContent", {"text": "a", "extra_info": {"commands": '[{"name": "visual_qa"}]'}}
    )
    assert c.command("visual_qa") == {"name": "visual_qa"} and c.command("other") is None
    c.event("RequestAccepted")
    c.event("RespondingEnded")
    c.event("DialogStateChanged", {"state": "Listening"})
    assert c.done and c.status == "cancelled"


def test_reset_detector_is_only_for_tap2talk() -> None:
    session, client = started("push2talk")
    assert not any(
        isinstance(o, ResetDetector) for o in session.receive(client.directive("SendSpeech"))
    )


@pytest.mark.parametrize("mode", ["push2talk", "tap2talk"])
def test_an_utterance_past_the_cap_without_stop_speech_is_dropped_with_an_error_and_the_session_goes_on(
    mode: str,
) -> None:
    session, client = started(mode)
    session.receive(client.directive("SendSpeech"))
    second = b"\1\0" * session.options.input_rate
    out: list[Any] = []
    for _ in range(int(MAX_UTTERANCE_SECONDS) + 1):
        out = session.on_audio(second)
    names = events(out)
    assert names[-1] == "Error" and names[:-1] == (["ResetDetector"] if mode == "tap2talk" else [])
    error = out[-1].message["payload"]["output"]
    assert error["error_code"] == "InvalidParameter"
    assert "60 s" in error["error_message"] and "StopSpeech sooner" in error["error_message"]
    assert session.on_audio(second) == []  # no longer capturing: nothing more is held
    assert session.state == "Listening"
    session.receive(client.directive("SendSpeech"))
    session.on_audio(second)
    action = session.receive(client.directive("StopSpeech"))[-1]
    if mode == "push2talk":
        assert isinstance(action, Transcribe) and action.pcm == second
