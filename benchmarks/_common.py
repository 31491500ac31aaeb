"""Shared by the benchmark scripts: best-of-N timing, percentiles and the result table.

Every benchmark prints its rows in one shape — measured value, the baseline measured in the same
run, their ratio, the goal and PASS/MISS — as a Markdown table, so the output can be pasted into
benchmarks/README.md as it is. Files starting with ``_`` are helpers, not benchmarks.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: The repository root (benchmarks run from anywhere).
REPO = Path(__file__).resolve().parent.parent
if (
    str(REPO) not in sys.path
):  # `python benchmarks/x.py` puts benchmarks/, not the root, on the path
    sys.path.insert(0, str(REPO))


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    """Fastest of ``repeats`` runs of ``fn``, in seconds: the run least disturbed by other work."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) of ``values``, linearly interpolated."""
    return float(np.percentile(np.asarray(values, dtype=float), q))


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
