"""Shared by the benchmark scripts: best-of-N timing and the result table.

Every benchmark prints its rows in one shape — measured value, the baseline measured in the same
run, their ratio, the goal and PASS/MISS — as a Markdown table, so the output can be pasted into
benchmarks/README.md as it is. Files starting with ``_`` are helpers, not benchmarks.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: The repository root (benchmarks run from anywhere).
REPO = Path(__file__).resolve().parent.parent


def best_of_each(repeats: int, fns: dict[str, Callable[[], object]]) -> dict[str, float]:
    """The fastest of ``repeats`` runs of each function, in seconds (the runs least disturbed by
    other work). The functions take turns, so load from elsewhere on the machine falls on all of
    them alike rather than on whichever ran during it."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


@dataclass(frozen=True)
class Row:
    """One line of a benchmark's result: what was measured against what, and whether it met the goal.

    ``ok`` is None for an informative row that has no goal of its own (a breakdown, a floor).
    """

    what: str
    measured: str
    baseline: str
    ratio: str
    goal: str
    ok: bool | None

    @property
    def verdict(self) -> str:
        return "" if self.ok is None else ("PASS" if self.ok else "MISS")


def print_table(title: str, rows: Sequence[Row]) -> None:
    """Print ``rows`` as a Markdown table under ``title``."""
    header = ("what", "measured", "baseline (same run)", "ratio", "goal", "result")
    cells = [header] + [(r.what, r.measured, r.baseline, r.ratio, r.goal, r.verdict) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    print(f"\n{title}\n")
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for c in cells[1:]:
        print(line(c))
    print(flush=True)


def quiet_environment() -> dict[str, str]:
    """This process's environment without pytest's variables (children must not think they are
    inside a test) and with the headless switch the notebooks read under CI."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["NBTOOLKIT_HEADLESS"] = "1"
    return env
