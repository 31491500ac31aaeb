"""A finished batch: per-item results, a summary table, a DataFrame and plots (matplotlib, lazily)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbtoolkit import pricing
from nbtoolkit.batch.outcome import ItemResult
from nbtoolkit.errors import ConfigError
from nbtoolkit.results import html_table
from nbtoolkit.text import edit_distance, exact_match, tokens

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["BatchResult", "BatchSummary"]


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    import numpy as np

    return float(np.percentile(values, q))


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:.0f} ms"


@dataclass(frozen=True)
class BatchSummary:
    """Counts, latency, tokens, cost and (where references exist) accuracy of a batch."""

    items: int
    ok: int
    failed: dict[str, int]  # error type -> items
    latency_mean: float | None  # seconds, over answered items
    latency_p50: float | None
    latency_p95: float | None
    tokens: int
    cost: float  # CNY of the answered items with a known price
    unpriced: int  # answered items whose cost is unknown (not in ``cost``)
    offline: bool  # every answered item came from the offline engine
    scored: int  # answered items with a reference
    wer: float | None  # corpus WER: all edits / all reference words
    exact_match: float | None  # share of scored items matching exactly
    resumed: int = 0  # items taken from the output file instead of being run again

    @classmethod
    def of(
        cls,
        results: list[ItemResult],
        resumed: int = 0,
        extract: Callable[[str], str] | None = None,
    ) -> BatchSummary:
        answered = [r for r in results if r.ok]
        latencies = [r.latency for r in answered if r.latency is not None]
        pairs = [(r.reference or "", r.hypothesis(extract) or "") for r in answered if r.reference]
        ref_words = sum(len(tokens(ref)) for ref, _ in pairs)
        edits = sum(edit_distance(tokens(ref), tokens(hyp)) for ref, hyp in pairs)
        known = [r.cost for r in answered if r.cost is not None]
        return cls(
            items=len(results),
            ok=len(answered),
            failed=dict(Counter(r.error_type for r in results if r.error_type).most_common()),
            latency_mean=sum(latencies) / len(latencies) if latencies else None,
            latency_p50=_percentile(latencies, 50),
            latency_p95=_percentile(latencies, 95),
            tokens=sum(r.tokens for r in answered),
            cost=sum(known, 0.0),
            unpriced=len(answered) - len(known),
            offline=bool(answered)
            and all(r.usage is not None and pricing.is_offline(r.usage) for r in answered),
            scored=len(pairs),
            wer=edits / ref_words if ref_words else None,
            exact_match=(
                sum(exact_match(ref, hyp) for ref, hyp in pairs) / len(pairs) if pairs else None
            ),
            resumed=resumed,
        )

    def cost_label(self) -> str:
        """The cost as people should read it (offline, an amount, and how many are unknown)."""
        if self.offline:
            return pricing.OFFLINE_LABEL
        if self.unpriced and self.unpriced == self.ok:
            return pricing.UNKNOWN_LABEL
        extra = f" + {self.unpriced} items of unknown price" if self.unpriced else ""
        return pricing.format_cny(self.cost) + extra

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs, as shown in the table."""
        failed = ", ".join(f"{k} ×{n}" for k, n in self.failed.items()) or "none"
        rows = [
            ("items", str(self.items)),
            ("ok", str(self.ok)),
            ("failed", failed),
            ("latency mean / p50 / p95", " / ".join(map(_ms, self._latencies()))),
            ("tokens", str(self.tokens)),
            ("cost", self.cost_label()),
        ]
        if self.wer is not None:
            rows.append(("WER", f"{self.wer:.1%} over {self.scored} items"))
        if self.exact_match is not None:
            rows.append(("exact match", f"{self.exact_match:.0%}"))
        if self.resumed:
            rows.append(("resumed from output", f"{self.resumed} items"))
        return rows

    def _latencies(self) -> tuple[float | None, float | None, float | None]:
        return self.latency_mean, self.latency_p50, self.latency_p95

    def to_dict(self) -> dict[str, Any]:
        """The figures as a plain dict (for logging or comparing runs)."""
        return asdict(self)

    def __str__(self) -> str:
        return "\n".join(f"{label:>26}: {value}" for label, value in self.rows())

    def _repr_html_(self) -> str:
        return html_table(["", ""], self.rows(), caption="batch summary")


@dataclass
class BatchResult:
    """Every item's :class:`ItemResult`, in input order. ``result["id"]`` finds one."""

    results: list[ItemResult]
    output: Path | None = None
    resumed: int = 0  # items read back from ``output`` rather than run in this call
    elapsed: float = 0.0  # seconds this call took
    _by_id: dict[str, ItemResult] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_id = {r.id: r for r in self.results}

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[ItemResult]:
        return iter(self.results)

    def __getitem__(self, item_id: str) -> ItemResult:
        try:
            return self._by_id[item_id]
        except KeyError:
            raise ConfigError(
                f"No item with id {item_id!r} in this batch", "see [r.id for r in result]"
            ) from None

    @property
    def failed(self) -> list[ItemResult]:
        """The items that ended with an error."""
        return [r for r in self.results if not r.ok]

    def summary(self, extract: Callable[[str], str] | None = None) -> BatchSummary:
        """Counts, failures by type, latency, tokens, cost, and WER where references exist.

        ``extract`` maps a reply to the text that is scored, e.g. :func:`~nbtoolkit.batch.quoted`
        for answers like ``The audio says: "…".``
        """
        return BatchSummary.of(self.results, self.resumed, extract)

    def to_dataframe(self, extract: Callable[[str], str] | None = None) -> pd.DataFrame:
        """One row per item: the stored record plus ``ok``, ``tokens`` and ``wer`` (of the reply,
        or of ``extract(reply)``)."""
        import pandas as pd

        rows = [
            {**r.to_record(), "ok": r.ok, "tokens": r.tokens, "wer": r.word_error_rate(extract)}
            for r in self
        ]
        return pd.DataFrame(rows)

    def _repr_html_(self) -> str:
        return self.summary()._repr_html_()

    def __repr__(self) -> str:
        s = self.summary()
        return f"BatchResult({s.items} items, {s.ok} ok, {s.items - s.ok} failed)"

    # ------------------------------------------------------------------ plots
    def plot_latency(self, ax: Axes | None = None, bins: int = 20) -> Axes:
        """Histogram of the answered items' latency (ms)."""
        ax = _axes(ax)
        values = [r.latency * 1000 for r in self if r.ok and r.latency is not None]
        ax.set(title="latency")
        if not values:
            return _empty(ax, "no answered items")
        ax.hist(values, bins=bins, color="#4c72b0")
        ax.set(xlabel="latency (ms)", ylabel="items")
        _whole_numbers(ax)
        return ax

    def plot_cost(self, ax: Axes | None = None) -> Axes:
        """Cost per answered item (CNY), in input order; items of unknown price are left out."""
        ax = _axes(ax)
        summary = self.summary()
        ax.set(title="cost per item")
        if summary.offline:
            return _empty(ax, pricing.OFFLINE_LABEL)
        priced = [(i, r.cost) for i, r in enumerate(self) if r.ok and r.cost is not None]
        if not priced:
            return _empty(ax, f"price {pricing.UNKNOWN_LABEL}")
        ax.bar([i for i, _ in priced], [c for _, c in priced], color="#55a868")
        if summary.unpriced:
            ax.set(title=f"cost per item ({summary.unpriced} of unknown price not shown)")
        ax.set(xlabel="item", ylabel="CNY")
        return ax

    def plot_errors(self, ax: Axes | None = None) -> Axes:
        """Failed items by error type."""
        ax = _axes(ax)
        failed = self.summary().failed
        ax.set(title="errors by type")
        if not failed:
            return _empty(ax, "no errors")
        ax.bar(list(failed), list(failed.values()), color="#c44e52")
        ax.set(ylabel="items")
        _whole_numbers(ax)
        return ax

    def plot(self) -> Figure:
        """Latency histogram, cost per item and errors by type, side by side."""
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
        self.plot_latency(axes[0])
        self.plot_cost(axes[1])
        self.plot_errors(axes[2])
        fig.tight_layout()
        return fig


def _empty(ax: Axes, message: str) -> Axes:
    """A plot with nothing to draw says why instead of showing empty axes."""
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set(xticks=[], yticks=[])
    return ax


def _whole_numbers(ax: Axes) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _axes(ax: Axes | None) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _fig, new = plt.subplots(figsize=(5, 3))
    return new
