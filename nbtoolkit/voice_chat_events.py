"""What a voice chat's backend bridge tells the chat: small typed events, keyed on ``type``.

Data in a :class:`~nbtoolkit.voice_chat.VoiceChat` flows one way: recorder take events → chat →
bridge → backend → bridge → these events → :meth:`VoiceChat.apply <nbtoolkit.voice_chat.VoiceChat.apply>`,
which renders each on the badge, transcript, player and timeline. A bridge never reads or calls the
chat; what it needs to know about the widgets is carried in the event (``Flush.if_audible``).

Answer audio is labelled with the ``answer`` it belongs to (a response id, or a counter): once the
player has been flushed for an answer, its late audio is dropped and further flushes for it are
ignored, so one barge-in stops the player once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from nbtoolkit.results import Reply

__all__ = [
    "ERROR",
    "IDLE",
    "LISTENING",
    "RESPONDING",
    "STOPPED",
    "THINKING",
    "Audio",
    "ChatEvent",
    "Failed",
    "Flush",
    "Heard",
    "Mark",
    "Said",
    "State",
    "TurnDone",
]

#: The dialog states (``VoiceChat.state``).
IDLE, LISTENING, THINKING, RESPONDING, STOPPED, ERROR = (
    "IDLE",
    "LISTENING",
    "THINKING",
    "RESPONDING",
    "STOPPED",
    "ERROR",
)


@dataclass(frozen=True)
class Mark:
    """Something happened worth a point on the chat's timeline (VAD, server, client lanes)."""

    lane: str
    name: str
    detail: dict[str, Any] = field(default_factory=dict)
    type: Literal["mark"] = "mark"


@dataclass(frozen=True)
class State:
    """The dialog state is now ``state``; ``detail`` (a problem) is shown next to it."""

    state: str
    detail: str = ""
    type: Literal["state"] = "state"


@dataclass(frozen=True)
class Heard:
    """What the backend has recognised of the question so far."""

    text: str
    type: Literal["heard"] = "heard"


@dataclass(frozen=True)
class Said:
    """The answer's text so far."""

    text: str
    type: Literal["said"] = "said"


@dataclass(frozen=True)
class Audio:
    """A piece of the spoken answer ``answer`` for the player (PCM16 mono at ``rate``)."""

    pcm: bytes = field(repr=False)
    rate: int
    answer: str = ""
    type: Literal["audio"] = "audio"


@dataclass(frozen=True)
class Flush:
    """Stop the player now and drop answer ``answer`` (barge-in, or a new recording).

    ``by`` names who barged in (marked on the timeline; "" for none); with ``if_audible`` the
    player is flushed only if it still plays or holds audio (an answer that is complete on the
    server may still be playing in the browser).
    """

    reason: str
    answer: str = ""
    by: str = ""
    if_audible: bool = False
    type: Literal["flush"] = "flush"


@dataclass(frozen=True)
class TurnDone:
    """``turn`` is complete: show it, let the player run dry, listen again. A turn with an empty
    timeline gets the chat's marks since the previous turn."""

    turn: Reply
    type: Literal["turn"] = "turn"


@dataclass(frozen=True)
class Failed:
    """One turn failed (too short, no speech heard, refused, timed out); the conversation goes
    on. What arrived (``error.partial``, if a turn) is kept; why is shown on the badge."""

    error: Exception
    type: Literal["failed"] = "failed"


ChatEvent = Mark | State | Heard | Said | Audio | Flush | TurnDone | Failed
