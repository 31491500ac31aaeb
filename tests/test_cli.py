"""The ``nbtoolkit`` command: ``serve`` as a real subprocess, ``doctor`` on this machine."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from conftest import timeout

from nbtoolkit import cli

REPO = Path(__file__).resolve().parents[1]


def run_module(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "nbtoolkit.cli", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def lines_of(proc: subprocess.Popen[str]) -> queue.Queue[str | None]:
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def test_serve_prints_urls_and_token_answers_one_request_and_stops_on_sigterm() -> None:
    proc = run_module("serve", "--port", "0")
    try:
        lines, printed = lines_of(proc), []
        while not printed or "Ctrl-C" not in printed[-1]:
            line = lines.get(timeout=timeout(60))
            assert line is not None, (
                f"serve exited early: {proc.stderr.read() if proc.stderr else ''}"
            )
            printed.append(line)
        text = "\n".join(printed)
        env = dict(re.findall(r"export (\w+)=(\S+)", text))
        agora = re.search(r"Audio modalities \(Agora\):\s+(\S+)", text)
        assert agora is not None
        base = env["DASHSCOPE_HTTP_BASE_URL"].removesuffix("/api/v1")
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", base)
        assert env["DASHSCOPE_WEBSOCKET_BASE_URL"] == "ws" + base[4:] + "/api-ws/v1/inference"
        assert f"ws{base[4:]}/api-ws/v1/realtime" in text
        assert agora.group(1) == f"{base}/audio/chat/completions"
        body = {"messages": [{"role": "user", "content": "one plus one equals what"}]}
        ok = httpx.post(
            agora.group(1),
            json=body,
            headers={"Authorization": f"Bearer {env['DASHSCOPE_API_KEY']}"},
            timeout=timeout(60),
        )
        assert ok.status_code == 200 and ok.text.rstrip().endswith("data: [DONE]")
        assert '"transcript":' in ok.text and "two" in ok.text.lower()
        refused = httpx.post(agora.group(1), json=body, timeout=timeout(10))
        assert refused.status_code == 401
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=timeout(20)) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=timeout(10))


def test_serve_refuses_a_non_loopback_host(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["serve", "--host", "0.0.0.0"]) == 2
    assert "loopback" in capsys.readouterr().err


def test_doctor_passes_here_and_never_prints_the_api_key() -> None:
    key = "sk-doctor-must-not-print-7d1e"
    proc = run_module("doctor", env={"DASHSCOPE_API_KEY": key})
    out, err = proc.communicate(timeout=timeout(120))
    assert proc.returncode == 0, out + err
    assert key not in out and key not in err
    assert re.search(r"DASHSCOPE_API_KEY\s+ok\s+set", out)
    for name in ("pocketsphinx", "eSpeak NG", "webrtcvad", "PyAV", "soxr", "offline engine"):
        assert re.search(rf"{re.escape(name)}.*\s+ok\s+", out), name


def test_doctor_exits_1_and_prints_the_fix_when_something_essential_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken() -> str:
        raise ImportError("No module named 'pocketsphinx'")

    monkeypatch.setattr(
        cli,
        "_CHECKS",
        (
            cli._Check("ASR", True, broken, "pip install pocketsphinx"),
            cli._Check("Chromium", False, broken, "apt-get install chromium"),
        ),
    )
    assert cli.main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"ASR\s+MISSING\s+ImportError", out)
    assert "fix: pip install pocketsphinx" in out
    assert re.search(r"Chromium\s+note", out)
