"""Token usage as stacked bars (one bar per turn or call, one colour per modality and direction)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from nbtoolkit import pricing
from nbtoolkit.results import Usage

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["SERIES", "UsageBook", "plot_usage"]

#: (label, Usage attribute) of each stacked series, bottom to top
SERIES = (
    ("text in", "input_text"),
    ("audio in", "input_audio"),
    ("image in", "input_image"),
    ("text out", "output_text"),
    ("audio out", "output_audio"),
)


class UsageBook(Protocol):
    """What :func:`plot_usage` reads of a :class:`~nbtoolkit.ledger.Ledger` (named by shape, so
    this plotting layer does not import the ledger, whose ``plot()`` calls it)."""

    @property
    def entries(self) -> Sequence[Any]: ...

    def by_turn(self) -> Mapping[Any, Any]: ...

    @property
    def budget_cny(self) -> float | None: ...


def _groups(
    source: UsageBook | Sequence[Any],
) -> tuple[list[str], list[Usage], list[float | None], float | None]:
    """Bar labels, usages and costs (None = unknown price), and the budget, from any source."""
    if isinstance(source, Sequence):
        # a list of Usage, or of things carrying one (Reply, LedgerEntry)
        usages = [item if isinstance(item, Usage) else item.usage for item in source]
        return [str(i) for i in range(len(usages))], usages, [pricing.cost(u) for u in usages], None
    entries = source.entries
    if any(e.turn is not None for e in entries):
        turns = source.by_turn()
        labels = [f"turn {k}" if k is not None else "no turn" for k in turns]
        usages = [s.usage for s in turns.values()]
        # a turn with any unpriced call has no honest total
        costs: list[float | None] = [None if s.unpriced else s.cost for s in turns.values()]
    else:
        labels = [f"#{e.index}" for e in entries]
        usages = [e.usage for e in entries]
        costs = [e.cost for e in entries]
    return labels, usages, costs, source.budget_cny


def plot_usage(source: UsageBook | Sequence[Any], ax: Axes | None = None) -> Axes:
    """Stacked token bars by modality for a :class:`~nbtoolkit.ledger.Ledger` (per turn, or per call
    when no turns were recorded) or a list of ``Usage``/``Reply``, with the cumulative
    known cost (CNY) on a second axis and the budget as a dashed line. Returns the bar axes.

    Only modalities that occur get a series, so each ``ax.containers`` entry has one bar per group.
    """
    import matplotlib.pyplot as plt  # lazy: plotting is optional at import time

    labels, usages, costs, budget = _groups(source)
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * len(labels) + 3.5), 3.2))
    positions = list(range(len(labels)))
    bottom = [0] * len(labels)
    for label, attr in SERIES:
        values = [getattr(u, attr) for u in usages]
        if not any(values):
            continue
        ax.bar(positions, values, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_xticks(positions, labels)
    ax.set_ylabel("tokens")
    handles, names = ax.get_legend_handles_labels()
    if any(c for c in costs):
        running, cumulative = 0.0, []
        for c in costs:
            running += c or 0.0
            cumulative.append(running)
        cost_ax = ax.twinx()
        cost_ax.plot(positions, cumulative, color="black", marker="o", label="cost so far")
        unknown = [p for p, c in zip(positions, costs, strict=True) if c is None]
        if unknown:
            # an unknown price is not zero: mark where the line leaves something out
            cost_ax.plot(
                unknown,
                [cumulative[p] for p in unknown],
                "x",
                color="red",
                markersize=10,
                label="unknown price",
            )
        if budget is not None:
            cost_ax.axhline(budget, color="red", linestyle="--", label="budget")
        cost_ax.set_ylabel("cumulative CNY")
        cost_ax.set_ylim(bottom=0)
        more_handles, more_names = cost_ax.get_legend_handles_labels()
        handles, names = handles + more_handles, names + more_names
    if handles:
        # outside the plot, so it never hides a bar
        ax.legend(handles, names, loc="upper left", bbox_to_anchor=(1.15, 1), fontsize="small")
    if fig is not None:  # lay out only a figure we made, never the caller's
        fig.tight_layout()
    return ax
