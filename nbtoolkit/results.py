"""What backends return: :class:`Reply` (one answer), :class:`Turn` (one spoken exchange),
:class:`Usage` (tokens by modality, with cost) and :class:`Timeline` (timestamped events).

Plain dataclasses; rich display lives in ``_repr_html_`` and the plots in :mod:`nbtoolkit.display`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from nbtoolkit.audio.clip import Clip

__all__ = ["Event", "Reply", "Timeline", "Turn", "Usage"]


@dataclass(frozen=True)
class Usage:
    """Tokens by modality, in and out, for one call of ``model``."""

    model: str = ""
    input_text: int = 0
    input_audio: int = 0
    input_image: int = 0
    output_text: int = 0
    output_audio: int = 0

    @property
    def input_tokens(self) -> int:
        return self.input_text + self.input_audio + self.input_image

    @property
    def output_tokens(self) -> int:
        return self.output_text + self.output_audio

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        model = (
            self.model
            if self.model == other.model or not other.model
            else (self.model or other.model)
        )
        return Usage(
            model,
            self.input_text + other.input_text,
            self.input_audio + other.input_audio,
            self.input_image + other.input_image,
            self.output_text + other.output_text,
            self.output_audio + other.output_audio,
        )


@dataclass(frozen=True)
class Event:
    """One moment in a session: ``t`` seconds since the timeline started, on a ``lane``."""

    t: float
    lane: str  # e.g. "client", "server", "vad", "audio-in", "audio-out", "state"
    name: str  # e.g. "speech_started", "response.audio.delta"
    detail: dict[str, Any] = field(default_factory=dict)


class Timeline:
    """Timestamped events of a session or turn, on a monotonic clock started at creation."""

    def __init__(self, t0: float | None = None) -> None:
        self.t0 = time.monotonic() if t0 is None else t0
        self.events: list[Event] = []

    def mark(self, lane: str, name: str, **detail: Any) -> Event:
        ev = Event(time.monotonic() - self.t0, lane, name, dict(detail))
        self.events.append(ev)
        return ev

    def first(self, name: str) -> Event | None:
        return next((e for e in self.events if e.name == name), None)

    def between(self, start: str, end: str) -> float | None:
        """Seconds from the first ``start`` event to the first ``end`` event after it."""
        a = self.first(start)
        if a is None:
            return None
        b = next((e for e in self.events if e.name == end and e.t >= a.t), None)
        return None if b is None else b.t - a.t

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)


@dataclass
class Reply:
    """One answer from a backend."""

    text: str
    usage: Usage = field(default_factory=Usage)
    audio: Clip | None = None
    request_id: str | None = None
    latency: float | None = None  # seconds from request to complete answer
    first_token_latency: float | None = None
    model: str = ""
    local: bool = False  # answered by the offline engine
    raw: Any = None


@dataclass
class Turn:
    """One spoken exchange: what was heard, what was answered (text and audio), and when."""

    heard: str  # recognised user speech ("" for text/image-only turns)
    text: str  # reply text (the output transcript)
    audio: Clip | None = None
    usage: Usage = field(default_factory=Usage)
    timeline: Timeline = field(default_factory=Timeline)
    status: str = "completed"  # "completed", "cancelled", "failed"
    request_id: str | None = None
    model: str = ""
    local: bool = False
