"""Qwen-Omni realtime protocol (sans-I/O): typed events, the server's session state machine, and
the client's turn collector.

The wire format is JSON text frames ``{"event_id", "type", ...}`` (reference §4). Both directions
use the same dataclasses: :func:`parse_server_event` / :func:`parse_client_event` turn a frame into a
typed event (an unknown ``type`` becomes :class:`UnknownEvent`; a frame that is not a JSON object with
a string ``type``, or lacks a field its type needs, raises :class:`~nbtoolkit.errors.ProtocolError`),
and ``event.to_json()`` builds a frame.

:class:`RealtimeSession` is what the local server runs per connection. It never touches a socket or
an engine: each input returns a :class:`Step` — frames to send plus *actions* (feed the VAD,
transcribe this audio, answer this input, stop that answer) for the I/O layer to carry out.
:class:`TurnCollector` is the client half: it folds server events into one exchange.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, NamedTuple

from nbtoolkit.errors import ProtocolError

__all__ = [
    "CLIENT_EVENTS",
    "DEFAULT_TURN_DETECTION",
    "INPUT_RATE",
    "MAX_IMAGE_BYTES",
    "OUTPUT_RATE",
    "SERVER_EVENTS",
    "VOICES",
    "AudioDelta",
    "AudioDone",
    "AudioTranscriptDelta",
    "AudioTranscriptDone",
    "CommittedInput",
    "ConfigureVad",
    "ContentPartAdded",
    "ContentPartDone",
    "ConversationItemCreate",
    "ConversationItemCreated",
    "ErrorEvent",
    "InputAudioAppend",
    "InputAudioClear",
    "InputAudioCleared",
    "InputAudioCommit",
    "InputAudioCommitted",
    "InputImageAppend",
    "InputTranscriptionCompleted",
    "InputTranscriptionFailed",
    "NeedAnswer",
    "NeedTranscript",
    "OutputItemAdded",
    "OutputItemDone",
    "RealtimeEvent",
    "RealtimeSession",
    "ResponseCancel",
    "ResponseCreate",
    "ResponseCreated",
    "ResponseDone",
    "ResponseState",
    "SessionCreated",
    "SessionFinish",
    "SessionFinished",
    "SessionUpdate",
    "SessionUpdated",
    "SpeechStarted",
    "SpeechStopped",
    "Step",
    "StopAnswer",
    "TextDelta",
    "TextDone",
    "TurnCollector",
    "UnknownEvent",
    "default_session",
    "new_id",
    "parse_client_event",
    "parse_server_event",
]

#: Input audio is PCM16 mono at 16 kHz; output audio PCM16 mono at 24 kHz (reference §4.4).
INPUT_RATE = 16000
OUTPUT_RATE = 24000
VOICES = ("Chelsie", "Serena", "Ethan", "Cherry")
#: S003: one image at most 500 KB.
MAX_IMAGE_BYTES = 500 * 1024
DEFAULT_TURN_DETECTION: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 800,
    "create_response": True,
    "interrupt_response": True,
}
#: In server-VAD mode only recent audio can still become part of an utterance.
_VAD_BUFFER_BYTES = 60 * INPUT_RATE * 2


def new_id(prefix: str) -> str:
    """A fresh id such as ``event_3f2a…`` or ``resp_…`` (the SDK uses ``"event_" + uuid4().hex``)."""
    return f"{prefix}_{uuid.uuid4().hex}"


def _event_id() -> str:
    return new_id("event")


# --------------------------------------------------------------------------------------- events
@dataclass(frozen=True, kw_only=True)
class RealtimeEvent:
    """Base of every event. Subclasses set ``type``; their fields are the frame's other keys."""

    type: ClassVar[str] = ""
    event_id: str = field(default_factory=_event_id)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event_id": self.event_id, "type": self.type}
        for f in fields(self):
            if f.name != "event_id":
                out[f.name] = getattr(self, f.name)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True, kw_only=True)
class UnknownEvent(RealtimeEvent):
    """An event whose ``type`` this version does not know; ``raw`` keeps the whole frame."""

    type: ClassVar[str] = "unknown"
    event_type: str
    raw: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.raw)


# ---- client → server
@dataclass(frozen=True, kw_only=True)
class SessionUpdate(RealtimeEvent):
    type: ClassVar[str] = "session.update"
    session: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class InputAudioAppend(RealtimeEvent):
    """``audio`` is base64 PCM16 mono 16 kHz; build one with :meth:`of`."""

    type: ClassVar[str] = "input_audio_buffer.append"
    audio: str

    @classmethod
    def of(cls, pcm: bytes) -> InputAudioAppend:
        return cls(audio=base64.b64encode(pcm).decode("ascii"))


@dataclass(frozen=True, kw_only=True)
class InputImageAppend(RealtimeEvent):
    """``image`` is a base64 JPEG; build one with :meth:`of`."""

    type: ClassVar[str] = "input_image_buffer.append"
    image: str

    @classmethod
    def of(cls, jpeg: bytes) -> InputImageAppend:
        return cls(image=base64.b64encode(jpeg).decode("ascii"))


@dataclass(frozen=True, kw_only=True)
class InputAudioCommit(RealtimeEvent):
    """Commits the audio buffer and the image buffer together."""

    type: ClassVar[str] = "input_audio_buffer.commit"


@dataclass(frozen=True, kw_only=True)
class InputAudioClear(RealtimeEvent):
    type: ClassVar[str] = "input_audio_buffer.clear"


@dataclass(frozen=True, kw_only=True)
class ResponseCreate(RealtimeEvent):
    """``response`` may carry ``instructions`` and ``modalities`` for this response only."""

    type: ClassVar[str] = "response.create"
    response: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ResponseCancel(RealtimeEvent):
    """``response_id`` (optional, as in OpenAI's realtime API) names the response to stop, so a
    cancel that crosses that response's ``response.done`` cannot stop the next one."""

    type: ClassVar[str] = "response.cancel"
    response_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.response_id is None:
            del out["response_id"]  # the documented frame has no such key
        return out


@dataclass(frozen=True, kw_only=True)
class ConversationItemCreate(RealtimeEvent):
    type: ClassVar[str] = "conversation.item.create"
    item: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class SessionFinish(RealtimeEvent):
    type: ClassVar[str] = "session.finish"


# ---- server → client
@dataclass(frozen=True, kw_only=True)
class ErrorEvent(RealtimeEvent):
    """``error`` is ``{type, code, message, param, event_id}``; ``event_id`` there names the client
    event that was refused."""

    type: ClassVar[str] = "error"
    error: dict[str, Any]

    @property
    def code(self) -> str:
        return str(self.error.get("code") or "")

    @property
    def message(self) -> str:
        return str(self.error.get("message") or "")


@dataclass(frozen=True, kw_only=True)
class SessionCreated(RealtimeEvent):
    type: ClassVar[str] = "session.created"
    session: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class SessionUpdated(RealtimeEvent):
    type: ClassVar[str] = "session.updated"
    session: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class SpeechStarted(RealtimeEvent):
    type: ClassVar[str] = "input_audio_buffer.speech_started"
    audio_start_ms: int
    item_id: str


@dataclass(frozen=True, kw_only=True)
class SpeechStopped(RealtimeEvent):
    type: ClassVar[str] = "input_audio_buffer.speech_stopped"
    audio_end_ms: int
    item_id: str


@dataclass(frozen=True, kw_only=True)
class InputAudioCommitted(RealtimeEvent):
    type: ClassVar[str] = "input_audio_buffer.committed"
    item_id: str


@dataclass(frozen=True, kw_only=True)
class InputAudioCleared(RealtimeEvent):
    type: ClassVar[str] = "input_audio_buffer.cleared"


@dataclass(frozen=True, kw_only=True)
class ConversationItemCreated(RealtimeEvent):
    type: ClassVar[str] = "conversation.item.created"
    item: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class InputTranscriptionCompleted(RealtimeEvent):
    type: ClassVar[str] = "conversation.item.input_audio_transcription.completed"
    item_id: str
    content_index: int = 0
    transcript: str


@dataclass(frozen=True, kw_only=True)
class InputTranscriptionFailed(RealtimeEvent):
    type: ClassVar[str] = "conversation.item.input_audio_transcription.failed"
    item_id: str
    content_index: int = 0
    error: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class ResponseCreated(RealtimeEvent):
    type: ClassVar[str] = "response.created"
    response: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class ResponseDone(RealtimeEvent):
    """``response`` holds ``id``, ``status`` ("completed", "cancelled", …) and ``usage``."""

    type: ClassVar[str] = "response.done"
    response: dict[str, Any]

    @property
    def status(self) -> str:
        return str(self.response.get("status") or "")

    @property
    def response_id(self) -> str:
        return str(self.response.get("id") or "")


@dataclass(frozen=True, kw_only=True)
class OutputItemAdded(RealtimeEvent):
    type: ClassVar[str] = "response.output_item.added"
    response_id: str
    output_index: int = 0
    item: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class OutputItemDone(RealtimeEvent):
    type: ClassVar[str] = "response.output_item.done"
    response_id: str
    output_index: int = 0
    item: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class _ContentEvent(RealtimeEvent):
    response_id: str
    item_id: str
    output_index: int = 0
    content_index: int = 0


@dataclass(frozen=True, kw_only=True)
class ContentPartAdded(_ContentEvent):
    type: ClassVar[str] = "response.content_part.added"
    part: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class ContentPartDone(_ContentEvent):
    type: ClassVar[str] = "response.content_part.done"
    part: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class AudioTranscriptDelta(_ContentEvent):
    type: ClassVar[str] = "response.audio_transcript.delta"
    delta: str


@dataclass(frozen=True, kw_only=True)
class AudioTranscriptDone(_ContentEvent):
    type: ClassVar[str] = "response.audio_transcript.done"
    transcript: str


@dataclass(frozen=True, kw_only=True)
class AudioDelta(_ContentEvent):
    """``delta`` is base64 PCM16 mono 24 kHz; :attr:`pcm` decodes it."""

    type: ClassVar[str] = "response.audio.delta"
    delta: str

    @property
    def pcm(self) -> bytes:
        return _b64decode(self.delta, "response.audio.delta")


@dataclass(frozen=True, kw_only=True)
class AudioDone(_ContentEvent):
    type: ClassVar[str] = "response.audio.done"


@dataclass(frozen=True, kw_only=True)
class TextDelta(_ContentEvent):
    type: ClassVar[str] = "response.text.delta"
    delta: str


@dataclass(frozen=True, kw_only=True)
class TextDone(_ContentEvent):
    type: ClassVar[str] = "response.text.done"
    text: str


@dataclass(frozen=True, kw_only=True)
class SessionFinished(RealtimeEvent):
    type: ClassVar[str] = "session.finished"


def _registry(*classes: type[RealtimeEvent]) -> dict[str, type[RealtimeEvent]]:
    return {c.type: c for c in classes}


CLIENT_EVENTS = _registry(
    SessionUpdate,
    InputAudioAppend,
    InputImageAppend,
    InputAudioCommit,
    InputAudioClear,
    ResponseCreate,
    ResponseCancel,
    ConversationItemCreate,
    SessionFinish,
)
SERVER_EVENTS = _registry(
    ErrorEvent,
    SessionCreated,
    SessionUpdated,
    SpeechStarted,
    SpeechStopped,
    InputAudioCommitted,
    InputAudioCleared,
    ConversationItemCreated,
    InputTranscriptionCompleted,
    InputTranscriptionFailed,
    ResponseCreated,
    ResponseDone,
    OutputItemAdded,
    OutputItemDone,
    ContentPartAdded,
    ContentPartDone,
    AudioTranscriptDelta,
    AudioTranscriptDone,
    AudioDelta,
    AudioDone,
    TextDelta,
    TextDone,
    SessionFinished,
)

# Field annotations are strings (postponed evaluation); these are the only shapes used above.
_SHAPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int, float),
    "dict[str, Any]": (dict,),
}


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(
            f"{what} is not valid base64", "send base64 of the raw bytes", code="invalid_value"
        ) from exc


def _load(data: str | bytes | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(data, Mapping):
        obj: Any = dict(data)
    else:
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ProtocolError(
                f"A realtime frame is not JSON ({len(data)} bytes)",
                "send one JSON object per text frame",
                code="invalid_json",
            ) from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise ProtocolError(
            "A realtime frame has no string 'type'",
            'send {"type": "...", "event_id": "..."} objects',
            code="invalid_event",
        )
    return obj


def _parse(data: str | bytes | Mapping[str, Any], known: dict[str, type[RealtimeEvent]]) -> Any:
    obj = _load(data)
    cls = known.get(obj["type"])
    if cls is None:
        return UnknownEvent(
            event_id=str(obj.get("event_id") or ""), event_type=obj["type"], raw=obj
        )
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in obj:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ProtocolError(
                    f"'{obj['type']}' event lacks the field '{f.name}'",
                    "check the event against the Qwen-Omni realtime reference",
                    code="missing_field",
                )
            continue
        value = obj[f.name]
        shape = _SHAPES.get(str(f.type))
        if shape and not isinstance(value, shape):
            raise ProtocolError(
                f"'{obj['type']}.{f.name}' should be {f.type}, not {type(value).__name__}",
                "check the event against the Qwen-Omni realtime reference",
                code="invalid_value",
            )
        kwargs[f.name] = value
    if "event_id" in kwargs and not isinstance(kwargs["event_id"], str):
        kwargs["event_id"] = str(kwargs["event_id"])
    return cls(**kwargs)


def parse_server_event(data: str | bytes | Mapping[str, Any]) -> RealtimeEvent:
    """A server frame as a typed event (:class:`UnknownEvent` for types not known here).

    Raises :class:`~nbtoolkit.errors.ProtocolError` for a frame that is not a JSON object with a
    string ``type``, or that lacks a field its type requires."""
    event: RealtimeEvent = _parse(data, SERVER_EVENTS)
    return event


def parse_client_event(data: str | bytes | Mapping[str, Any]) -> RealtimeEvent:
    """A client frame as a typed event; same rules as :func:`parse_server_event`."""
    event: RealtimeEvent = _parse(data, CLIENT_EVENTS)
    return event


# ------------------------------------------------------------------------------- server machine
def default_session(model: str, session_id: str | None = None) -> dict[str, Any]:
    """The session a new connection starts with (S003's ``session.created`` example)."""
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
class Close:
    """Close the connection normally after sending the step's frames."""


Action = ConfigureVad | FeedVad | NeedTranscript | NeedAnswer | StopAnswer | Close


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


def _modalities_ok(value: Any) -> bool:
    """True for ``["text"]`` or text plus audio in either order (anything else, of any type: no)."""
    return (
        isinstance(value, list)
        and all(isinstance(m, str) for m in value)
        and sorted(value) in (["text"], ["audio", "text"])
    )


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
            return self._append_audio(_b64decode(event.audio, "input_audio_buffer.append.audio"))
        if isinstance(event, InputImageAppend):
            return self._append_image(_b64decode(event.image, "input_image_buffer.append.image"))
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
            spec = event.response if isinstance(event.response, dict) else {}
            return self.begin_response(spec.get("instructions"), spec.get("modalities"))
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
            return Step([*step.events, SessionFinished()], [*step.actions, Close()])
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
        merged = copy.deepcopy(self.config)
        for key, value in session.items():
            if key in ("id", "object", "model"):
                continue
            if key == "modalities":
                if not _modalities_ok(value):
                    raise _Refused(
                        "invalid_value",
                        f"modalities must be ['text'] or ['text', 'audio'], not {value!r}",
                        "session.modalities",
                    )
            elif key == "voice":
                if value is None:
                    continue  # the SDK sends voice=None when the caller chose none
                if value not in VOICES:
                    raise _Refused(
                        "invalid_value",
                        f"Unknown voice {value!r}; choose one of {', '.join(VOICES)}",
                        "session.voice",
                    )
            elif key == "turn_detection" and value is not None:
                value = self._turn_detection(value)
            elif (
                key == "input_audio_transcription"
                and value is not None
                and not isinstance(value, dict)
            ):
                raise _Refused(
                    "invalid_value",
                    "input_audio_transcription must be an object or null",
                    "session.input_audio_transcription",
                )
            merged[key] = value
        actions: list[Action] = []
        if "turn_detection" in session and merged["turn_detection"] != self.config.get(
            "turn_detection"
        ):
            actions.append(ConfigureVad(merged["turn_detection"]))
        self.config = merged
        return Step([SessionUpdated(session=copy.deepcopy(merged))], actions)

    @staticmethod
    def _turn_detection(value: Any) -> dict[str, Any]:
        if not isinstance(value, dict) or value.get("type", "server_vad") != "server_vad":
            raise _Refused(
                "invalid_value",
                "turn_detection must be null (manual) or {'type': 'server_vad', ...}",
                "session.turn_detection.type",
            )
        td = {**DEFAULT_TURN_DETECTION, **{k: v for k, v in value.items() if v is not None}}
        threshold = td["threshold"]
        if not isinstance(threshold, (int, float)) or not -1 <= threshold <= 1:
            raise _Refused(
                "invalid_value",
                f"turn_detection.threshold must be between -1 and 1, not {threshold!r}",
                "session.turn_detection.threshold",
            )
        silence = td["silence_duration_ms"]
        if not isinstance(silence, (int, float)) or not 200 <= silence <= 6000:
            raise _Refused(
                "invalid_value",
                f"turn_detection.silence_duration_ms must be 200…6000, not {silence!r}",
                "session.turn_detection.silence_duration_ms",
            )
        padding = td["prefix_padding_ms"]
        if not isinstance(padding, (int, float)) or padding < 0:
            raise _Refused(
                "invalid_value",
                "turn_detection.prefix_padding_ms must be ≥ 0",
                "session.turn_detection.prefix_padding_ms",
            )
        return td

    def _append_audio(self, pcm: bytes) -> Step:
        if len(pcm) % 2:
            raise _Refused(
                "invalid_value", "Audio must be PCM16 (an even number of bytes)", "audio"
            )
        self._audio_seen = True
        self.audio += pcm
        if self.vad_settings is None:
            return Step([], [])
        if len(self.audio) > _VAD_BUFFER_BYTES:
            del self.audio[: len(self.audio) - _VAD_BUFFER_BYTES]
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
        if not _modalities_ok(mods):
            raise _Refused(
                "invalid_value",
                f"modalities must be ['text'] or ['text', 'audio'], not {mods!r}",
                "response.modalities",
            )
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


# ------------------------------------------------------------------------------- client side
class TurnCollector:
    """Folds the server events of one exchange into what was heard and answered.

    Feed every server event; the first ``response.created`` fixes which response is collected.
    ``done`` turns true on that response's ``response.done``.
    """

    def __init__(self) -> None:
        self.heard = ""
        self.input_item_id: str | None = None
        self.response_id: str | None = None
        self.status: str | None = None
        self.usage: dict[str, Any] | None = None
        self.audio = bytearray()
        self._text: list[str] = []
        self._final_text: str | None = None

    @property
    def text(self) -> str:
        return self._final_text if self._final_text is not None else "".join(self._text)

    @property
    def done(self) -> bool:
        return self.status is not None

    @property
    def started(self) -> bool:
        return self.response_id is not None

    def _mine(self, response_id: str) -> bool:
        return self.response_id is not None and response_id == self.response_id

    def feed(self, event: RealtimeEvent) -> None:
        if isinstance(event, InputAudioCommitted) and self.response_id is None:
            self.input_item_id = event.item_id
        elif isinstance(event, InputTranscriptionCompleted):
            if self.input_item_id in (None, event.item_id):
                self.heard = event.transcript
        elif isinstance(event, ResponseCreated) and self.response_id is None:
            self.response_id = str(event.response.get("id") or "")
        elif isinstance(event, (AudioTranscriptDelta, TextDelta)) and self._mine(event.response_id):
            self._text.append(event.delta)
        elif isinstance(event, AudioTranscriptDone) and self._mine(event.response_id):
            self._final_text = event.transcript
        elif isinstance(event, TextDone) and self._mine(event.response_id):
            self._final_text = event.text
        elif isinstance(event, AudioDelta) and self._mine(event.response_id):
            self.audio += event.pcm
        elif isinstance(event, ResponseDone) and self._mine(event.response_id):
            self.status = event.status or "completed"
            self.usage = event.response.get("usage") or None
