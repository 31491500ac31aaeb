"""Real-browser widget tests: an isolated JupyterLab on 127.0.0.1 and Debian's headless Chromium.

Chromium's fake microphone plays a speech WAV made by the offline engine's TTS. Follows
the recipe in this file (Chromium flags, JupyterLab settings, the gotchas met so far).

Fixtures: ``lab`` (session), ``browser`` (session; its microphone says :data:`PHRASE` in a loop),
``page`` and ``notebook`` (per test). A test that needs another microphone opens a Chromium of its
own with :func:`chromium_with_microphone`, in a pytest process of its own (see the Makefile).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import timeout

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
#: What the fake microphone says (the recorder test checks these words come back).
PHRASE = "go forward ten meters"

#: Kernel-side code for a driver cell. ``await until(widget, names, predicate, seconds)`` waits,
#: bounded, until ``predicate()`` holds, checking it again whenever one of the widget's traits
#: ``names`` changes. ``await when(widget, names, predicate, action, seconds)`` does the same and
#: calls ``action()`` inside the observer, at the moment the predicate first holds, returning its
#: result: a state that lasts only a few seconds (e.g. "more than 2 s buffered") must be acted on
#: there. ``PLAYER_VIEW`` names the traits a Player's view reports.
UNTIL = """
import asyncio, threading

PLAYER_VIEW = ["buffered_ms", "position_ms", "flushed", "underruns", "playing"]

async def when(widget, names, predicate, action, seconds):
    # The observer runs on whichever thread handles widget messages: with JupyterLab's comms over
    # subshells that is a subshell thread with a loop of its own, where a plain Event.set() does
    # not wake this loop (CI once saw the waiter resume only at its 30 s timeout), hence
    # call_soon_threadsafe. The predicate is checked as each change is applied: several updates
    # can be applied before this task resumes, and a state held only between them would be missed.
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    fired, outcome = [], []
    lock = threading.Lock()
    def check(_change=None):
        with lock:
            if fired or not predicate():
                return
            fired.append(True)  # before the action, which may change the traits observed here
        try:
            outcome.append(action())
        except Exception as exc:
            outcome.append(exc)
        loop.call_soon_threadsafe(done.set)
    widget.observe(check, names=names)
    try:
        check()
        async with asyncio.timeout(seconds):
            await done.wait()
    finally:
        widget.unobserve(check, names=names)
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    return outcome[0]

async def until(widget, names, predicate, seconds):
    await when(widget, names, predicate, lambda: None, seconds)
"""

_LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
        "windowingMode": "none",
        "autoStartDefaultKernel": True,
    },
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
}


@dataclass
class Lab:
    """A running JupyterLab: where its notebooks live and how to reach it."""

    url: str
    token: str
    root: Path

    def api(self, method: str, path: str) -> Any:
        req = urllib.request.Request(
            f"{self.url}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(req, timeout=timeout(10)) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def write_notebook(self, name: str, cells: list[str]) -> None:
        nb = {
            "cells": [
                {
                    "cell_type": "code",
                    "execution_count": None,
                    "metadata": {},
                    "outputs": [],
                    "source": src,
                }
                for src in cells
            ],
            "metadata": {
                "kernelspec": {
                    "display_name": "Python 3 (ipykernel)",
                    "language": "python",
                    "name": "python3",
                }
            },
            "nbformat": 4,
            "nbformat_minor": 5,
        }
        (self.root / name).write_text(json.dumps(nb))


class Notebook:
    """One browser page on the test JupyterLab: open a notebook, run its cells, screenshot it."""

    def __init__(self, page: Any, lab: Lab) -> None:
        self.page = page
        self.lab = lab
        self.cells: list[str] = []

    def open(self, name: str, cells: list[str]) -> None:
        """Write the notebook ``name`` with ``cells``, open it, and wait until its kernel is
        really idle (the status bar, not the toolbar)."""
        self.lab.write_notebook(name, cells)
        self.cells = cells
        self.page.goto(f"{self.lab.url}/lab/tree/{name}?token={self.lab.token}&reset")
        self.page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=timeout(90) * 1000)

    def run_cell(self, containing: str) -> None:
        """Run the first cell whose source contains ``containing`` (Ctrl+Enter: no new cell)."""
        # Found by position, not by the page's text: CodeMirror renders only the lines near the
        # viewport, so a long cell's text is not all on the page.
        index = next(i for i, source in enumerate(self.cells) if containing in source)
        cell = self.page.locator(".jp-CodeCell").nth(index)
        cell.locator(".cm-content").click()
        self.page.keyboard.press("Control+Enter")

    def screenshot(self, name: str, widget: str) -> Path:
        """Save a screenshot of the page with the ``widget`` (a CSS selector) scrolled into view."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.locator(widget).first.scroll_into_view_if_needed()
        path = SCREENSHOTS / name
        self.page.screenshot(path=str(path))
        return path


def require_chromium() -> None:
    """Skip the test when there is no browser to run it in."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (make system-deps)")


def microphone_wav(directory: Path, text: str, lead: float, tail: float) -> Path:
    """A WAV for Chromium's fake microphone: ``text`` spoken by the offline engine between
    ``lead`` and ``tail`` seconds of silence (48 kHz, the browser's rate)."""
    require_chromium()  # before the TTS: without a browser nobody would hear it
    from nbtoolkit.audio import Clip
    from nbtoolkit.local.engine import Engine

    rate = 48000
    speech = np.asarray(Engine().synthesize(text, rate=rate), dtype=np.int16)

    def silence(seconds: float) -> np.ndarray:
        return np.zeros(round(seconds * rate), dtype=np.int16)

    path = directory / "microphone.wav"
    Clip(np.concatenate([silence(lead), speech, silence(tail)]), rate).save(path)
    return path.resolve()


@contextmanager
def chromium_with_microphone(wav: str) -> Iterator[Any]:
    """Headless Debian Chromium whose fake microphone plays ``wav`` in a loop (once with a
    ``%noloop`` suffix). Playwright's sync API: one open at a time per process."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )  # fmt: skip
        try:
            yield chromium
        finally:
            chromium.close()


@contextmanager
def new_page(chromium: Any, lab: Lab, height: int = 800) -> Iterator[Any]:
    """A page in a fresh browser context allowed the microphone on ``lab``; it keeps the
    browser console in ``page.console_messages`` (for a debugger on a failing test)."""
    context = chromium.new_context(viewport={"width": 1280, "height": height})
    context.grant_permissions(["microphone"], origin=lab.url)
    page = context.new_page()
    page.console_messages = []
    page.on("console", lambda m: page.console_messages.append(f"{m.type}: {m.text}"))
    try:
        yield page
    finally:
        context.close()


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake microphone's input: the phrase spoken by the engine, then silence.

    Chromium loops the file; the trailing silence is longer than a test records, so a recording
    holds the phrase once and whole.
    """
    return microphone_wav(tmp_path_factory.mktemp("mic"), PHRASE, lead=0.5, tail=6)


@contextmanager
def jupyter_server(base: Path, app: str = "jupyterlab") -> Iterator[Lab]:
    """An isolated Jupyter server (own settings, config and runtime dirs, a random token) serving
    ``base/notebooks``; ``app`` is the module that runs it: ``jupyterlab`` or ``notebook``
    (Notebook 7, which reads the same JupyterLab settings)."""
    require_chromium()
    root = base / "notebooks"
    root.mkdir()
    settings = base / "settings"
    for name, value in _LAB_SETTINGS.items():
        target = settings / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(value))
    token = secrets.token_hex(16)
    # a server started from pytest must not pass PYTEST_* on to its kernels (they'd look headless)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
        JUPYTER_CONFIG_DIR=str(base / "config"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        NBTOOLKIT_HEADLESS="0",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
    )
    port = _free_port()
    log = (base / f"{app}.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", app, "--no-browser", "--ip=127.0.0.1", f"--port={port}",
            f"--IdentityProvider.token={token}", "--allow-root", f"--ServerApp.root_dir={root}",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    server = Lab(f"http://127.0.0.1:{port}", token, root)
    try:
        _wait(
            lambda: _responds(server),
            timeout(60),
            f"{app} did not start; see {base / f'{app}.log'}",
        )
        yield server
    finally:
        try:
            for kernel in server.api("GET", "/api/kernels"):
                server.api("DELETE", f"/api/kernels/{kernel['id']}")
        except OSError:
            pass  # the server is already gone
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout(20))
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """An isolated JupyterLab (see :func:`jupyter_server`)."""
    with jupyter_server(tmp_path_factory.mktemp("lab")) as server:
        yield server


@pytest.fixture(scope="session")
def browser(speech_wav: Path) -> Iterator[Any]:
    """Headless Debian Chromium whose fake microphone plays ``speech_wav``."""
    with chromium_with_microphone(str(speech_wav)) as chromium:
        yield chromium


@pytest.fixture
def page(browser: Any, lab: Lab) -> Iterator[Any]:
    with new_page(browser, lab) as pg:
        yield pg


@pytest.fixture
def notebook(page: Any, lab: Lab) -> Notebook:
    """The test's ``page`` as a :class:`Notebook` on ``lab``."""
    return Notebook(page, lab)


def wait_for_file(path: Path, seconds: float) -> dict[str, Any]:
    """The JSON a notebook cell wrote to ``path`` (waits, bounded, for it to appear)."""
    _wait(path.exists, seconds, f"the notebook did not write {path}")
    return json.loads(path.read_text())


def save_metrics(name: str, metrics: dict[str, Any]) -> Path:
    """Keep a test's measurements as ``tests/artifacts/<name>`` (JSON) for the report."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    path.write_text(json.dumps(metrics, indent=1))
    return path


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _responds(lab: Lab) -> bool:
    try:
        urllib.request.urlopen(f"{lab.url}/api/status?token={lab.token}", timeout=2).close()
    except OSError:
        return False
    return True


def _wait(condition: Callable[[], bool], seconds: float, message: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.2)  # polling a condition across processes, bounded by the deadline
