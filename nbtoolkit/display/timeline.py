"""A timeline as swimlanes: one row per lane, a marker per event, bars for paired start/stop spans."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbtoolkit.errors import ConfigError
from nbtoolkit.results import Timeline

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_timeline"]

#: vertical offsets (points) of event labels, used in turn within a lane
_LABEL_OFFSETS = (7, -7, 15, -15)
#: protocol prefixes left off the labels (the lane already says where an event came from)
_PREFIXES = ("input_audio_buffer.", "conversation.item.", "conversation.")


def _short(name: str) -> str:
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix) :]
    # "response.audio.delta" -> "audio.delta", but "response.done" stays as it is
    return name.split(".", 1)[1] if name.count(".") >= 2 else name


def plot_timeline(timeline: Timeline, ax: Axes | None = None) -> Axes:
    """Swimlanes of ``timeline`` in ms: lanes top to bottom in :meth:`Timeline.lanes` order, a tick
    per event (each name labelled once, at its first occurrence), and a bar per
    :meth:`Timeline.spans` interval. Returns the axes; its y tick labels are the lanes.
    """
    import matplotlib.pyplot as plt  # lazy: plotting is optional at import time

    if not isinstance(timeline, Timeline):
        raise ConfigError(
            f"plot_timeline() draws a Timeline, not a {type(timeline).__name__}",
            "pass reply.timeline (or Timeline.from_events([...]))",
        )
    lanes = timeline.lanes()
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(10, 0.75 * len(lanes) + 1.2))
    row = {lane: len(lanes) - 1 - i for i, lane in enumerate(lanes)}  # first lane on top
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, span in enumerate(timeline.spans()):
        ax.broken_barh(
            [(span.start * 1000, (span.end - span.start) * 1000)],
            (row[span.lane] - 0.3, 0.6),
            color=colours[i % len(colours)],
            alpha=0.35,
        )
        ax.text(
            span.end * 1000,
            row[span.lane] - 0.22,
            span.label,
            fontsize="x-small",
            style="italic",
            ha="right",
        )
    for lane in lanes:
        times = [ev.t * 1000 for ev in timeline if ev.lane == lane]
        ax.plot(times, [row[lane]] * len(times), "|", markersize=12, color="black")
    labelled: set[tuple[str, str]] = set()
    for ev in timeline:
        if (ev.lane, ev.name) in labelled:
            continue
        labelled.add((ev.lane, ev.name))
        # stagger a lane's labels over four heights so events milliseconds apart stay readable
        level = sum(1 for lane, _ in labelled if lane == ev.lane) - 1
        ax.annotate(
            _short(ev.name),
            (ev.t * 1000, row[ev.lane]),
            xytext=(2, _LABEL_OFFSETS[level % len(_LABEL_OFFSETS)]),
            textcoords="offset points",
            fontsize="x-small",
            va="center",
        )
    ax.set_yticks(list(row.values()), list(row.keys()))
    ax.set_ylim(-0.8, len(lanes) - 0.2)
    ax.margins(x=0.1)  # room for the labels of the last events
    ax.set_xlabel("ms since start")
    ax.grid(axis="x", alpha=0.3)
    if fig is not None:  # lay out only a figure we made, never the caller's
        fig.tight_layout()
    return ax
