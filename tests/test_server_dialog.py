"""The local server's MultiModalDialog route, driven by the *unmodified* dashscope SDK as the dialog sample does
(and by a raw WebSocket where the SDK hides what the server sent). Answers are checked by their
words: the reply text, and the TTS audio recognised again by the engine."""

from __future__ import annotations

import base64
import io
import json
import queue
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from conftest import timeout
from dashscope.multimodal.multimodal_dialog import MultiModalCallback, MultiModalDialog
from dashscope.multimodal.multimodal_request_params import (
    BizParams,
    ClientInfo,
    Device,
    Downstream,
    RequestParameters,
    RequestToRespondParameters,
    Upstream,
)
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from nbtoolkit.audio.clip import Clip
from nbtoolkit.local import Faults

QUESTION = "one plus one equals what"
LONG_TEXT = (
    "this is a long answer that keeps going for a while so that there is time to interrupt it "
    "before the end of the sentence is reached by the speaker"
)


class Recorder(MultiModalCallback):
    """The dialog sample's ChatCallback, recording every callback on a queue."""

    def __init__(self) -> None:
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.log: list[tuple[str, Any]] = []
        self.audio = bytearray()

    def _put(self, name: str, value: Any = None) -> None:
        self.events.put((name, value))

    def on_started(self, dialog_id: str) -> None:
        self._put("started", dialog_id)

    def on_state_changed(self, state: Any) -> None:
        self._put("state", state.value)

    def on_speech_audio_data(self, data: bytes) -> None:
        self._put("audio", bytes(data))

    def on_error(self, error: Any) -> None:
        self._put("error", error)

    def on_close(self, close_status_code: int, close_msg: str) -> None:
        self._put("close", close_status_code)

    def on_speech_started(self) -> None:
        self._put("speech_started")

    def on_speech_ended(self) -> None:
        self._put("speech_ended")

    def on_speech_content(self, payload: Any) -> None:
        self._put("speech_content", payload["output"])

    def on_responding_started(self) -> None:
        self._put("responding_started")

    def on_responding_content(self, payload: Any) -> None:
        self._put("responding_content", payload["output"])

    def on_responding_ended(self, payload: Any) -> None:
        self._put("responding_ended", payload)

    def on_request_accepted(self) -> None:
        self._put("request_accepted")

    def on_stopped(self) -> None:
        self._put("stopped")

    def wait(self, pred: Callable[[str, Any], bool], seconds: float = 20) -> tuple[str, Any]:
        """Record events until one matches ``pred``; fail after a bounded wait."""
        while True:
            try:
                name, value = self.events.get(timeout=timeout(seconds))
            except queue.Empty:
                pytest.fail(f"no matching event within {seconds} s; saw {self.names()[-12:]}")
            if name == "audio":
                self.audio += value
            self.log.append((name, value))
            if pred(name, value):
                return name, value

    def wait_state(self, state: str) -> None:
        self.wait(lambda n, v: n == "state" and v == state)

    def names(self) -> list[str]:
        return [n if n != "state" else f"state:{v}" for n, v in self.log if n != "audio"]

    def last(self, name: str) -> Any:
        return next(v for n, v in reversed(self.log) if n == name)


@contextmanager
def sdk_dialog(
    server: Any, mode: str = "push2talk", *, video: bool = False, rate: int = 48000
) -> Iterator[tuple[MultiModalDialog, Recorder]]:
    """The dialog sample's MultiModalConversation set-up with the local server's URL and token."""
    cb = Recorder()
    params = RequestParameters(
        upstream=Upstream(
            type="AudioAndVideo" if video else "AudioOnly", mode=mode, audio_format="pcm"
        ),
        downstream=Downstream(voice="longxiaochun_v2", sample_rate=rate),
        client_info=ClientInfo(user_id="demo_user", device=Device(uuid="demo_device")),
    )
    conv = MultiModalDialog(
        app_id="your_app_id",
        workspace_id="your_workspace_id",
        url=server.endpoints.websocket_base,
        request_params=params,
        multimodal_callback=cb,
        api_key=server.token.reveal(),
        model="multimodal-dialog",
    )
    conv.start("")
    cb.wait_state("Listening")
    try:
        yield conv, cb
    finally:
        conv.close()


@pytest.fixture(scope="module")
def question_pcm(engine: Any, tmp_path_factory: Any) -> bytes:
    """The dialog sample reads its question from a PCM file: make one with the engine's TTS."""
    path = tmp_path_factory.mktemp("dialog") / "question.pcm"
    path.write_bytes(Clip(engine.synthesize(QUESTION, rate=16000), 16000).to_pcm())
    return path.read_bytes()


def frames(pcm: bytes, size: int = 3200) -> Iterator[bytes]:
    for i in range(0, len(pcm), size):
        yield pcm[i : i + size]


SILENCE = bytes(3200 * 15)  # 1.5 s, longer than the VAD's end-of-speech silence


def heard_in(engine: Any, pcm: bytes, rate: int) -> list[str]:
    """The words the engine's open-vocabulary ASR recognises in TTS audio received at ``rate``
    (its command grammar would stop at "... equals")."""
    clip = Clip.from_pcm(pcm, rate).resample(16000)
    return words(engine.recognize(clip.samples, 16000, mode="auto").text)


def words(text: str) -> list[str]:
    return re.sub(r"[^\w\s]", " ", text.lower()).split()


def jpeg(colour: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (160, 120), colour).save(buf, "JPEG")
    return buf.getvalue()


def b64_image(colour: tuple[int, int, int]) -> dict[str, str]:
    return {"type": "base64", "value": base64.b64encode(jpeg(colour)).decode()}


def answer_text(cb: Recorder) -> str:
    return str(cb.last("responding_content")["text"])


# ----------------------------------------------------------------------------- modes
def test_push2talk_seed_flow_answers_two_in_text_and_48k_speech(server, engine, question_pcm):
    with sdk_dialog(server) as (conv, cb):
        conv.start_speech()
        for chunk in frames(question_pcm):
            conv.send_audio_data(chunk)
        if conv.get_conversation_mode() == "push2talk":
            conv.stop_speech()
        cb.wait(lambda n, v: n == "responding_ended")
        cb.wait_state("Listening")
        final = cb.last("responding_content")
        heard = [v for n, v in cb.log if n == "speech_content"][-1]
    assert heard["finished"] and "plus" in heard["text"]
    assert final["finished"] and "two" in words(final["text"])
    names = cb.names()
    order = ["speech_started", "speech_ended", "state:Thinking", "state:Responding"]
    order += ["responding_started", "responding_ended", "state:Listening"]
    seen = [n for n in names if n in order]
    assert seen[seen.index("speech_started") :] == order
    assert len(cb.audio) > 48000  # more than 0.5 s of 48 kHz PCM16
    assert "two" in heard_in(engine, bytes(cb.audio), 48000)
    assert not [v for n, v in cb.log if n == "error"]


def test_tap2talk_turn_is_ended_by_server_vad_without_stop_speech(server, question_pcm):
    with sdk_dialog(server, "tap2talk") as (conv, cb):
        conv.start_speech()
        for chunk in frames(question_pcm + SILENCE):
            conv.send_audio_data(chunk)
        cb.wait(lambda n, v: n == "speech_ended")
        cb.wait(lambda n, v: n == "responding_ended")
        cb.wait_state("Listening")
    assert "two" in words(answer_text(cb))


def test_duplex_speech_during_the_answer_barges_in_and_is_answered_next(
    server, engine, question_pcm
):
    full = len(engine.synthesize(LONG_TEXT, rate=16000)) * 2
    with sdk_dialog(server, "duplex", rate=16000) as (conv, cb):
        conv.request_to_respond("transcript", LONG_TEXT)
        cb.wait(lambda n, v: n == "audio")  # the answer is being spoken
        for chunk in frames(question_pcm + SILENCE):
            conv.send_audio_data(chunk)
        cb.wait(lambda n, v: n == "speech_started")
        interrupted_at = len(cb.audio)
        cb.wait(lambda n, v: n == "responding_content" and "two" in words(v["text"]))
        cb.wait_state("Listening")
    names = cb.names()
    first_end = names.index("responding_ended")
    assert names[first_end : first_end + 3] == [
        "responding_ended",
        "state:Listening",
        "speech_started",
    ]
    events = [(n, v) for n, v in cb.log if n != "audio"]
    first_answer = [v for n, v in events[:first_end] if n == "responding_content"]
    assert first_answer and not any(c["finished"] for c in first_answer)  # cut before the end
    assert interrupted_at < full


# ----------------------------------------------------------------------------- requests
def test_visual_qa_command_then_image_gets_an_answer_about_the_image(server):
    with sdk_dialog(server) as (conv, cb):
        conv.request_to_respond("prompt", "what is in front of me")
        cb.wait(lambda n, v: n == "responding_ended")
        cb.wait_state("Listening")
        commands = cb.last("responding_content")["extra_info"]["commands"]
        assert isinstance(commands, str)
        assert json.loads(commands)[0]["name"] == "visual_qa"
        params = RequestToRespondParameters(images=[b64_image((220, 20, 20))])
        conv.request_to_respond("prompt", "what is in front of me", parameters=params)
        cb.wait(lambda n, v: n == "responding_ended")
        cb.wait_state("Listening")
    assert "red" in words(answer_text(cb))


def test_transcript_request_is_spoken_verbatim_without_an_llm_round(server, engine):
    text = "hello from the offline engine"
    with sdk_dialog(server, rate=24000) as (conv, cb):
        conv.request_to_respond("transcript", text, None)
        cb.wait(lambda n, v: n == "responding_ended")
        cb.wait_state("Listening")
    assert answer_text(cb) == text
    assert "hello" in heard_in(engine, bytes(cb.audio), 24000)


def test_live_ai_voice_question_is_answered_about_the_latest_video_frame(server, engine):
    question = Clip(engine.synthesize("what is in front of me", rate=16000), 16000).to_pcm()
    with sdk_dialog(server, "duplex", video=True) as (conv, cb):
        videos = [{"action": "connect", "type": "voicechat_video_channel"}]
        conv.request_to_respond(
            "prompt", "", RequestToRespondParameters(biz_params=BizParams(videos=videos))
        )
        for colour in ((220, 20, 20), (20, 20, 220)):  # the blue frame is the latest
            conv.update_info(RequestToRespondParameters(images=[b64_image(colour)]))
        for chunk in frames(question + SILENCE):
            conv.send_audio_data(chunk)
        cb.wait(lambda n, v: n == "responding_ended")
        cb.wait_state("Listening")
    assert "blue" in words(answer_text(cb)) and "red" not in words(answer_text(cb))


def test_request_to_speak_stops_the_answer_and_listens(server, engine):
    full = len(engine.synthesize(LONG_TEXT, rate=16000)) * 2
    with sdk_dialog(server, rate=16000) as (conv, cb):
        conv.request_to_respond("transcript", LONG_TEXT)
        cb.wait(lambda n, v: n == "audio")
        conv.interrupt()
        cb.wait(lambda n, v: n == "request_accepted")
        cb.wait_state("Listening")
        conv.send_heart_beat()  # the session goes on after the interruption
        conv.request_to_respond("transcript", "still here")
        cb.wait(lambda n, v: n == "responding_content" and v["text"] == "still here")
        cb.wait_state("Listening")
    first_answer = cb.names().index("request_accepted")
    assert first_answer > 0
    assert len(cb.audio) < full  # both answers together are shorter than the long one


def test_stop_reports_stopped_and_the_sdk_closes(server):
    with sdk_dialog(server) as (conv, cb):
        conv.stop()
        cb.wait(lambda n, v: n == "stopped")
        cb.wait(lambda n, v: n == "close")
    assert not [v for n, v in cb.log if n == "error"]


def test_unreadable_image_url_is_a_clear_error_event(server):
    with sdk_dialog(server) as (conv, cb):
        image = {"type": "url", "value": "https://example.com/cat.jpg"}
        conv.request_to_respond(
            "prompt", "what is this", RequestToRespondParameters(images=[image])
        )
        _, error = cb.wait(lambda n, v: n == "error")
        cb.wait_state("Listening")
    output = json.loads(error)["payload"]["output"]
    assert output["event"] == "Error" and output["error_code"] == "InvalidParameter"
    assert "base64" in output["error_message"]


def test_refused_start_reaches_on_error_as_task_failed(faulty_server):
    faulty_server.faults = Faults(status=429)
    cb = Recorder()
    params = RequestParameters(
        upstream=Upstream(mode="push2talk"), downstream=Downstream(), client_info=ClientInfo("u")
    )
    conv = MultiModalDialog(
        app_id="a",
        request_params=params,
        multimodal_callback=cb,
        url=faulty_server.endpoints.websocket_base,
        api_key=faulty_server.token.reveal(),
    )
    conv.start("")
    _, error = cb.wait(lambda n, v: n == "error")
    cb.wait(lambda n, v: n == "close")
    header = json.loads(error)["header"]
    assert header["event"] == "task-failed" and header["status_code"] == 429


# ----------------------------------------------------------------------------- raw socket
@contextmanager
def raw_session(server: Any, token: str | None = None) -> Iterator[Any]:
    url = server.endpoints.websocket_base
    headers = {"Authorization": f"Bearer {token or server.token.reveal()}"}
    with ws_connect(url, additional_headers=headers, open_timeout=timeout(10)) as ws:
        yield ws


def envelope(action: str, directive: str, parameters: Any = None) -> str:
    payload: dict[str, Any] = {"model": None, "input": {"directive": directive, "dialog_id": None}}
    if parameters is not None:
        payload["parameters"] = parameters
    return json.dumps({"header": {"action": action, "task_id": "t" * 32}, "payload": payload})


def receive_json(ws: Any) -> dict[str, Any]:
    msg = ws.recv(timeout=timeout(10))
    assert isinstance(msg, str)
    doc: dict[str, Any] = json.loads(msg)
    assert set(doc) == {"header", "payload"}
    return doc


def test_heartbeat_is_answered_and_stop_ends_with_task_finished_and_close(server):
    start = {"upstream": {"mode": "push2talk"}, "downstream": {"sample_rate": 16000}}
    with raw_session(server) as ws:
        ws.send(envelope("run-task", "Start", start))
        assert receive_json(ws)["header"]["event"] == "task-started"
        assert receive_json(ws)["payload"]["output"]["event"] == "Started"
        assert receive_json(ws)["payload"]["output"]["state"] == "Listening"
        ws.send(envelope("continue-task", "HeartBeat"))
        assert receive_json(ws)["payload"]["output"]["event"] == "HeartBeat"
        ws.send("{broken")
        assert receive_json(ws)["payload"]["output"]["error_code"] == "InvalidParameter"
        ws.send(envelope("finish-task", "Stop"))
        assert receive_json(ws)["payload"]["output"]["event"] == "Stopped"
        assert receive_json(ws)["header"]["event"] == "task-finished"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=timeout(10))
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000


def test_wrong_token_is_refused_before_the_session(server):
    with pytest.raises(ConnectionClosed) as refused, raw_session(server, token="wrong") as ws:
        ws.send(envelope("run-task", "Start", {"upstream": {"mode": "push2talk"}}))
        ws.recv(timeout=timeout(10))
    assert refused.value.rcvd is not None and refused.value.rcvd.code == 1008


def test_tap2talk_pause_inside_a_question_is_heard_whole(server, engine):
    """The server starts recognising at the pause; the resumed speech replaces that guess."""
    pause = bytes(6400)  # 0.2 s, plus eSpeak's own ~0.3 s: under the VAD window, over its tail
    first = Clip.from_array(engine.synthesize("what is two", rate=16000), 16000).to_pcm()
    second = Clip.from_array(engine.synthesize("times three", rate=16000), 16000).to_pcm()
    with sdk_dialog(server, "tap2talk") as (conv, cb):
        conv.start_speech()
        for chunk in frames(bytes(3200) + first + pause + second + SILENCE):
            conv.send_audio_data(chunk)
        cb.wait(lambda n, v: n == "responding_ended")
        cb.wait_state("Listening")
    heard = [v for n, v in cb.log if n == "speech_content" and v["finished"]]
    assert [h["text"] for h in heard] == ["what is two times three"]
    assert "six" in words(answer_text(cb))
    names = cb.names()
    assert names.index("speech_ended") < names.index("state:Thinking")
