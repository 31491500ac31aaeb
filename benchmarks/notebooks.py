"""How long does the nbmake notebook suite take? Goal: ≤ 60 s on this (2-core) machine.

Runs the suite as ``make notebooks-test`` does (headless, ``--nbmake-timeout=120``) and reads each
notebook's time from a JUnit report. For scale, the same pytest run also executes a one-cell
notebook (``1 + 1``): the fixed cost of a kernel start per notebook, which no notebook can go under.
The suite's time is the run's wall time (pytest start-up included) minus that one notebook.
Run: ``.venv/bin/python benchmarks/notebooks.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from _common import REPO, Row, print_table, quiet_environment

GOAL_S = 60.0


def nbmake(paths: list[Path], report: Path) -> tuple[float, int]:
    """Run nbmake on ``paths``; (wall seconds, pytest's exit code)."""
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--nbmake",
        "--nbmake-timeout=120",
        f"--junitxml={report}",
        *map(str, paths),
    ]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=quiet_environment(), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        print(done.stdout[-3000:], done.stderr[-2000:], sep="\n")
    return seconds, done.returncode


def per_notebook(report: Path) -> list[tuple[str, float, bool]]:
    """(notebook, seconds, passed) for every test case in a JUnit report."""
    cases = ET.parse(report).getroot().iter("testcase")
    return [
        (
            Path(c.get("file") or c.get("name") or "?").name,
            float(c.get("time", 0)),
            c.find("failure") is None and c.find("error") is None,
        )
        for c in cases
    ]


def one_cell_notebook(folder: Path) -> Path:
    path = folder / "one_cell.ipynb"
    cell: dict[str, Any] = {
        "cell_type": "code",
        "execution_count": None,
        "metadata": {},
        "outputs": [],
        "source": ["1 + 1"],
    }
    nb = {
        "cells": [cell],
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb))
    return path


def main() -> None:
    notebooks = sorted((REPO / "notebooks").glob("*.ipynb"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        wall, code = nbmake([one_cell_notebook(folder), *notebooks], folder / "suite.xml")
        cases = per_notebook(folder / "suite.xml")
    floor = next(seconds for name, seconds, _ in cases if name == "one_cell.ipynb")
    cases = [c for c in cases if c[0] != "one_cell.ipynb"]
    total = wall - floor

    rows = [
        Row(
            f"nbmake suite ({len(notebooks)} notebooks, {'all pass' if code == 0 else 'FAILURES'})",
            f"{total:.1f} s",
            "—",
            "",
            f"≤ {GOAL_S:.0f} s",
            total <= GOAL_S and code == 0,
        ),
        Row(
            "  floor: a one-cell notebook (kernel start + 1 cell)",
            f"{floor:.1f} s",
            "",
            f"{len(notebooks)} × floor = {len(notebooks) * floor:.0f} s",
            "",
            None,
        ),
        Row(
            "  pytest start-up and collection",
            f"{total - sum(c[1] for c in cases):.1f} s",
            "",
            "",
            "",
            None,
        ),
    ]
    for name, seconds, passed in sorted(cases, key=lambda c: -c[1]):
        rows.append(Row(f"  {name}", f"{seconds:.1f} s", "", "", "", None if passed else False))
    print_table(f"notebook suite on {len(notebooks)} notebooks (nbmake, headless)", rows)


if __name__ == "__main__":
    main()
