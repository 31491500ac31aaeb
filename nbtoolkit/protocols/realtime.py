"""Qwen-Omni realtime protocol (sans-I/O): the typed events of both directions and their parser.

The wire format is JSON text frames ``{"event_id", "type", ...}``. Both directions use the same
dataclasses: :func:`parse_server_event` / :func:`parse_client_event` turn a frame into a typed event
(an unknown ``type`` becomes :class:`UnknownEvent`; a frame that is not a JSON object with a string
``type``, or lacks a field its type needs, raises :class:`~nbtoolkit.errors.ProtocolError`), and
``event.to_json()`` builds a frame.

The rest of the protocol lives with its user: the client folds server events into one turn with
:class:`nbtoolkit.protocols.realtime_turn.RealtimeTurnCollector`; the local server runs
:class:`nbtoolkit.local.realtime_session.RealtimeSession`; the ranges of ``session.update``'s
parameters are checked by :mod:`nbtoolkit.protocols.params`.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar

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
    "OutputItemAdded",
    "OutputItemDone",
    "RealtimeEvent",
    "ResponseCancel",
    "ResponseCreate",
    "ResponseCreated",
    "ResponseDone",
    "SessionCreated",
    "SessionFinish",
    "SessionFinished",
    "SessionUpdate",
    "SessionUpdated",
    "SpeechStarted",
    "SpeechStopped",
    "TextDelta",
    "TextDone",
    "UnknownEvent",
    "decode_base64",
    "new_id",
    "parse_client_event",
    "parse_server_event",
]

#: Input audio is PCM16 mono at 16 kHz; output audio PCM16 mono at 24 kHz
#: (https://www.alibabacloud.com/help/en/model-studio/server-events, ``session.created``).
INPUT_RATE = 16000
OUTPUT_RATE = 24000
VOICES = ("Chelsie", "Serena", "Ethan", "Cherry")
#: One image is at most 500 KB (the Qwen-Omni realtime guide).
MAX_IMAGE_BYTES = 500 * 1024
DEFAULT_TURN_DETECTION: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 800,
    "create_response": True,
    "interrupt_response": True,
}


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
        return decode_base64(self.delta, "response.audio.delta")


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


def decode_base64(text: str, what: str) -> bytes:
    """The bytes of base64 ``text``; :class:`~nbtoolkit.errors.ProtocolError` naming ``what`` if it is not base64."""
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
