"""Run every shipped notebook's browser Run All N times and print a pass table, notebook × frontend.

    python tests/browser/soak.py [--runs N] [pytest args, e.g. -k 09]

Each run is its own pytest process (``tests/browser/test_notebooks_run_all.py``, one Jupyter server
per frontend, one browser); outcomes come from its JUnit XML, and the table so far is printed after
every run. Failing runs keep their screenshots and outputs under ``tests/artifacts/run_all/`` (the
last failure of each notebook wins). Exits 1 if any run of any notebook failed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEST = "tests/browser/test_notebooks_run_all.py"
#: test_notebook_runs_all_cells_without_errors[lab-09] → ("lab", "09")
_ID = re.compile(r"\[(?P<frontend>[^-\]]+)-(?P<notebook>[^\]]+)\]$")


def outcomes(junit: Path) -> dict[tuple[str, str], bool]:
    """(notebook, frontend) → passed, for every test case in a JUnit XML report."""
    result = {}
    for case in ET.parse(junit).iter("testcase"):
        match = _ID.search(case.get("name", ""))
        if match is None:
            continue
        failed = any(child.tag in ("failure", "error") for child in case)
        skipped = any(child.tag == "skipped" for child in case)
        if not skipped:
            result[(match["notebook"], match["frontend"])] = not failed
    return result


def table(passes: dict[tuple[str, str], list[bool]], runs: int) -> str:
    """Rows of notebooks, columns of frontends, cells ``passed/runs``."""
    frontends = sorted({f for _, f in passes})
    notebooks = sorted({n for n, _ in passes})
    names = {p.stem[:2]: p.stem for p in sorted((REPO / "notebooks").glob("*.ipynb"))}
    width = max([len(names.get(n, n)) for n in notebooks] + [8])
    lines = [f"{'notebook':<{width}}  " + "  ".join(f"{f:>9}" for f in frontends)]
    for n in notebooks:
        cells = [f"{sum(passes.get((n, f), [])):>4}/{runs:<4}" for f in frontends]
        lines.append(f"{names.get(n, n):<{width}}  " + "  ".join(f"{c:>9}" for c in cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="how many times (default 5)")
    args, pytest_args = parser.parse_known_args(argv)
    passes: dict[tuple[str, str], list[bool]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(1, args.runs + 1):
            junit = Path(tmp) / f"run{run}.xml"
            command = [sys.executable, "-m", "pytest", "-q", "-m", "browser", TEST]
            command += ["-p", "no:cacheprovider", f"--junitxml={junit}", *pytest_args]
            print(f"== soak run {run}/{args.runs}", flush=True)
            subprocess.run(command, cwd=REPO, check=False)
            if not junit.exists():
                print(f"run {run} produced no report (pytest could not start)", file=sys.stderr)
                return 2
            for key, passed in outcomes(junit).items():
                passes[key].append(passed)
            # the table so far after every run: a long soak can be stopped with what it found
            print(f"\nRun All in headless Chromium, {run} run(s): passes per notebook × frontend")
            print(table(passes, run), flush=True)
    return 0 if all(all(p) and len(p) == args.runs for p in passes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
