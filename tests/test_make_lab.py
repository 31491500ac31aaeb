"""`make lab`: JupyterLab on 127.0.0.1 at the port given by ``PORT=``, serving ``notebooks/``, with
``--allow-root`` only when run as root (Jupyter refuses root without it; a user does not need it)."""

from __future__ import annotations

import os
import queue
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import timeout

REPO = Path(__file__).resolve().parents[1]
MAKE = shutil.which("make")
# The venv the tests run in is set up already; `make -o` keeps make from re-running pip because
# pyproject.toml is newer than the stamp (a fresh checkout's timestamps say nothing).
KEEP_SETUP = ["-o", ".venv/.installed"]

pytestmark = pytest.mark.skipif(MAKE is None, reason="make is not installed")


def lab_command(tmp_path: Path, uid: int, port: int) -> list[str]:
    """The `jupyter lab` command `make lab` would run for a user whose ``id -u`` is ``uid``."""
    fake_bin = tmp_path / f"uid{uid}"
    fake_bin.mkdir()
    fake_id = fake_bin / "id"
    fake_id.write_text(
        f'#!/bin/sh\n[ "$1" = -u ] && {{ echo {uid}; exit 0; }}\nexec /usr/bin/id "$@"\n'
    )
    fake_id.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}"}
    dry_run = subprocess.run(
        [str(MAKE), "-n", *KEEP_SETUP, "lab", f"PORT={port}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout(60),
        check=True,
    )
    commands = [shlex.split(line) for line in dry_run.stdout.splitlines() if "jupyter lab" in line]
    assert len(commands) == 1, dry_run.stdout
    return commands[0]


@pytest.mark.parametrize(("uid", "allow_root"), [(0, True), (1000, False)])
def test_make_lab_adds_allow_root_only_for_root(tmp_path: Path, uid: int, allow_root: bool) -> None:
    command = lab_command(tmp_path, uid, port=9123)
    assert ("--allow-root" in command) is allow_root, command
    assert "--ip=127.0.0.1" in command
    assert "--port=9123" in command
    assert "--notebook-dir=notebooks" in command


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def first_line_containing(lines: queue.Queue[str | None], text: str, seconds: float) -> str:
    """The first output line holding ``text``; fails if the output ends or ``seconds`` pass first."""
    deadline = time.monotonic() + seconds
    seen: list[str] = []
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if text in line:
            return line
    raise AssertionError(f"`make lab` never printed {text!r}; it printed:\n{''.join(seen)}")


def test_make_lab_serves_notebooks_on_loopback_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    token = os.urandom(16).hex()
    env = {
        **os.environ,
        "JUPYTER_TOKEN": token,
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "BROWSER": "true",  # "open a browser" runs `true URL`: nothing opens during the test
    }
    lab = subprocess.Popen(
        [str(MAKE), *KEEP_SETUP, "lab", f"PORT={port}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert lab.stdout is not None
        for line in lab.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"token {token}"}
    try:
        # Jupyter prints its URL once the server is listening
        first_line_containing(lines, f"{base}/lab", timeout(120))
        status = httpx.get(f"{base}/api/status", headers=auth, timeout=timeout(30))
        assert status.status_code == 200, status.text
        assert "started" in status.json()
        assert httpx.get(f"{base}/api/status", timeout=timeout(30)).status_code == 403
        root = httpx.get(f"{base}/api/contents", headers=auth, timeout=timeout(30)).json()
        names = {item["name"] for item in root["content"]}
        assert {p.name for p in (REPO / "notebooks").glob("*.ipynb")} <= names, names
        httpx.post(f"{base}/api/shutdown", headers=auth, timeout=timeout(30))
        assert lab.wait(timeout=timeout(60)) == 0
    finally:
        if lab.poll() is None:
            os.killpg(lab.pid, signal.SIGTERM)
            lab.wait(timeout=timeout(30))
