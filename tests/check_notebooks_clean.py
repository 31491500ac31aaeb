"""Fail when a notebook is committed with outputs, execution counts or widget state (they bloat the
repository and can leak keys). Run by `make test`."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def problems(path: Path) -> list[str]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    found = []
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        if cell.get("outputs"):
            found.append(f"cell {i} has outputs")
        if cell.get("execution_count") is not None:
            found.append(f"cell {i} has an execution count")
    if "widgets" in nb.get("metadata", {}):
        found.append("notebook metadata holds widget state")
    return found


def main(paths: list[str]) -> int:
    bad = 0
    for p in paths:
        for problem in problems(Path(p)):
            print(
                f"{p}: {problem} — clear it (Jupyter: Edit > Clear Outputs of All Cells, then save)"
            )
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
