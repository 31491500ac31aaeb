"""Real-browser widget tests: an isolated JupyterLab on 127.0.0.1 and Debian's headless Chromium.

Chromium's fake microphone plays a speech WAV made by the offline engine's TTS. Follows
shared/reference/browser-and-notebook-testing.md (flags, JupyterLab settings, gotchas).
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import timeout

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "tests" / "artifacts" / "screenshots"
#: What the fake microphone says (the recorder test checks these words come back).
PHRASE = "go forward ten meters"

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


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake microphone's input: the phrase spoken by the engine, then silence.

    Chromium loops the file; the trailing silence is longer than a test records, so a recording
    holds the phrase once and whole.
    """
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (make system-deps)")
    from nbtoolkit.audio import Clip
    from nbtoolkit.local.engine import Engine

    rate = 48000
    speech = np.asarray(Engine().synthesize(PHRASE, rate=rate), dtype=np.int16)
    lead, tail = np.zeros(rate // 2, dtype=np.int16), np.zeros(6 * rate, dtype=np.int16)
    path = tmp_path_factory.mktemp("mic") / "speech.wav"
    Clip(np.concatenate([lead, speech, tail]), rate).save(path)
    return path.resolve()


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """An isolated JupyterLab (own settings, config and runtime dirs) with a random token."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (make system-deps)")
    base = tmp_path_factory.mktemp("lab")
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
    log = (base / "lab.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
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
            f"JupyterLab did not start; see {base / 'lab.log'}",
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
def browser(speech_wav: Path) -> Iterator[Any]:
    """Headless Debian Chromium whose fake microphone plays ``speech_wav``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={speech_wav}",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )  # fmt: skip
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, lab: Lab) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.grant_permissions(["microphone"], origin=lab.url)
    pg = context.new_page()
    pg.console_messages = []
    pg.on("console", lambda m: pg.console_messages.append(f"{m.type}: {m.text}"))
    try:
        yield pg
    finally:
        context.close()


def open_notebook(page: Any, lab: Lab, name: str) -> None:
    """Open a notebook and wait until its kernel is really idle (the status bar, not the toolbar)."""
    page.goto(f"{lab.url}/lab/tree/{name}?token={lab.token}&reset")
    page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=timeout(90) * 1000)


def run_cell(page: Any, containing: str) -> None:
    """Run the one cell whose source contains ``containing`` (Ctrl+Enter: no new cell is added)."""
    cell = page.locator(".jp-CodeCell", has_text=containing).first
    cell.locator(".cm-content").click()
    page.keyboard.press("Control+Enter")


def wait_for_file(path: Path, seconds: float) -> dict[str, Any]:
    """The JSON a notebook cell wrote to ``path`` (waits, bounded, for it to appear)."""
    _wait(path.exists, seconds, f"the notebook did not write {path}")
    return json.loads(path.read_text())


def screenshot(page: Any, name: str, widget: str) -> Path:
    """Save a screenshot of the page with the ``widget`` (a CSS selector) scrolled into view."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.locator(widget).first.scroll_into_view_if_needed()
    path = SCREENSHOTS / name
    page.screenshot(path=str(path))
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
