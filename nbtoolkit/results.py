"""What backends return: :class:`Reply` (one answer, the same type from every backend),
:class:`Usage` (tokens by modality, with cost) and :class:`Timeline` (timestamped events).

Plain dataclasses; rich display lives in ``_repr_html_`` and the plots in :mod:`nbtoolkit.display`.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from nbtoolkit import pricing
from nbtoolkit.audio.clip import Clip
from nbtoolkit.config import scrub_secrets
from nbtoolkit.errors import ConfigError

__all__ = [
    "LANES",
    "LATENCIES",
    "SPAN_PAIRS",
    "Event",
    "Reply",
    "Span",
    "Timeline",
    "Usage",
    "html_table",
]


def _count(value: Any) -> int:
    """A token count from a usage dict: missing or null is 0."""
    return int(value or 0)


def _esc(value: Any) -> str:
    return html.escape(scrub_secrets(str(value)))


def html_table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], *, caption: str | None = None
) -> str:
    """A small HTML table; every cell is escaped (and scrubbed of secrets)."""
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    cap = f"<caption>{_esc(caption)}</caption>" if caption else ""
    return (
        f'<table class="nbtoolkit">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    )


@dataclass(frozen=True)
class Usage:
    """Tokens by modality, in and out, for one call of ``model``."""

    model: str = ""
    input_text: int = 0
    input_audio: int = 0
    input_image: int = 0
    output_text: int = 0
    output_audio: int = 0
    local: bool = False  # counted by the offline engine: no charge (see nbtoolkit.pricing)

    @classmethod
    def from_dashscope(
        cls, usage: Mapping[str, Any] | None, *, model: str = "", local: bool = False
    ) -> Usage:
        """Parse a DashScope ``usage`` object; ``model`` and ``local`` come from the caller.

        Two shapes arrive (docs/protocols.md#conversation-usage and #realtime-events):

        * HTTP (Qwen-Audio): ``{input_tokens, output_tokens, audio_tokens}``, sometimes
          ``image_tokens``. ``audio_tokens``/``image_tokens`` are *input* tokens reported beside
          ``input_tokens`` (the Qwen-Audio sample has 33 input tokens and 85 audio tokens, so the
          audio cannot be inside the 33); ``output_tokens`` is text.
        * realtime (``response.done``) and newer HTTP models: ``input_tokens_details`` /
          ``output_tokens_details`` with ``text_tokens``, ``audio_tokens``, ``image_tokens``. A
          missing ``text_tokens`` is whatever of the total the other modalities leave.

        Unknown keys (``total_tokens``, ``characters``, ``video_tokens``…) are ignored.
        """
        data = dict(usage or {})
        input_total = _count(data.get("input_tokens"))
        output_total = _count(data.get("output_tokens"))
        in_details = data.get("input_tokens_details") or {}
        out_details = data.get("output_tokens_details") or {}
        if in_details:
            in_audio = _count(in_details.get("audio_tokens"))
            in_image = _count(in_details.get("image_tokens"))
            in_text = _count(
                in_details.get("text_tokens", max(input_total - in_audio - in_image, 0))
            )
        else:
            in_audio = _count(data.get("audio_tokens"))
            in_image = _count(data.get("image_tokens"))
            in_text = input_total
        out_audio = _count(out_details.get("audio_tokens"))
        out_text = _count(out_details.get("text_tokens", max(output_total - out_audio, 0)))
        return cls(model, in_text, in_audio, in_image, out_text, out_audio, local)

    @property
    def cost(self) -> float | None:
        """CNY for this call (:func:`nbtoolkit.pricing.cost`): ``None`` when the price is unknown."""
        return pricing.cost(self)

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
        """The sum of two usages. Price calls one by one: a sum's cost can differ (see pricing)."""
        if self._is_zero():
            return other
        if other._is_zero():
            return self
        # different models cannot share one price: "mixed" prices as unknown, never as one of them
        if other.model in ("", self.model):
            model = self.model
        elif not self.model:
            model = other.model
        else:
            model = "mixed"
        return Usage(
            model,
            self.input_text + other.input_text,
            self.input_audio + other.input_audio,
            self.input_image + other.input_image,
            self.output_text + other.output_text,
            self.output_audio + other.output_audio,
            self.local and other.local,
        )

    def __radd__(self, other: object) -> Usage:
        # lets sum(usages) start from its default 0
        if other == 0:
            return self
        return NotImplemented

    def _is_zero(self) -> bool:
        return self.total_tokens == 0 and not self.model

    def rows(self) -> list[tuple[str, int, int]]:
        """(modality, input tokens, output tokens) for text, audio and image."""
        return [
            ("text", self.input_text, self.output_text),
            ("audio", self.input_audio, self.output_audio),
            ("image", self.input_image, 0),
        ]

    def _repr_html_(self) -> str:
        body: list[tuple[Any, ...]] = [(name, i, o, i + o) for name, i, o in self.rows()]
        body.append(("total", self.input_tokens, self.output_tokens, self.total_tokens))
        body.append(("cost", "", "", pricing.cost_label(self)))
        caption = self.model or "model not set"
        return html_table(["modality", "in", "out", "total"], body, caption=caption)


# Event names the latency figures and spans understand. Backends mark server events by their
# protocol type (e.g. "response.audio.delta") and their own moments by the short names.
# Each tuple: our generic name, the realtime protocol's event, then the dialog protocol's.
SPEECH_STARTED = ("speech_started", "input_audio_buffer.speech_started", "SpeechStarted")
SPEECH_STOPPED = ("speech_stopped", "input_audio_buffer.speech_stopped", "SpeechEnded")
REQUEST = ("request", "response.create", "StopSpeech", "RequestToRespond")  # answer requested
FIRST_TOKEN = (
    "first_token",
    "response.audio_transcript.delta",
    "response.text.delta",
    "RespondingContent",
)
FIRST_AUDIO = ("first_audio", "response.audio.delta")
DONE = ("done", "response.done", "RespondingEnded")

#: name -> (start event names, end event names); each figure runs from the first start event to
#: the first end event at or after it (so on a multi-turn timeline, the first turn's figure).
LATENCIES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "speech": (SPEECH_STARTED, SPEECH_STOPPED),
    "speech_end_to_first_token": (SPEECH_STOPPED, FIRST_TOKEN),
    "speech_end_to_first_audio": (SPEECH_STOPPED, FIRST_AUDIO),
    "speech_end_to_done": (SPEECH_STOPPED, DONE),
    "request_to_first_token": (REQUEST, FIRST_TOKEN),
    "request_to_first_audio": (REQUEST, FIRST_AUDIO),
    "request_to_done": (REQUEST, DONE),
}

#: (label, start names, end names) of the intervals drawn as spans; besides these, any
#: "<x>_started" event pairs with the next "<x>_stopped" on the same lane.
SPAN_PAIRS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("request", REQUEST, DONE),
    ("response", ("response.created",), ("response.done",)),
    ("audio out", ("response.audio.delta",), ("response.audio.done",)),
)

#: preferred lane order (top to bottom) for tables and plots; other lanes follow in first-seen order
LANES = ("client", "server", "vad", "audio-in", "audio-out", "state")


@dataclass(frozen=True)
class Event:
    """One moment in a session: ``t`` seconds since the timeline started, on a ``lane``."""

    t: float
    lane: str  # e.g. "client", "server", "vad", "audio-in", "audio-out", "state"
    name: str  # e.g. "speech_started", "response.audio.delta"
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Span:
    """An interval between paired events (e.g. speech_started → speech_stopped), on ``lane``."""

    lane: str
    label: str
    start: float
    end: float


class Timeline:
    """Timestamped events of a session or turn, on a monotonic clock started at creation.

    Event names with a meaning here: "speech_started"/"speech_stopped" (or the realtime
    "input_audio_buffer.*" events), "request" (or "response.create"), "first_token" (or the first
    "response.audio_transcript.delta"/"response.text.delta"), "first_audio" (or the first
    "response.audio.delta"), "done" (or "response.done"); see :data:`LATENCIES` and
    :data:`SPAN_PAIRS`. Other names are shown and plotted as they are.
    """

    def __init__(self, t0: float | None = None) -> None:
        self.t0 = time.monotonic() if t0 is None else t0
        self.events: list[Event] = []

    @classmethod
    def from_events(
        cls,
        events: Iterable[Event | tuple[float, str, str] | tuple[float, str, str, dict[str, Any]]],
    ) -> Timeline:
        """A timeline of given events: :class:`Event` values or ``(t, lane, name[, detail])`` tuples.

        Use it to replay recorded events or to build an example; ``t`` is in seconds.
        """
        timeline = cls(t0=0.0)
        for ev in events:
            if not isinstance(ev, Event):
                t, lane, name, *rest = ev
                ev = Event(float(t), lane, name, dict(rest[0]) if rest else {})
            timeline.events.append(ev)
        timeline.events.sort(key=lambda e: e.t)
        return timeline

    def mark(self, lane: str, name: str, **detail: Any) -> Event:
        """Add an event named ``name`` on ``lane``, now."""
        if not isinstance(lane, str) or not isinstance(name, str):
            raise ConfigError(
                f"Timeline.mark() takes a lane and a name as text, not {lane!r}, {name!r}",
                'e.g. timeline.mark("client", "request")',
            )
        ev = Event(time.monotonic() - self.t0, lane, name, dict(detail))
        self.events.append(ev)
        return ev

    def first(self, name: str) -> Event | None:
        return next((e for e in self.events if e.name == name), None)

    def between(self, start: str, end: str) -> float | None:
        """Seconds from the first ``start`` event to the first ``end`` event after it."""
        return self._interval((start,), (end,))

    def _interval(self, starts: Sequence[str], ends: Sequence[str]) -> float | None:
        a = next((e for e in self.events if e.name in starts), None)
        if a is None:
            return None
        b = next((e for e in self.events if e.name in ends and e.t >= a.t), None)
        return None if b is None else b.t - a.t

    def latencies(self) -> dict[str, float]:
        """The figures of :data:`LATENCIES` that this timeline has events for, in seconds."""
        found = {name: self._interval(*names) for name, names in LATENCIES.items()}
        return {name: value for name, value in found.items() if value is not None}

    def lanes(self) -> list[str]:
        """Lanes in display order: the usual ones first (:data:`LANES`), then others as seen."""
        seen = list(dict.fromkeys(e.lane for e in self.events))
        return [lane for lane in LANES if lane in seen] + [x for x in seen if x not in LANES]

    def spans(self) -> list[Span]:
        """Intervals between paired events (:data:`SPAN_PAIRS` and "<x>_started"/"<x>_stopped")."""
        events = sorted(self.events, key=lambda e: e.t)
        found: list[Span] = []
        for label, starts, ends in SPAN_PAIRS:
            opened: Event | None = None
            for ev in events:
                if opened is None and ev.name in starts:
                    opened = ev
                elif opened is not None and ev.name in ends:
                    found.append(Span(opened.lane, label, opened.t, ev.t))
                    opened = None
        open_started: dict[tuple[str, str], Event] = {}
        for ev in events:
            if ev.name.endswith("_started"):
                open_started.setdefault((ev.lane, ev.name[: -len("_started")]), ev)
            elif ev.name.endswith("_stopped"):
                key = (ev.lane, ev.name[: -len("_stopped")])
                start = open_started.pop(key, None)
                if start is not None:
                    found.append(Span(ev.lane, key[1].rsplit(".", 1)[-1], start.t, ev.t))
        return sorted(found, key=lambda s: s.start)

    def to_rows(self) -> list[dict[str, Any]]:
        """One dict per event: ``t_ms``, ``lane``, ``name``, ``detail`` (for pandas or printing)."""
        return [
            {"t_ms": e.t * 1000, "lane": e.lane, "name": e.name, "detail": dict(e.detail)}
            for e in self.events
        ]

    def summary(self) -> str:
        """One line: the number of events and the latency figures in ms."""
        figures = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in self.latencies().items())
        return f"{len(self)} events" + (f"; {figures}" if figures else "")

    def _repr_html_(self) -> str:
        # A realtime answer sends hundreds of audio deltas: a run of the same event on a lane is one
        # row (events on other lanes in between do not break the run).
        runs: list[list[Any]] = []  # [first event, count, last t]
        last_on_lane: dict[str, list[Any]] = {}
        for ev in self.events:
            run = last_on_lane.get(ev.lane)
            if run is not None and run[0].name == ev.name:
                run[1] += 1
                run[2] = ev.t
            else:
                last_on_lane[ev.lane] = run = [ev, 1, ev.t]
                runs.append(run)
        rows = [
            [
                f"{first.t * 1000:.1f}",
                first.lane,
                first.name + (f" ×{n} (to {last * 1000:.1f} ms)" if n > 1 else ""),
                ", ".join(f"{k}={v}" for k, v in first.detail.items()),
            ]
            for first, n, last in runs
        ]
        return html_table(["t (ms)", "lane", "event", "detail"], rows, caption=self.summary())

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)


def _audio_html(audio: Clip | None) -> str:
    """The clip's own player if it has one, in a box that cannot grow past the output area."""
    player = getattr(audio, "_repr_html_", None)
    if player is None:
        return ""
    return f'<div style="max-width:480px;max-height:120px;overflow:hidden">{player()}</div>'


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:.0f} ms"


@dataclass
class Reply:
    """One answer from any backend (Qwen-Audio, Dialog, Omni realtime, audio-modalities).

    ``text`` is the answer (for speech, its transcript), ``audio`` the spoken answer (a
    :class:`~nbtoolkit.audio.Clip`, or ``None`` for a text-only answer), ``heard`` what the backend
    recognised of the question when it was spoken ("" otherwise), ``status`` "completed",
    "cancelled" (a barge-in stopped it) or "failed" (an error's ``partial``), and ``timeline`` the
    events of the exchange. ``latency`` is seconds from the question to the complete answer and
    ``first_token_latency`` to its first piece (both from the timeline when not given).
    """

    text: str
    _: KW_ONLY  # the rest by name: Reply(text, usage=…) reads the same in every backend
    audio: Clip | None = None
    usage: Usage = field(default_factory=Usage)
    timeline: Timeline = field(default_factory=Timeline)
    request_id: str | None = None
    heard: str = ""
    status: str = "completed"
    model: str = ""
    local: bool = False  # answered by the offline engine
    latency: float | None = None
    first_token_latency: float | None = None
    raw: Any = field(default=None, repr=False)

    def _repr_html_(self) -> str:
        # raw is never shown: it is whatever the server sent and may hold anything
        facts = [
            ("status", self.status),
            (
                "model",
                (self.model or self.usage.model or "—")
                + (" (offline engine)" if self.local else ""),
            ),
            ("request id", self.request_id or "—"),
            ("first token", _ms(self.first_token_latency)),
            ("complete", _ms(self.latency)),
            *((name, _ms(value)) for name, value in self.timeline.latencies().items()),
        ]
        if len(self.timeline):
            facts.append(("timeline", f"{len(self.timeline)} events"))
        heard = (
            f"<p><b>heard:</b> {_esc(self.heard)}</p><p><b>answer:</b> {_esc(self.text)}</p>"
            if self.heard
            else f"<p>{_esc(self.text)}</p>"
        )
        return (
            f'<div class="nbtoolkit-reply">{heard}{_audio_html(self.audio)}'
            f"{html_table(['', ''], facts)}{self.usage._repr_html_()}</div>"
        )
