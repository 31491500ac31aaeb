"""The local server's side of one Qwen-Omni realtime connection, as a sans-I/O state machine.

:class:`RealtimeSession` never touches a socket or an engine: each input returns a :class:`Step` —
frames to send plus *actions* (feed the VAD, transcribe this audio, answer this input, stop that
answer, end the connection) for the I/O layer (:mod:`nbtoolkit.local.routes.realtime`) to carry
out. The events it speaks are :mod:`nbtoolkit.protocols.realtime`'s.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from nbtoolkit.errors import ProtocolError
from nbtoolkit.protocols.params import (
    MAX_UTTERANCE_SECONDS,
    realtime_response_problem,
    realtime_session_problem,
)
from nbtoolkit.protocols.realtime import (
    DEFAULT_TURN_DETECTION,
    INPUT_RATE,
    MAX_IMAGE_BYTES,
    VOICES,
    AudioDelta,
    AudioDone,
    AudioTranscriptDelta,
    AudioTranscriptDone,
    ContentPartAdded,
    ContentPartDone,
    ConversationItemCreate,
    ConversationItemCreated,
    ErrorEvent,
    InputAudioAppend,
    InputAudioClear,
    InputAudioCleared,
    InputAudioCommit,
    InputAudioCommitted,
    InputImageAppend,
    InputTranscriptionCompleted,
    InputTranscriptionFailed,
    OutputItemAdded,
    OutputItemDone,
    RealtimeEvent,
    ResponseCancel,
    ResponseCreate,
    ResponseCreated,
    ResponseDone,
    SessionCreated,
    SessionFinish,
    SessionFinished,
    SessionUpdate,
    SessionUpdated,
    SpeechStarted,
    SpeechStopped,
    TextDelta,
    TextDone,
    UnknownEvent,
    decode_base64,
    new_id,
    parse_client_event,
)

__all__ = [
    "Action",
    "CommittedInput",
    "ConfigureVad",
    "EndConnection",
    "FeedVad",
    "NeedAnswer",
    "NeedTranscript",
    "RealtimeSession",
    "ResponseState",
    "Step",
    "StopAnswer",
    "default_session",
    "usage_dict",
]

#: The most audio the buffer holds: one utterance (in server-VAD mode only recent audio can still
#: become part of one; without it a longer buffer could only be refused at commit).
_MAX_BUFFER_BYTES = int(MAX_UTTERANCE_SECONDS) * INPUT_RATE * 2


def default_session(model: str, session_id: str | None = None) -> dict[str, Any]:
    """The session a new connection starts with (the documented ``session.created`` example)."""
    return {
        "id": session_id or new_id("sess"),
        "object": "realtime.session",
        "model": model,
        "modalities": ["text", "audio"],
        "instructions": "",
        "voice": "Chelsie",
        "input_audio_format": "pcm16",
        "output_audio_format": "pcm16",
        "input_audio_transcription": {"model": "gummy-realtime-v1"},
        "turn_detection": dict(DEFAULT_TURN_DETECTION),
        "tools": [],
        "tool_choice": "auto",
        "temperature": 0.8,
        "max_response_output_tokens": "inf",
    }


@dataclass
class CommittedInput:
    """One committed user turn: audio (PCM16 16 kHz), images (JPEG) and, once known, its words."""

    item_id: str
    audio: bytes = field(repr=False)
    images: list[bytes] = field(default_factory=list, repr=False)
    transcript: str | None = None
    answered: bool = False


@dataclass
class ResponseState:
    """The response being generated. ``text`` and ``audio_bytes`` grow as deltas go out."""

    id: str
    item_id: str
    modalities: list[str]
    voice: str
    instructions: str
    input: CommittedInput | None
    status: str = "in_progress"
    text: str = ""
    audio_bytes: int = 0

    @property
    def audio(self) -> bool:
        return "audio" in self.modalities


# ---- actions: what the I/O layer must do
@dataclass(frozen=True)
class ConfigureVad:
    """(Re)start server VAD with these settings; ``None`` settings mean manual mode (no VAD)."""

    settings: dict[str, Any] | None


@dataclass(frozen=True)
class FeedVad:
    """Feed this PCM16 16 kHz audio to the VAD, then report its events to the session."""

    pcm: bytes = field(repr=False)


@dataclass(frozen=True)
class NeedTranscript:
    """Transcribe this committed audio, then call :meth:`RealtimeSession.transcribed`."""

    item_id: str
    audio: bytes = field(repr=False)


@dataclass(frozen=True)
class NeedAnswer:
    """Generate response ``response_id``: answer ``heard`` (with the audio and images), then
    stream it through :meth:`RealtimeSession.transcript_delta` / ``audio_delta`` / ``text_delta``
    and finish with :meth:`RealtimeSession.end_response`."""

    response_id: str
    heard: str
    audio: bytes = field(repr=False)
    images: tuple[bytes, ...] = field(repr=False)
    instructions: str
    with_audio: bool


@dataclass(frozen=True)
class StopAnswer:
    """Stop generating ``response_id`` now (its cancellation frames are already in the step)."""

    response_id: str


@dataclass(frozen=True)
class EndConnection:
    """Close the connection normally once the step's frames (``session.finished``) are sent."""


Action = ConfigureVad | FeedVad | NeedTranscript | NeedAnswer | StopAnswer | EndConnection


class Step(NamedTuple):
    """Frames to send (in order) and actions to take. Handle :class:`StopAnswer` actions before
    sending the frames, so no delta of a stopped response follows its ``response.done``."""

    events: list[RealtimeEvent]
    actions: list[Action]


def _no_usage(response: ResponseState) -> dict[str, Any]:
    return usage_dict()


def usage_dict(
    input_text: int = 0,
    input_audio: int = 0,
    input_image: int = 0,
    output_text: int = 0,
    output_audio: int = 0,
) -> dict[str, Any]:
    """The ``usage`` object of ``response.done`` (note DashScope's plural ``*_tokens_details``)."""
    inp = input_text + input_audio + input_image
    out = output_text + output_audio
    return {
        "total_tokens": inp + out,
        "input_tokens": inp,
        "output_tokens": out,
        "input_tokens_details": {
            "text_tokens": input_text,
            "audio_tokens": input_audio,
            "image_tokens": input_image,
        },
        "output_tokens_details": {"text_tokens": output_text, "audio_tokens": output_audio},
    }


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


class _Refused(Exception):
    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


class RealtimeSession:
    """The server side of one realtime connection.

    ``usage`` computes the ``usage`` object of a finished or cancelled response (the local server
    counts tokens with the engine's rule); it defaults to zeros.
    """

    def __init__(
        self,
        model: str,
        *,
        usage: Callable[[ResponseState], dict[str, Any]] = _no_usage,
        session_id: str | None = None,
    ) -> None:
        self.config = default_session(model, session_id)
        self.audio = bytearray()
        self.images: list[bytes] = []
        self.inputs: list[CommittedInput] = []
        self.response: ResponseState | None = None
        self.finished = False
        self._usage = usage
        self._audio_seen = False
        self._speech_item: str | None = None

    # ---------------------------------------------------------------- config
    @property
    def vad_settings(self) -> dict[str, Any] | None:
        td = self.config.get("turn_detection")
        return dict(td) if isinstance(td, dict) else None

    @property
    def transcription_enabled(self) -> bool:
        return isinstance(self.config.get("input_audio_transcription"), dict)

    def opened(self) -> Step:
        """The first frame of a connection, and the VAD the default session asks for."""
        return Step(
            [SessionCreated(session=copy.deepcopy(self.config))],
            [ConfigureVad(self.vad_settings)],
        )

    # ---------------------------------------------------------------- client frames
    def receive(self, data: str | bytes | Mapping[str, Any]) -> Step:
        """Handle one client frame. Refusals become ``error`` events; nothing here raises."""
        client_event_id: str | None = None
        try:
            event = parse_client_event(data)
            client_event_id = event.event_id or None
            return self._dispatch(event)
        except ProtocolError as exc:
            code = exc.code or "invalid_event"
            return Step([self._error(code, exc.problem, None, client_event_id)], [])
        except _Refused as exc:
            return Step([self._error(exc.code, exc.message, exc.param, client_event_id)], [])

    def _dispatch(self, event: RealtimeEvent) -> Step:
        if self.finished:
            raise _Refused("session_finished", "The session has finished; open a new connection")
        if isinstance(event, SessionUpdate):
            return self._update(event.session)
        if isinstance(event, InputAudioAppend):
            return self._append_audio(decode_base64(event.audio, "input_audio_buffer.append.audio"))
        if isinstance(event, InputImageAppend):
            return self._append_image(decode_base64(event.image, "input_image_buffer.append.image"))
        if isinstance(event, InputAudioCommit):
            if not self.audio:
                raise _Refused(
                    "input_audio_buffer_commit_empty",
                    "Cannot commit an empty audio buffer; append audio first",
                )
            return self._commit(bytes(self.audio))
        if isinstance(event, InputAudioClear):
            self.audio.clear()
            self.images.clear()
            return Step([InputAudioCleared()], [])
        if isinstance(event, ResponseCreate):
            problem = realtime_response_problem(event.response)
            if problem is not None:
                raise _Refused("invalid_value", problem.message, problem.param)
            return self.begin_response(
                event.response.get("instructions"), event.response.get("modalities")
            )
        if isinstance(event, ResponseCancel):
            if self.response is None or event.response_id not in (None, self.response.id):
                raise _Refused(
                    "response_cancel_not_active",
                    f"Response {event.response_id} has finished; nothing was cancelled"
                    if self.response is not None
                    else "There is no active response to cancel",
                )
            return self._cancel("client_cancelled")
        if isinstance(event, ConversationItemCreate):
            return self._create_item(event.item)
        if isinstance(event, SessionFinish):
            step = self._cancel("session_finished") if self.response else Step([], [])
            self.finished = True
            return Step([*step.events, SessionFinished()], [*step.actions, EndConnection()])
        assert isinstance(event, UnknownEvent)
        raise _Refused("invalid_event_type", f"Unknown client event type {event.event_type!r}")

    def _error(
        self, code: str, message: str, param: str | None, client_event_id: str | None
    ) -> ErrorEvent:
        return ErrorEvent(
            error={
                "type": "invalid_request_error",
                "code": code,
                "message": message,
                "param": param,
                "event_id": client_event_id,
            }
        )

    def _update(self, session: dict[str, Any]) -> Step:
        problem = realtime_session_problem(session)
        if problem is not None:
            raise _Refused("invalid_value", problem.message, problem.param)
        merged = copy.deepcopy(self.config)
        for key, value in session.items():
            if key in ("id", "object", "model"):
                continue
            if key == "voice" and value is None:
                continue  # the SDK sends voice=None when the caller chose none
            if key == "turn_detection" and value is not None:
                # the SDK sends None for settings the caller left alone: those keep the default
                value = {
                    **DEFAULT_TURN_DETECTION,
                    **{k: v for k, v in value.items() if v is not None},
                }
            merged[key] = value
        actions: list[Action] = []
        if "turn_detection" in session and merged["turn_detection"] != self.config.get(
            "turn_detection"
        ):
            actions.append(ConfigureVad(merged["turn_detection"]))
        self.config = merged
        return Step([SessionUpdated(session=copy.deepcopy(merged))], actions)

    def _append_audio(self, pcm: bytes) -> Step:
        if len(pcm) % 2:
            raise _Refused(
                "invalid_value", "Audio must be PCM16 (an even number of bytes)", "audio"
            )
        self._audio_seen = True
        self.audio += pcm
        if self.vad_settings is None:
            if len(self.audio) > _MAX_BUFFER_BYTES:
                self.audio.clear()
                raise _Refused(
                    "invalid_value",
                    f"The audio buffer passed {MAX_UTTERANCE_SECONDS:.0f} s without a commit, the "
                    "cap for one utterance (as in the cloud), and was cleared — commit sooner: "
                    "split long speech into sentences",
                    "audio",
                )
            return Step([], [])
        if len(self.audio) > _MAX_BUFFER_BYTES:
            del self.audio[: len(self.audio) - _MAX_BUFFER_BYTES]
        return Step([], [FeedVad(pcm)])

    def _append_image(self, jpeg: bytes) -> Step:
        if not self._audio_seen:
            raise _Refused(
                "invalid_request",
                "Send audio (input_audio_buffer.append) before the first image",
                "image",
            )
        if not jpeg.startswith(b"\xff\xd8\xff"):
            raise _Refused("invalid_value", "Images must be JPEG", "image")
        if len(jpeg) > MAX_IMAGE_BYTES:
            raise _Refused(
                "invalid_value",
                f"The image is {len(jpeg) // 1024} KB; the limit is {MAX_IMAGE_BYTES // 1024} KB",
                "image",
            )
        self.images.append(jpeg)
        return Step([], [])

    def _commit(self, audio: bytes, item_id: str | None = None) -> Step:
        item = CommittedInput(item_id or new_id("item"), audio, list(self.images))
        self.audio.clear()
        self.images.clear()
        self.inputs.append(item)
        user_item = {
            "id": item.item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        return Step(
            [InputAudioCommitted(item_id=item.item_id), ConversationItemCreated(item=user_item)],
            [NeedTranscript(item.item_id, audio)],
        )

    def _create_item(self, item: dict[str, Any]) -> Step:
        texts = [
            str(c.get("text") or "")
            for c in _list(item.get("content"))
            if isinstance(c, dict) and c.get("type") in ("input_text", "text")
        ]
        if item.get("type", "message") != "message" or not texts:
            raise _Refused(
                "invalid_value",
                "Only user message items with input_text content can be created",
                "item",
            )
        entry = CommittedInput(new_id("item"), b"", transcript=" ".join(texts))
        self.inputs.append(entry)
        created = {
            "id": entry.item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_text", "text": entry.transcript}],
        }
        return Step([ConversationItemCreated(item=created)], [])

    # ---------------------------------------------------------------- I/O layer reports
    def speech_started(self, t_ms: int) -> Step:
        """The VAD heard speech begin at ``t_ms``. Interrupts an active response when configured."""
        settings = self.vad_settings
        if settings is None:
            return Step([], [])
        self._speech_item = new_id("item")
        started = SpeechStarted(audio_start_ms=int(t_ms), item_id=self._speech_item)
        if self.response is not None and settings.get("interrupt_response", True):
            cancel = self._cancel("turn_detected")
            return Step([started, *cancel.events], cancel.actions)
        return Step([started], [])

    def speech_stopped(self, t_ms: int, audio: bytes | None = None) -> Step:
        """The VAD heard speech end at ``t_ms``; ``audio`` is the utterance (else the buffer)."""
        if self.vad_settings is None:
            return Step([], [])
        item_id = self._speech_item or new_id("item")
        self._speech_item = None
        stopped = SpeechStopped(audio_end_ms=int(t_ms), item_id=item_id)
        utterance = audio if audio else bytes(self.audio)
        if not utterance:
            return Step([stopped], [])
        commit = self._commit(utterance, item_id)
        return Step([stopped, *commit.events], commit.actions)

    def transcribed(self, item_id: str, text: str, error: str | None = None) -> Step:
        """The words of committed input ``item_id`` (``error``: the ASR failed and ``text`` is
        what is known). In server-VAD mode this starts the answer."""
        entry = next((i for i in self.inputs if i.item_id == item_id), None)
        if entry is None:
            return Step([], [])
        entry.transcript = text
        events: list[RealtimeEvent] = []
        if self.transcription_enabled and error is not None:
            failure = {"code": "transcription_failed", "message": error, "param": None}
            events.append(InputTranscriptionFailed(item_id=item_id, error=failure))
        elif self.transcription_enabled:
            events.append(InputTranscriptionCompleted(item_id=item_id, transcript=text))
        settings = self.vad_settings
        if (
            settings is not None
            and settings.get("create_response", True)
            and self.response is None
            and entry is self.inputs[-1]
        ):
            begin = self.begin_response()
            return Step([*events, *begin.events], begin.actions)
        return Step(events, [])

    # ---------------------------------------------------------------- responses
    def begin_response(
        self, instructions: str | None = None, modalities: list[str] | None = None
    ) -> Step:
        """Start answering the latest unanswered input (``response.create``)."""
        if self.response is not None:
            raise _Refused(
                "conversation_already_has_active_response",
                f"Response {self.response.id} is still in progress; cancel it or wait for "
                "response.done",
            )
        mods = modalities or list(self.config["modalities"])
        problem = realtime_response_problem({"modalities": mods})
        if problem is not None:
            raise _Refused("invalid_value", problem.message, problem.param)
        pending = next((i for i in reversed(self.inputs) if not i.answered), None)
        if pending is not None:
            pending.answered = True
        state = ResponseState(
            id=new_id("resp"),
            item_id=new_id("item"),
            modalities=list(mods),
            voice=str(self.config.get("voice") or VOICES[0]),
            instructions=str(instructions or self.config.get("instructions") or ""),
            input=pending,
        )
        self.response = state
        item = self._assistant_item(state, "in_progress", [])
        part = {"type": "audio" if state.audio else "text", "text": ""}
        events: list[RealtimeEvent] = [
            ResponseCreated(response=self._response_object(state, [], None)),
            OutputItemAdded(response_id=state.id, item=item),
            ConversationItemCreated(item=item),
            ContentPartAdded(response_id=state.id, item_id=state.item_id, part=part),
        ]
        action = NeedAnswer(
            response_id=state.id,
            heard=(pending.transcript or "") if pending else "",
            audio=pending.audio if pending else b"",
            images=tuple(pending.images) if pending else (),
            instructions=state.instructions,
            with_audio=state.audio,
        )
        return Step(events, [action])

    def _active(self, response_id: str) -> ResponseState | None:
        r = self.response
        return r if r is not None and r.id == response_id else None

    def transcript_delta(self, response_id: str, text: str) -> list[RealtimeEvent]:
        """Spoken words of the answer (audio modality). Empty once the response has ended."""
        r = self._active(response_id)
        if r is None or not text:
            return []
        r.text += text
        return [AudioTranscriptDelta(response_id=r.id, item_id=r.item_id, delta=text)]

    def audio_delta(self, response_id: str, pcm: bytes) -> list[RealtimeEvent]:
        """PCM16 24 kHz audio of the answer. Empty once the response has ended."""
        r = self._active(response_id)
        if r is None or not pcm:
            return []
        r.audio_bytes += len(pcm)
        delta = base64.b64encode(pcm).decode("ascii")
        return [AudioDelta(response_id=r.id, item_id=r.item_id, delta=delta)]

    def text_delta(self, response_id: str, text: str) -> list[RealtimeEvent]:
        """Answer text (``modalities: ["text"]``). Empty once the response has ended."""
        r = self._active(response_id)
        if r is None or not text:
            return []
        r.text += text
        return [TextDelta(response_id=r.id, item_id=r.item_id, delta=text)]

    def end_response(self, response_id: str) -> list[RealtimeEvent]:
        """The answer is complete: the ``*.done`` events and ``response.done`` (completed)."""
        r = self._active(response_id)
        return [] if r is None else self._close_response(r, "completed", None)

    def fail_response(self, response_id: str, reason: str) -> list[RealtimeEvent]:
        """The answer could not be produced: ``response.done`` with status "failed"."""
        r = self._active(response_id)
        return [] if r is None else self._close_response(r, "failed", reason)

    def _cancel(self, reason: str) -> Step:
        r = self.response
        assert r is not None
        events = self._close_response(r, "cancelled", reason)
        return Step(events, [StopAnswer(r.id)])

    def _close_response(
        self, r: ResponseState, status: str, reason: str | None
    ) -> list[RealtimeEvent]:
        self.response = None
        r.status = status
        rid, iid = r.id, r.item_id
        events: list[RealtimeEvent]
        if r.audio:
            events = [
                AudioTranscriptDone(response_id=rid, item_id=iid, transcript=r.text),
                AudioDone(response_id=rid, item_id=iid),
            ]
            content = [{"type": "audio", "transcript": r.text}]
        else:
            events = [TextDone(response_id=rid, item_id=iid, text=r.text)]
            content = [{"type": "text", "text": r.text}]
        part = {"type": "audio" if r.audio else "text", "text": r.text}
        item = self._assistant_item(
            r, "completed" if status == "completed" else "incomplete", content
        )
        events += [
            ContentPartDone(response_id=rid, item_id=iid, part=part),
            OutputItemDone(response_id=r.id, item=item),
            ResponseDone(response=self._response_object(r, [item], self._usage(r), reason)),
        ]
        return events

    def _assistant_item(
        self, r: ResponseState, status: str, content: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return {
            "id": r.item_id,
            "object": "realtime.item",
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": content,
        }

    def _response_object(
        self,
        r: ResponseState,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "id": r.id,
            "object": "realtime.response",
            "conversation_id": self.config["id"].replace("sess_", "conv_", 1),
            "status": r.status,
            "modalities": r.modalities,
            "voice": r.voice,
            "output_audio_format": self.config.get("output_audio_format", "pcm16"),
            "output": output,
            "usage": usage,
        }
        if reason:
            obj["status_details"] = {"type": r.status, "reason": reason}
        return obj
