"""Every shipped notebook, "Run All" from the menu, in JupyterLab 4 and in Notebook 7.

A person opens a notebook, picks Run ▸ Run All Cells and waits. This test does the same in headless
Chromium whose fake microphone plays speech (the ``browser`` fixture), on a copy of the notebook in
a temporary folder (``notebooks/`` never gets outputs), then saves it from the page (Ctrl+S) and
reads back what a person would see. It fails on an error output (a failed check cell is one), a
cell that never ran, an uncaught error in the page, or a console error/warning from our widgets.
On failure the page's screenshot, the notebook with its outputs and the console are kept under
``tests/artifacts/run_all/<frontend>/``.

One Jupyter server per frontend and one browser for the whole session keep a notebook's cost to
its own run time. ``tests/browser/soak.py`` runs this module N times and prints a pass table.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import ARTIFACTS, REPO, Lab, jupyter_server, new_page
from tests.conftest import timeout

pytestmark = pytest.mark.browser

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
RUN_ALL_ARTIFACTS = ARTIFACTS / "run_all"

#: Bound on one notebook's Run All (the slowest notebook takes about a minute on a quiet machine).
RUN_ALL_SECONDS = 300


@dataclass(frozen=True)
class Frontend:
    """How a frontend is started and where it opens a notebook."""

    name: str
    module: str
    open_path: str  # URL path before the notebook's name


FRONTENDS = {
    "lab": Frontend("lab", "jupyterlab", "lab/tree"),
    "notebook7": Frontend("notebook7", "notebook", "notebooks"),
}

#: Console messages and page errors that are ours: our widgets' classes and modules, anywidget
#: (which runs their JavaScript from blob: URLs) and the widget manager's messages when a widget
#: fails to load or render. Others are kept with the artifacts but are not ours to fail on
#: (Notebook 7.6 throws "reading 'schema'" from its own shortcuts plugin on every page load).
OURS = re.compile(
    r"nbtk|nbtoolkit|anywidget|blob:|Failed to load model class|Could not create (a )?(model|view)"
    r"|Error rendering|widget.*(error|fail)",
    re.IGNORECASE,
)


@dataclass
class Console:
    """What the page said while the notebook ran."""

    messages: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on("console", lambda m: self.messages.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.page_errors.append(f"{e}\n{e.stack}"))

    def ours(self) -> list[str]:
        """Our widgets' errors and warnings, and uncaught errors thrown by their code."""
        flagged = [
            m for m in self.messages if m.startswith(("error:", "warning:")) and OURS.search(m)
        ]
        return flagged + [f"uncaught: {e}" for e in self.page_errors if OURS.search(e)]


@pytest.fixture(scope="session", params=sorted(FRONTENDS))
def frontend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Frontend, Lab]]:
    """One server per frontend for the session (pytest runs one frontend's tests, then the next)."""
    front = FRONTENDS[request.param]
    with jupyter_server(tmp_path_factory.mktemp(front.name), front.module) as server:
        yield front, server


@pytest.mark.parametrize("source", NOTEBOOKS, ids=[nb.stem[:2] for nb in NOTEBOOKS])
def test_notebook_runs_all_cells_without_errors(
    source: Path, frontend: tuple[Frontend, Lab], browser: Any
) -> None:
    front, server = frontend
    name = source.name
    shutil.copy(source, server.root / name)
    console = Console()
    with new_page(browser, server, height=900) as page:
        console.attach(page)
        page.goto(f"{server.url}/{front.open_path}/{name}?token={server.token}&reset")
        _wait_until_kernel_ready(page, server, name)
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        finished = _wait_until_run_all_finishes(page, timeout(RUN_ALL_SECONDS))
        saved = _save_from_the_page(page, server, name)
        problems = _problems(saved) + console.ours()
        if not finished:
            problems.append(f"Run All did not finish within {timeout(RUN_ALL_SECONDS):.0f} s")
        _shut_down_kernel(server, name)  # fifteen idle kernels, each with an engine, add up
        if problems:
            kept = _keep_artifacts(page, front, name, saved, console)
            pytest.fail(f"{name} in {front.name}: {problems} (artifacts: {kept})")


def _wait_until_kernel_ready(page: Any, server: Lab, name: str) -> None:
    """The page shows the kernel idle and the server has the notebook's kernel connected and
    idle (the page alone says idle before the kernel is really there)."""
    page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first.wait_for(
        timeout=timeout(90) * 1000
    )
    deadline = time.monotonic() + timeout(90)
    while time.monotonic() < deadline:
        kernels = [s["kernel"] for s in server.api("GET", "/api/sessions") if s["path"] == name]
        if kernels and kernels[0]["connections"] > 0 and kernels[0]["execution_state"] == "idle":
            return
        page.wait_for_timeout(200)  # polling the server's view of the kernel, bounded above
    raise AssertionError(f"the kernel for {name} did not become ready")


#: True when the queue has drained: no cell shows [*] (a cell that ran shows its count; after a
#: failure the kernel drops the rest of the queue and their prompts go blank) and the kernel is idle.
_FINISHED = """() =>
  ![...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
    .some(p => p.textContent.includes('*'))
  && !!document.querySelector(".jp-Notebook-ExecutionIndicator[data-status='idle']")"""


def _wait_until_run_all_finishes(page: Any, seconds: float) -> bool:
    # Run All puts every code cell in the queue at once ([*]); wait for that before waiting for
    # the queue to drain, else an untouched page would count as finished.
    page.locator(".jp-CodeCell .jp-InputPrompt", has_text="*").first.wait_for(
        timeout=timeout(30) * 1000
    )
    try:
        page.wait_for_function(_FINISHED, timeout=seconds * 1000, polling=500)
    except Exception:  # Playwright's TimeoutError: reported as a problem with the artifacts
        return False
    return True


def _save_from_the_page(page: Any, server: Lab, name: str) -> dict[str, Any]:
    """Ctrl+S, as a person saves; the notebook as it then is on disk."""
    path, backup = server.root / name, server.root / f".~{name}"
    before = path.stat().st_mtime_ns
    page.locator(".jp-Notebook").first.click(position={"x": 5, "y": 5})
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + timeout(30)
    while True:
        # Read from disk, not through the server: the server writes in place, keeping the old
        # file as .~<name> meanwhile, and a read through it that fails mid-write restores that.
        if path.stat().st_mtime_ns != before and not backup.exists():
            try:
                return dict(json.loads(path.read_text()))
            except ValueError:
                pass  # caught between the truncate and the last byte
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} was not saved from the page")
        page.wait_for_timeout(200)  # polling the file, bounded above


def _shut_down_kernel(server: Lab, name: str) -> None:
    for session in server.api("GET", "/api/sessions"):
        if session["path"] == name:
            server.api("DELETE", f"/api/sessions/{session['id']}")


def _problems(notebook: dict[str, Any]) -> list[str]:
    """Error outputs and code cells that never ran, each named by its cell id."""
    problems = []
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        where = f"cell {cell.get('id')}"
        for out in cell.get("outputs", []):
            if out["output_type"] == "error":
                problems.append(f"{where}: {out['ename']}: {out['evalue']}")
        if cell.get("execution_count") is None and "".join(cell["source"]).strip():
            problems.append(f"{where}: did not run")
    return problems


def _keep_artifacts(
    page: Any, front: Frontend, name: str, saved: dict[str, Any], console: Console
) -> Path:
    folder = RUN_ALL_ARTIFACTS / front.name
    folder.mkdir(parents=True, exist_ok=True)
    stem = Path(name).stem
    # what a person looks at: the first traceback (or warning), else where the run stopped
    stderr = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    if stderr.count():
        stderr.first.scroll_into_view_if_needed()
    page.screenshot(path=str(folder / f"{stem}.png"), full_page=True)
    (folder / f"{stem}.ipynb").write_text(json.dumps(saved, indent=1))
    (folder / f"{stem}.console.txt").write_text(
        "\n".join(console.messages + [f"uncaught: {e}" for e in console.page_errors])
    )
    return folder / stem
