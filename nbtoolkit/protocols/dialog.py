"""MultiModalDialog WebSocket protocol (sans-I/O): envelopes, the server's session, the client's turn.

Wire facts are in docs/protocols.md#dialog-messages. In short:

* the client sends ``{"header": {action, task_id, …}, "payload": {…, "input": {"directive": …}}}``
  text frames and 16 kHz PCM16 binary frames; after ``Start`` the SDK sends ``null`` for ``model``,
  ``app_id``, ``workspace_id`` and ``dialog_id``, so a session is keyed by connection / task id;
* the server answers with ``{"header": {task_id, event, attributes}, "payload": {"output": {event,
  dialog_id, …}}}`` text frames (both keys on *every* frame, or the SDK loses the frame) and TTS audio
  as binary frames; dialog states are exactly ``Idle``/``Listening``/``Thinking``/``Responding``.

:class:`DialogSession` is the server's state machine. It does no I/O and calls no engine: each method
returns a list of :data:`Output` — :class:`Frame` (a text frame to send) or an action the route
performs (:class:`DetectSpeech`, :class:`Transcribe`, :class:`Respond`, :class:`Speak`, …), feeding
the result back through ``on_vad`` / ``on_transcript`` / ``on_reply`` / ``on_spoken``. Results of a
round that was interrupted meanwhile are ignored (each action carries its ``round``).

:class:`DialogTurnCollector` is the client's half: it folds SDK callbacks into one turn.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nbtoolkit.errors import ProtocolError
from nbtoolkit.protocols.errors import code_for_status
from nbtoolkit.protocols.params import (
    MAX_UTTERANCE_SECONDS,
    dialog_parameters_problem,
    dialog_start_problem,
)

__all__ = [
    "INPUT_RATE",
    "MAX_IMAGE_BYTES",
    "MODES",
    "STATES",
    "ClientMessage",
    "Close",
    "DetectSpeech",
    "DialogSession",
    "DialogTurnCollector",
    "Frame",
    "ImageRef",
    "Output",
    "ResetDetector",
    "Respond",
    "Speak",
    "StartOptions",
    "StopSpeaking",
    "Transcribe",
    "error_for_status",
    "parse_client_message",
    "result_frame",
    "task_failed",
    "task_frame",
    "usage_payload",
]

STATES = ("Idle", "Listening", "Thinking", "Responding")
MODES = ("push2talk", "tap2talk", "duplex")
#: Images (VQA, video frames) must be smaller than this (docs/protocols.md#dialog-images).
MAX_IMAGE_BYTES = 180 * 1024
INPUT_RATE = 16000

_ACTIONS = ("run-task", "continue-task", "finish-task")


# --------------------------------------------------------------------------- client messages
@dataclass(frozen=True)
class ImageRef:
    """An image in ``parameters.images``: ``type`` is "base64" or "url"."""

    type: str
    value: str


@dataclass(frozen=True)
class ClientMessage:
    """One parsed client text frame."""

    action: str
    task_id: str
    directive: str
    dialog_id: str | None = None
    type: str | None = None  # RequestToRespond: "prompt" or "transcript"
    text: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)

    @property
    def images(self) -> tuple[ImageRef, ...]:
        """``parameters.images``, whose entries :func:`parse_client_message` has checked."""
        return tuple(ImageRef(i["type"], i["value"]) for i in self.parameters.get("images") or ())

    @property
    def video_connect(self) -> bool:
        """True when ``biz_params.videos`` asks to connect the video channel (LiveAI)."""
        biz = self.parameters.get("biz_params")
        videos = biz.get("videos") if isinstance(biz, Mapping) else None
        return isinstance(videos, list) and any(
            isinstance(v, Mapping) and v.get("action") == "connect" for v in videos
        )


def _fail(problem: str, fix: str) -> ProtocolError:
    return ProtocolError(problem, fix, code="InvalidParameter")


def parse_client_message(raw: str | bytes | Mapping[str, Any]) -> ClientMessage:
    """Parse a client text frame; :class:`ProtocolError` (code InvalidParameter) when malformed."""
    try:
        doc = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
    except (ValueError, RecursionError) as exc:
        raise _fail(
            f"The frame is not JSON ({exc})", "send one JSON document per text frame"
        ) from exc
    if not isinstance(doc, Mapping):
        raise _fail("The frame is not a JSON object", 'send {"header": …, "payload": …}')
    header, payload = doc.get("header"), doc.get("payload")
    if not isinstance(header, Mapping) or not isinstance(payload, Mapping):
        raise _fail("The frame lacks header or payload", 'send {"header": …, "payload": …}')
    action = header.get("action")
    if action not in _ACTIONS:
        raise _fail(f"Unknown header.action {action!r}", f"use one of {', '.join(_ACTIONS)}")
    inp = payload.get("input")
    if not isinstance(inp, Mapping) or not isinstance(inp.get("directive"), str):
        raise _fail("payload.input.directive is missing", "name the directive, e.g. SendSpeech")
    params = payload.get("parameters")
    params = {} if params is None else params
    problem = dialog_parameters_problem(params)
    if problem is not None:
        raise ProtocolError(problem.problem, problem.fix, code="InvalidParameter")
    return ClientMessage(
        action=str(action),
        task_id=str(header.get("task_id") or ""),
        directive=inp["directive"],
        dialog_id=inp.get("dialog_id") or None,
        type=inp.get("type"),
        text=str(inp.get("text") or ""),
        parameters=params,
    )


@dataclass(frozen=True)
class StartOptions:
    """What ``Start`` asked for (``parameters.upstream`` / ``downstream``)."""

    mode: str = "tap2talk"
    video: bool = False  # upstream.type == "AudioAndVideo"
    input_rate: int = INPUT_RATE
    output_rate: int = 24000
    voice: str = ""

    @classmethod
    def from_parameters(cls, params: Mapping[str, Any]) -> StartOptions:
        problem = dialog_start_problem(params)
        if problem is not None:
            raise ProtocolError(problem.problem, problem.fix, code="InvalidParameter")
        up = params.get("upstream") or {}
        down = params.get("downstream") or {}
        # opus and mp3 are the service's; this implementation speaks PCM only
        if (up.get("audio_format") or "pcm") != "pcm":
            raise _fail("Only PCM upstream audio is supported here", 'use audio_format="pcm"')
        if (down.get("audio_format") or "pcm") != "pcm":
            raise _fail("Only PCM downstream audio is supported here", 'use audio_format="pcm"')
        return cls(
            mode=up.get("mode") or "tap2talk",  # the SDK's default
            video=up.get("type") == "AudioAndVideo",
            input_rate=int(up.get("sample_rate") or INPUT_RATE),
            output_rate=int(down.get("sample_rate") or 24000),
            voice=down.get("voice") or "",
        )


# --------------------------------------------------------------------------- server frames
def result_frame(
    task_id: str,
    event: str,
    dialog_id: str,
    *,
    usage: Mapping[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A ``result-generated`` frame carrying ``payload.output.event``."""
    payload: dict[str, Any] = {"output": {"event": event, "dialog_id": dialog_id, **fields}}
    if usage is not None:
        payload["usage"] = dict(usage)
    return {
        "header": {"task_id": task_id, "event": "result-generated", "attributes": {}},
        "payload": payload,
    }


def task_frame(task_id: str, event: str) -> dict[str, Any]:
    """A bare ``task-started`` / ``task-finished`` ack (no ``output``: the SDK ignores it)."""
    return {"header": {"task_id": task_id, "event": event, "attributes": {}}, "payload": {}}


def task_failed(task_id: str, code: str, message: str, status: int | None = None) -> dict[str, Any]:
    """``task-failed``: the SDK hands the raw JSON to ``on_error``; the server then closes."""
    header: dict[str, Any] = {
        "task_id": task_id,
        "event": "task-failed",
        "error_code": code,
        "error_message": message,
        "attributes": {},
    }
    if status is not None:
        header["status_code"] = status
    return {"header": header, "payload": {}}


def error_for_status(status: int) -> tuple[str, str]:
    """DashScope's ``(error_code, error_message)`` for an HTTP-like status."""
    code = code_for_status(status)
    return code, f"{code} (status {status})"


def usage_payload(
    *, input_text: int, input_audio: int, input_image: int, output_text: int, output_audio: int
) -> dict[str, Any]:
    """``payload.usage`` in the shape of DashScope's realtime ``usage`` (details by modality)."""
    return {
        "input_tokens": input_text + input_audio + input_image,
        "output_tokens": output_text + output_audio,
        "input_tokens_details": {
            "text_tokens": input_text,
            "audio_tokens": input_audio,
            "image_tokens": input_image,
        },
        "output_tokens_details": {"text_tokens": output_text, "audio_tokens": output_audio},
    }


# --------------------------------------------------------------------------- session outputs
@dataclass(frozen=True)
class Frame:
    """A text frame to send (serialise ``message`` as JSON)."""

    message: dict[str, Any]

    @property
    def event(self) -> str:
        output = self.message["payload"].get("output") or {}
        return str(output.get("event") or self.message["header"]["event"])


@dataclass(frozen=True)
class DetectSpeech:
    """Feed ``pcm`` (16 kHz) to the VAD and pass each event to :meth:`DialogSession.on_vad`."""

    pcm: bytes


@dataclass(frozen=True)
class ResetDetector:
    """Start a fresh VAD stream (a new tap2talk utterance)."""


@dataclass(frozen=True)
class Transcribe:
    """Recognise ``pcm`` and call :meth:`DialogSession.on_transcript` with the text."""

    round: int
    pcm: bytes
    rate: int = INPUT_RATE


@dataclass(frozen=True)
class Respond:
    """Answer ``text`` (about ``images``) and call :meth:`DialogSession.on_reply`."""

    round: int
    text: str
    images: tuple[ImageRef, ...] = ()


@dataclass(frozen=True)
class Speak:
    """Stream TTS of ``text`` at ``rate`` as binary frames, then call :meth:`DialogSession.on_spoken`."""

    round: int
    text: str
    rate: int


@dataclass(frozen=True)
class StopSpeaking:
    """Abandon the current round's engine work and TTS stream (barge-in, RequestToSpeak)."""


@dataclass(frozen=True)
class Close:
    """Close the WebSocket with ``code``."""

    code: int = 1000
    reason: str = ""


Output = Frame | DetectSpeech | ResetDetector | Transcribe | Respond | Speak | StopSpeaking | Close


# --------------------------------------------------------------------------- server session
class DialogSession:
    """The server side of one dialog connection (see the module docstring).

    Engine actions (:class:`Transcribe`, :class:`Respond`, :class:`Speak`) are always the last
    output of a list, so a route can run them in one task per round.
    """

    def __init__(self, dialog_id: str) -> None:
        self.dialog_id = dialog_id
        self.task_id = ""
        self.options = StartOptions()
        self.state = "Idle"
        self.round = 0
        self.started = False
        self.stopped = False
        self._capturing = False  # between SendSpeech and the end of the utterance
        self._heard_speech = False  # SpeechStarted sent for this utterance
        self._audio = bytearray()
        self._local_playback = False  # LocalRespondingStarted seen this round
        self._awaiting_local_end = False
        self._video = False
        self.latest_frame: ImageRef | None = None
        self._text = ""  # reply text of the current round
        self._extra: dict[str, Any] = {}

    # ------------------------------------------------------------- helpers
    def _frame(self, event: str, **fields: Any) -> Frame:
        return Frame(result_frame(self.task_id, event, self.dialog_id, **fields))

    def _set_state(self, state: str) -> list[Output]:
        if state == self.state:
            return []
        self.state = state
        return [self._frame("DialogStateChanged", state=state)]

    def error(self, code: str, message: str) -> list[Output]:
        """An ``Error`` event (the session continues)."""
        return [self._frame("Error", error_code=code, error_message=message, error_name=code)]

    def fail(self, code: str, message: str, status: int | None = None) -> list[Output]:
        """``task-failed`` then close: the session is over."""
        self.stopped = True
        return [Frame(task_failed(self.task_id, code, message, status)), Close(1000, code)]

    def refuse(self, msg: ClientMessage, status: int) -> list[Output]:
        """Refuse ``Start`` as an HTTP ``status`` would (fault injection, quota…)."""
        self.task_id = msg.task_id
        code, message = error_for_status(status)
        return self.fail(code, message, status)

    def _interrupt(self) -> list[Output]:
        """Abandon a round in Thinking/Responding and go back to Listening."""
        if self.state not in ("Thinking", "Responding"):
            return []
        self.round += 1
        out: list[Output] = [StopSpeaking()]
        if self.state == "Responding":
            out.append(self._frame("RespondingEnded"))
        self._awaiting_local_end = False
        return out + self._set_state("Listening")

    def _begin_capture(self) -> list[Output]:
        self._capturing, self._heard_speech = True, False
        self._audio.clear()
        return [ResetDetector()] if self.options.mode == "tap2talk" else []

    def _with_frame(self, images: tuple[ImageRef, ...]) -> tuple[ImageRef, ...]:
        """The given images, else the latest video frame (LiveAI questions are about it)."""
        if not images and self._video and self.latest_frame is not None:
            return (self.latest_frame,)
        return images

    def _think(self, text: str, images: tuple[ImageRef, ...]) -> list[Output]:
        self.round += 1
        self._local_playback = False
        return [*self._set_state("Thinking"), Respond(self.round, text, images)]

    # ------------------------------------------------------------- client input
    def receive(self, msg: ClientMessage) -> list[Output]:
        """A client text frame."""
        if self.stopped:  # failed or stopped: the route is closing the connection
            return []
        if not self.started:
            if msg.directive != "Start" or msg.action != "run-task":
                self.task_id = msg.task_id
                return self.fail(
                    "InvalidParameter", f"{msg.directive} before Start: send Start first"
                )
            return self._start(msg)
        handler = getattr(self, f"_on_{msg.directive}", None)
        if handler is None:
            return self.error("InvalidParameter", f"Unknown directive {msg.directive!r}")
        try:
            out: list[Output] = handler(msg)
        except ProtocolError as exc:  # e.g. an image entry we cannot use
            return self.error(exc.code or "InvalidParameter", str(exc))
        return out

    def _start(self, msg: ClientMessage) -> list[Output]:
        self.task_id = msg.task_id
        try:
            self.options = StartOptions.from_parameters(msg.parameters)
        except ProtocolError as exc:
            return self.fail("InvalidParameter", exc.problem + (f" — {exc.fix}" if exc.fix else ""))
        self.started = True
        if msg.dialog_id:  # continuing an earlier dialog
            self.dialog_id = msg.dialog_id
        out: list[Output] = [Frame(task_frame(self.task_id, "task-started"))]
        out.append(self._frame("Started"))
        out += self._set_state("Listening")
        if self.options.mode == "duplex":
            self._capturing = True
        return out

    def _on_Start(self, msg: ClientMessage) -> list[Output]:
        return self.error("InvalidParameter", "Start was already received on this connection")

    def _on_SendSpeech(self, msg: ClientMessage) -> list[Output]:
        if self.options.mode == "duplex":
            return []  # duplex listens all the time
        return self._interrupt() + self._begin_capture()

    def _on_StopSpeech(self, msg: ClientMessage) -> list[Output]:
        if not self._capturing or self.options.mode == "duplex":
            return []
        return self._end_utterance(bytes(self._audio))

    def _on_RequestToSpeak(self, msg: ClientMessage) -> list[Output]:
        out = self._interrupt()  # [StopSpeaking, RespondingEnded?, Listening] or []
        return [*out[:1], self._frame("RequestAccepted"), *out[1:]]

    def _on_RequestToRespond(self, msg: ClientMessage) -> list[Output]:
        images = msg.images  # validates the entries
        out = self._interrupt()
        if msg.video_connect:
            self._video = True
            if not msg.text:
                return out
        if msg.type == "transcript":
            if not msg.text:
                return out + self.error(
                    "InvalidParameter", "RequestToRespond transcript needs text"
                )
            self.round += 1
            return out + self.on_reply(self.round, msg.text)
        if msg.type != "prompt":
            return out + self.error(
                "InvalidParameter", f"RequestToRespond type {msg.type!r}: use prompt or transcript"
            )
        if not msg.text and not images:
            return out + self.error(
                "InvalidParameter", "RequestToRespond prompt needs text or images"
            )
        return out + self._think(msg.text, self._with_frame(images))

    def _on_UpdateInfo(self, msg: ClientMessage) -> list[Output]:
        images = msg.images
        if images:
            self.latest_frame = images[-1]
        return []

    def _on_HeartBeat(self, msg: ClientMessage) -> list[Output]:
        return [self._frame("HeartBeat")]

    def _on_LocalRespondingStarted(self, msg: ClientMessage) -> list[Output]:
        self._local_playback = True
        return []

    def _on_LocalRespondingEnded(self, msg: ClientMessage) -> list[Output]:
        if not self._awaiting_local_end:
            self._local_playback = False
            return []
        self._awaiting_local_end = self._local_playback = False
        return self._set_state("Listening")

    def _on_Stop(self, msg: ClientMessage) -> list[Output]:
        out = self._interrupt()
        self.stopped = True
        return [
            *out[:1],
            self._frame("Stopped"),
            Frame(task_frame(self.task_id, "task-finished")),
            Close(1000, "stopped"),
        ]

    def on_audio(self, pcm: bytes) -> list[Output]:
        """A binary frame of 16 kHz PCM16 from the client."""
        if self.stopped or not self.started:
            return []
        mode = self.options.mode
        if mode == "duplex":
            return [DetectSpeech(pcm)] if self.state != "Idle" else []
        if not self._capturing:
            return []  # audio outside SendSpeech…end is ignored, as the cloud does
        self._audio += pcm
        if len(self._audio) > MAX_UTTERANCE_SECONDS * 2 * self.options.input_rate:
            return self._too_long()
        if mode == "tap2talk":
            return [DetectSpeech(pcm)]
        if not self._heard_speech:
            self._heard_speech = True
            return [self._frame("SpeechStarted")]
        return []

    def _too_long(self) -> list[Output]:
        """The utterance passed the cap before StopSpeech: it is dropped (the server holds no more
        than one utterance's audio) and the client told, as the cloud's recogniser does."""
        self._capturing = self._heard_speech = False
        self._audio.clear()
        out: list[Output] = [ResetDetector()] if self.options.mode == "tap2talk" else []
        return out + self.error(
            "InvalidParameter",
            f"The utterance passed {MAX_UTTERANCE_SECONDS:.0f} s without StopSpeech, the cap for one "
            "utterance (as in the cloud), and was dropped — send StopSpeech sooner: split long "
            "speech into sentences",
        )

    def on_vad(self, kind: str, audio: bytes | None = None) -> list[Output]:
        """A VAD event (``speech_started`` / ``speech_stopped`` with the utterance)."""
        if self.stopped or not self._capturing:
            return []
        if kind == "speech_started":
            out = self._interrupt() if self.options.mode == "duplex" else []
            self._heard_speech = True
            return [*out, self._frame("SpeechStarted")]
        if kind == "speech_stopped" and self._heard_speech and self.state == "Listening":
            return self._end_utterance(audio if audio is not None else bytes(self._audio))
        return []

    def _end_utterance(self, pcm: bytes) -> list[Output]:
        out: list[Output] = []
        if not self._heard_speech:
            out.append(self._frame("SpeechStarted"))
        self._heard_speech = False
        self._capturing = self.options.mode == "duplex"
        self._audio.clear()
        self.round += 1
        return [*out, Transcribe(self.round, pcm, self.options.input_rate)]

    # ------------------------------------------------------------- engine results
    def on_transcript(self, round: int, text: str) -> list[Output]:
        """ASR result: SpeechContent (cumulative, then finished), SpeechEnded, then Thinking."""
        if round != self.round or self.stopped:
            return []
        words = text.split()
        out: list[Output] = [
            self._frame("SpeechContent", text=" ".join(words[:i]), finished=False)
            for i in range(1, len(words))
        ]
        out += [self._frame("SpeechContent", text=text, finished=True), self._frame("SpeechEnded")]
        if not words:  # nothing recognised: no round
            return out
        return out + self._think(text, self._with_frame(()))

    def on_reply(
        self, round: int, text: str, kind: str = "", commands: Sequence[Mapping[str, Any]] = ()
    ) -> list[Output]:
        """The answer: Responding, RespondingStarted, cumulative RespondingContent, then Speak."""
        if round != self.round or self.stopped:
            return []
        self._text = text
        self._extra = {"commands": json.dumps(list(commands))} if commands else {}
        out: list[Output] = [*self._set_state("Thinking"), *self._set_state("Responding")]
        out.append(self._frame("RespondingStarted"))
        words = text.split()
        for i in range(1, len(words) + 1):
            part = " ".join(words[:i])
            out.append(self._content(part, finished=False))
        return [*out, Speak(round, text, self.options.output_rate)]

    def _content(self, text: str, *, finished: bool) -> Frame:
        fields: dict[str, Any] = {"text": text, "spoken": text, "finished": finished}
        if finished:
            fields["finish_reason"] = "stop"
        if self._extra:
            fields["extra_info"] = self._extra
        return self._frame("RespondingContent", **fields)

    def on_spoken(self, round: int, usage: Mapping[str, Any] | None = None) -> list[Output]:
        """All TTS audio of ``round`` was sent: the final content, RespondingEnded, Listening."""
        if round != self.round or self.stopped:
            return []
        out: list[Output] = [
            self._content(self._text, finished=True),
            Frame(result_frame(self.task_id, "RespondingEnded", self.dialog_id, usage=usage)),
        ]
        if self._local_playback:
            self._awaiting_local_end = True  # Listening comes after LocalRespondingEnded
            return out
        return out + self._set_state("Listening")

    def on_failure(self, round: int, code: str, message: str) -> list[Output]:
        """The engine failed on ``round``: an Error event, then back to Listening."""
        if round != self.round or self.stopped:
            return []
        self.round += 1
        out = self.error(code, message)
        if self.state == "Responding":
            out.append(self._frame("RespondingEnded"))
        return out + self._set_state("Listening")


# --------------------------------------------------------------------------- client turn
class DialogTurnCollector:
    """Folds the SDK's callbacks for one turn; ``done`` once the dialog is back to Listening.

    Feed it with :meth:`event` (``output.event`` name plus the ``output`` dict) and :meth:`audio`.
    A turn counts as begun once the server reacts to it (speech, Thinking, Responding), so the
    Listening state that precedes a turn does not end it.
    """

    def __init__(self) -> None:
        self.heard = ""
        self.text = ""
        self.audio = bytearray()
        self.commands: list[dict[str, Any]] = []
        self.usage: dict[str, Any] | None = None  # RespondingEnded's payload.usage, if any
        self.sent_seconds = 0.0  # speech the client sent (for counting usage when none came)
        self.speech_started = False
        self.speech_ended = False
        self.responding = False
        self.finished = False  # RespondingContent finished=true arrived
        self.accepted = False  # RequestAccepted (interrupt acknowledged)
        self.heartbeats = 0
        self.begun = False
        self.done = False

    @property
    def status(self) -> str:
        if self.accepted or (self.responding and not self.finished):
            return "cancelled"
        return "completed"

    def event(self, name: str, output: Mapping[str, Any] | None = None) -> None:
        out = output or {}
        if name == "SpeechStarted":
            self.speech_started = self.begun = True
        elif name == "SpeechContent":
            self.heard = str(out.get("text") or "")
            self.begun = True
        elif name == "SpeechEnded":
            self.speech_ended = self.begun = True
        elif name == "RespondingStarted":
            self.responding = self.begun = True
        elif name == "RespondingContent":
            self.text = str(out.get("text") or self.text)
            self.finished = self.finished or bool(out.get("finished"))
            self._read_commands(out.get("extra_info"))
        elif name == "RespondingEnded":
            if isinstance(out.get("usage"), Mapping):
                self.usage = dict(out["usage"])
        elif name == "RequestAccepted":
            self.accepted = True
        elif name == "HeartBeat":
            self.heartbeats += 1
        elif name == "DialogStateChanged":
            state = out.get("state")
            if state in ("Thinking", "Responding"):
                self.begun = True
            elif state == "Listening" and self.begun:
                self.done = True

    def _read_commands(self, extra: Any) -> None:
        if not isinstance(extra, Mapping) or not extra.get("commands"):
            return
        commands = extra["commands"]
        if isinstance(commands, str):  # the wire form is a JSON *string*
            try:
                commands = json.loads(commands)
            except ValueError:
                return
        if isinstance(commands, list):
            self.commands = [c for c in commands if isinstance(c, dict)]

    def command(self, name: str) -> dict[str, Any] | None:
        """The first command called ``name`` (e.g. "visual_qa"), if the server sent one."""
        return next((c for c in self.commands if c.get("name") == name), None)
