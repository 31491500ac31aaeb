"""The events of one answer as it arrives, the same for every backend: ``client.stream(...)``.

    for event in client.stream(audio=clip):          # or: async for event in client.stream(...)
        if event.type == "text.delta":
            print(event.delta, end="")
        elif event.type == "done":
            reply = event.reply

Every event has a ``type``; what a backend sends that has no event here arrives as :class:`RawEvent`
(its ``type`` and the message as the backend gave it), so nothing is dropped. The stream always ends
with :class:`Done` (holding the whole :class:`~nbtoolkit.results.Reply`) or raises the backend's
error, whose ``partial`` keeps what arrived.

A live session (``async for event in dialog.live()``) is one stream of many turns: each ends with
its own :class:`Done`; an answer cut short by a barge-in also gives :class:`Cancelled` first, and a
turn that fails without ending the session gives :class:`Failed`. The iteration ends with the
session (it raises what ended it, if something did).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from nbtoolkit.audio.clip import Clip
from nbtoolkit.errors import NbToolkitError
from nbtoolkit.results import Reply

__all__ = [
    "AudioDelta",
    "Cancelled",
    "Done",
    "Failed",
    "Heard",
    "RawEvent",
    "SpeechStarted",
    "SpeechStopped",
    "StateChanged",
    "StreamEvent",
    "TextDelta",
]


@dataclass(frozen=True)
class TextDelta:
    """A piece of the answer's text (or of its transcript, for a spoken answer)."""

    delta: str
    type: Literal["text.delta"] = "text.delta"


@dataclass(frozen=True)
class AudioDelta:
    """A piece of the spoken answer."""

    audio: Clip = field(repr=False)
    type: Literal["audio.delta"] = "audio.delta"


@dataclass(frozen=True)
class Heard:
    """What the backend recognised of the spoken question so far (``final`` once it is complete)."""

    text: str
    final: bool = True
    type: Literal["input.transcript"] = "input.transcript"


@dataclass(frozen=True)
class SpeechStarted:
    """The backend's voice detector heard the question begin."""

    type: Literal["speech.started"] = "speech.started"


@dataclass(frozen=True)
class SpeechStopped:
    """The backend's voice detector heard the question end."""

    type: Literal["speech.stopped"] = "speech.stopped"


@dataclass(frozen=True)
class StateChanged:
    """The dialog's state changed (``"Listening"``, ``"Thinking"``, ``"Responding"``…)."""

    state: str
    type: Literal["state"] = "state"


@dataclass(frozen=True)
class Done:
    """The answer is complete: ``reply`` is the same :class:`Reply` that ``ask`` returns."""

    reply: Reply
    type: Literal["done"] = "done"


@dataclass(frozen=True)
class Cancelled:
    """Live sessions: the answer was cancelled before its end (the user spoke over it, began a
    new utterance, or called ``interrupt()``), so a player should drop what it still holds of it.
    ``reply`` is what arrived (status ``"cancelled"``); the rest of its audio never comes, and its
    :class:`Done` follows."""

    reply: Reply
    type: Literal["cancelled"] = "cancelled"


@dataclass(frozen=True)
class Failed:
    """Live sessions: one turn failed (the server refused it, or heard no speech) and the session
    goes on. ``error`` is the toolkit's error; its ``partial`` keeps what arrived, if anything."""

    error: NbToolkitError
    type: Literal["failed"] = "failed"


@dataclass(frozen=True)
class RawEvent:
    """A backend message with no event of its own here, kept as it came."""

    type: str
    raw: Any = field(repr=False, default=None)


StreamEvent = (
    TextDelta
    | AudioDelta
    | Heard
    | SpeechStarted
    | SpeechStopped
    | StateChanged
    | Cancelled
    | Done
    | Failed
    | RawEvent
)
