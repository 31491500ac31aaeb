"""The notebooks in notebooks/ follow the house rules: numbered, titled, ending with the checks nbmake runs,
committed clean (no outputs, execution counts, widget state or keys), and any per-cell timeout they
declare is sane. Static checks only: nbmake runs them (``make test``)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest
from check_notebooks_clean import problems

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
NAME = re.compile(r"^(\d\d)_[a-z0-9]+(?:_[a-z0-9]+)*\.ipynb$")
#: Longest per-cell timeout a notebook may declare: a notebook needing more is too slow for CI.
MAX_CELL_TIMEOUT = 600
#: What an API key or bearer token looks like when pasted into a cell or an output.
KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9]{16,}|Bearer [A-Za-z0-9_\-]{16,}")


def load(path: Path) -> dict[str, Any]:
    nb: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return nb


def source(cell: dict[str, Any]) -> str:
    text = cell.get("source", "")
    return "".join(text) if isinstance(text, list) else str(text)


def code_cells(nb: dict[str, Any]) -> list[str]:
    return [source(c) for c in nb["cells"] if c.get("cell_type") == "code"]


def has_assert(code: str) -> bool:
    # IPython lines (%magic, !shell, top-level await) are not Python: only whole-cell parses count
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return False
    return any(isinstance(node, ast.Assert) for node in ast.walk(tree))


def ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def test_the_notebooks_folder_has_notebooks() -> None:
    assert len(NOTEBOOKS) >= 5, f"expected the feature notebooks in {NOTEBOOKS_DIR}"


def test_notebooks_are_numbered_uniquely() -> None:
    bad = [p.name for p in NOTEBOOKS if not NAME.match(p.name)]
    assert not bad, f"name notebooks NN_lower_snake_case.ipynb: {bad}"
    numbers = [NAME.match(p.name).group(1) for p in NOTEBOOKS]  # type: ignore[union-attr]
    duplicates = sorted({n for n in numbers if numbers.count(n) > 1})
    assert not duplicates, f"two notebooks share the number(s) {duplicates}: renumber one"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_notebook_opens_with_a_numbered_title_cell(path: Path) -> None:
    first = load(path)["cells"][0]
    assert first["cell_type"] == "markdown", "the first cell must be the markdown title"
    title = source(first).lstrip().splitlines()[0]
    number = int(path.name[:2])
    assert re.match(rf"# 0?{number}\b", title), (
        f"the title {title!r} must be a level-1 heading starting with the notebook's number "
        f"('# {path.name[:2]} · …')"
    )
    assert len(source(first).split()) >= 15, (
        "the title cell should say in a few lines what it teaches"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_notebook_ends_with_a_cell_of_assertions(path: Path) -> None:
    cells = code_cells(load(path))
    assert cells, "a notebook without code teaches nothing nbmake can check"
    assert has_assert(cells[-1]), (
        "the last code cell must hold the notebook's assertions, so nbmake catches regressions"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_notebook_is_committed_clean(path: Path) -> None:
    assert problems(path) == [], "clear the outputs (Edit > Clear Outputs of All Cells) and save"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_notebook_is_valid_and_holds_no_key(path: Path) -> None:
    import nbformat

    raw = load(path)
    # nbformat fills in missing cell ids when reading, with a warning; the file itself must have them
    missing = [i for i, cell in enumerate(raw["cells"]) if not cell.get("id")]
    assert not missing, f"cells {missing} have no id: run nbformat's normalize() on the notebook"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    leaked = KEY_LIKE.findall(path.read_text(encoding="utf-8"))
    assert not leaked, "a key or token is written in the notebook: remove it, read it from the env"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_declared_cell_timeout_is_sane(path: Path) -> None:
    execution = load(path).get("metadata", {}).get("execution")
    if execution is None:
        return  # the default per-cell timeout of `make test` applies
    timeout = execution.get("timeout")
    assert isinstance(timeout, int) and 0 < timeout <= MAX_CELL_TIMEOUT, (
        f"metadata.execution.timeout must be whole seconds in 1..{MAX_CELL_TIMEOUT}, not {timeout!r}"
    )
