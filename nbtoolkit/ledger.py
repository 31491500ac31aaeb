"""The usage ledger: every call's tokens and cost, and an optional budget that refuses further calls.

Backends call ``ledger.check(local=...)`` before each call or turn and ``ledger.record(usage, ...)``
after it, from whatever thread they run on (the lock makes that safe). ``session_ledger()`` is the
process-wide ledger they use unless given another.

Cost is summed call by call (the output-text price depends on each call's input, see
:mod:`nbtoolkit.pricing`). Calls whose model has no known price are **not** counted as free: the
ledger reports them as ``unpriced`` beside the known sum, and displays say so. Offline-engine calls
cost nothing and are never refused by a budget.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nbtoolkit import pricing
from nbtoolkit.display.usage import plot_usage
from nbtoolkit.errors import BudgetExceeded, ConfigError
from nbtoolkit.results import Usage, html_table

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

__all__ = [
    "Ledger",
    "LedgerEntry",
    "LedgerSummary",
    "session_ledger",
    "set_session_budget",
]

#: rows shown by ``_repr_html_`` (the newest); ``to_dataframe()`` has them all
HTML_ROWS = 50


@dataclass(frozen=True)
class LedgerEntry:
    """One recorded call or turn."""

    index: int  # 0, 1, 2… in recording order
    usage: Usage
    backend: str  # e.g. "omni", "qwen_audio", "dialog"
    kind: str  # "call", "turn", …
    turn: int | None
    request_id: str | None
    latency: float | None  # seconds
    cost: float | None  # CNY; None when the model's price is unknown
    at: float  # wall-clock time.time() when recorded

    @property
    def offline(self) -> bool:
        """Answered by the offline engine (no charge)."""
        return pricing.is_offline(self.usage)


@dataclass(frozen=True)
class LedgerSummary:
    """Calls, summed usage and cost of a group of entries."""

    calls: int
    usage: Usage
    cost: float  # CNY of the calls with a known price
    unpriced: int  # calls whose price is unknown (not in ``cost``)

    @classmethod
    def of(cls, entries: list[LedgerEntry]) -> LedgerSummary:
        known = [e.cost for e in entries if e.cost is not None]
        return cls(
            calls=len(entries),
            usage=sum((e.usage for e in entries), Usage()),
            cost=sum(known, 0.0),
            unpriced=len(entries) - len(known),
        )

    def cost_label(self) -> str:
        """The cost as people should read it, naming calls of unknown price."""
        if self.unpriced and self.unpriced == self.calls:
            return pricing.UNKNOWN_LABEL
        text = pricing.format_cny(self.cost)
        return text + (f" + {self.unpriced} call(s) of unknown price" if self.unpriced else "")


def _check_budget(budget_cny: float | None) -> float | None:
    if budget_cny is None:
        return None
    if not isinstance(budget_cny, (int, float)) or budget_cny != budget_cny or budget_cny < 0:
        raise ConfigError(
            f"Budget {budget_cny!r} is not a usable amount",
            "give a number of CNY ≥ 0 (e.g. 0.5), or None for no budget",
        )
    return float(budget_cny)


class Ledger:
    """Usage and cost of calls, with an optional budget in CNY that :meth:`check` enforces."""

    def __init__(self, budget_cny: float | None = None) -> None:
        self._lock = threading.Lock()
        self._entries: list[LedgerEntry] = []
        self._budget = _check_budget(budget_cny)

    @property
    def budget_cny(self) -> float | None:
        """The budget in CNY (``None``: no limit). Setting it takes effect at the next check."""
        return self._budget

    @budget_cny.setter
    def budget_cny(self, value: float | None) -> None:
        self._budget = _check_budget(value)

    def check(self, *, local: bool = False) -> None:
        """Raise :class:`~nbtoolkit.errors.BudgetExceeded` if the budget is spent.

        Call before each cloud call. ``local=True`` (the offline engine, which costs nothing) is
        never refused.
        """
        budget = self._budget
        if local or budget is None:
            return
        summary = self.summary()
        if summary.cost >= budget:
            raise BudgetExceeded(
                f"The budget of {pricing.format_cny(budget)} is spent: "
                f"{summary.cost_label()} over {summary.calls} call(s)",
                "raise it (ledger.budget_cny = …, or nbtoolkit.ledger.set_session_budget(…)) "
                "or start over with ledger.reset()",
            )

    def record(
        self,
        usage: Usage,
        *,
        backend: str,
        kind: str = "call",
        turn: int | None = None,
        request_id: str | None = None,
        latency: float | None = None,
    ) -> LedgerEntry:
        """Add one call's usage; returns the entry with its cost (``None`` if the price is unknown)."""
        cost = pricing.cost(usage)
        with self._lock:
            entry = LedgerEntry(
                len(self._entries),
                usage,
                backend,
                kind,
                turn,
                request_id,
                latency,
                cost,
                time.time(),
            )
            self._entries.append(entry)
        return entry

    @property
    def entries(self) -> list[LedgerEntry]:
        """A copy of the entries, oldest first."""
        with self._lock:
            return list(self._entries)

    def reset(self) -> None:
        """Forget every entry (the budget stays)."""
        with self._lock:
            self._entries.clear()

    def summary(self) -> LedgerSummary:
        """Calls, total usage, known cost and the number of calls of unknown price."""
        return LedgerSummary.of(self.entries)

    def totals(self) -> Usage:
        """All entries' usage added up."""
        return self.summary().usage

    def cost(self) -> float:
        """CNY spent on calls with a known price; see :attr:`unpriced` for the others."""
        return self.summary().cost

    @property
    def unpriced(self) -> int:
        """How many calls have no known price (their cost is not in :meth:`cost`)."""
        return self.summary().unpriced

    def remaining(self) -> float | None:
        """CNY left in the budget (``None`` with no budget; never below 0)."""
        budget = self._budget
        return None if budget is None else max(budget - self.cost(), 0.0)

    def _grouped(self, key: Callable[[LedgerEntry], Hashable]) -> dict[Any, LedgerSummary]:
        groups: dict[Any, list[LedgerEntry]] = {}
        for entry in self.entries:
            groups.setdefault(key(entry), []).append(entry)
        return {k: LedgerSummary.of(v) for k, v in groups.items()}

    def by_backend(self) -> dict[str, LedgerSummary]:
        """A summary per backend name, in first-use order."""
        return self._grouped(lambda e: e.backend)

    def by_turn(self) -> dict[int | None, LedgerSummary]:
        """A summary per turn number (``None`` collects entries recorded without a turn)."""
        return self._grouped(lambda e: e.turn)

    def to_dataframe(self) -> pd.DataFrame:
        """One row per entry: tokens by modality, cost (NaN = unknown price), latency."""
        import pandas as pd  # lazy: pandas is an optional extra

        rows = [
            {
                "index": e.index,
                "at": pd.Timestamp(e.at, unit="s"),
                "backend": e.backend,
                "kind": e.kind,
                "turn": e.turn,
                "request_id": e.request_id,
                "model": e.usage.model,
                "offline": e.offline,
                "input_text": e.usage.input_text,
                "input_audio": e.usage.input_audio,
                "input_image": e.usage.input_image,
                "output_text": e.usage.output_text,
                "output_audio": e.usage.output_audio,
                "total_tokens": e.usage.total_tokens,
                "cost_cny": float("nan") if e.cost is None else e.cost,
                "latency_s": e.latency,
            }
            for e in self.entries
        ]
        return pd.DataFrame(rows)

    def plot(self, ax: Axes | None = None) -> Axes:
        """Stacked token bars per turn (or per call) by modality, with the cumulative cost line."""
        return plot_usage(self, ax=ax)

    def _repr_html_(self) -> str:
        entries = self.entries
        summary = LedgerSummary.of(entries)
        shown = entries[-HTML_ROWS:]
        rows = [
            [
                e.index,
                e.backend,
                e.kind,
                "" if e.turn is None else e.turn,
                e.usage.model,
                e.usage.input_text,
                e.usage.input_audio,
                e.usage.input_image,
                e.usage.output_text,
                e.usage.output_audio,
                pricing.cost_label(e.usage),
                "" if e.latency is None else f"{e.latency * 1000:.0f} ms",
            ]
            for e in shown
        ]
        t = summary.usage
        rows.append(
            [
                "total",
                "",
                "",
                "",
                f"{summary.calls} call(s)",
                t.input_text,
                t.input_audio,
                t.input_image,
                t.output_text,
                t.output_audio,
                summary.cost_label(),
                "",
            ]
        )
        budget = self._budget
        caption = "usage ledger"
        if budget is not None:
            caption += (
                f" · budget {pricing.format_cny(budget)}, spent {pricing.format_cny(summary.cost)}"
            )
        if len(entries) > len(shown):
            caption += f" · newest {len(shown)} of {len(entries)} entries shown"
        headers = [
            "#",
            "backend",
            "kind",
            "turn",
            "model",
            "text in",
            "audio in",
            "image in",
            "text out",
            "audio out",
            "cost",
            "latency",
        ]
        return html_table(headers, rows, caption=caption)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __repr__(self) -> str:
        summary = self.summary()
        return (
            f"Ledger({summary.calls} calls, {summary.usage.total_tokens} tokens, "
            f"{summary.cost_label()}, budget={self._budget})"
        )


_session = Ledger()


def session_ledger() -> Ledger:
    """The process-wide ledger backends record to unless given another."""
    return _session


def set_session_budget(budget_cny: float | None) -> Ledger:
    """Set the session ledger's budget in CNY (``None`` removes it); returns the ledger."""
    _session.budget_cny = budget_cny
    return _session
