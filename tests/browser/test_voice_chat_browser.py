"""VoiceChat(OmniRealtime) in real headless Chromium: fake microphone → Recorder → server VAD →
answer → Player; then a barge-in that flushes the answer playing in the browser.

The fake microphone says the question once (its file does not loop). The barge-in is then driven
from the kernel (``chat.say``) with the microphone stopped, so it does not depend on how long the
machine takes to recognise the first question: the second question is asked, and as soon as its
answer starts the question is said again over it, at the pace of a voice.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.browser.conftest import (
    CHROMIUM,
    SCREENSHOTS,
    Lab,
    open_notebook,
    run_cell,
    screenshot,
    wait_for_file,
)
from tests.conftest import timeout

pytestmark = pytest.mark.browser

QUESTION = "one plus one equals what"

BUILD = """
import asyncio, json
import nbtoolkit
from nbtoolkit.audio import Clip
from nbtoolkit.backends.omni import OmniRealtime
from nbtoolkit.connection import local_server
from nbtoolkit.ledger import Ledger
from nbtoolkit.local import Faults
from nbtoolkit.voice_chat import VoiceChat

ledger = Ledger()
chat = VoiceChat(OmniRealtime(nbtoolkit.connect(local=True, quiet=True), ledger=ledger))
chat.start()
chat
"""

# Runs in the kernel as a background task, so the cell returns and widget messages keep flowing.
DRIVER = """
async def until(widget, names, predicate, seconds):
    changed = asyncio.Event()
    poke = lambda _change: changed.set()
    widget.observe(poke, names=names)
    try:
        async with asyncio.timeout(seconds):
            while not predicate():
                changed.clear()
                await changed.wait()
    finally:
        widget.unobserve(poke, names=names)

def turn_report(t):
    return {"heard": t.heard, "text": t.text, "status": t.status}

async def drive(result):
    report = {}
    player, recorder = chat.player, chat.recorder
    views = ["buffered_ms", "position_ms", "flushed", "underruns", "playing"]
    try:
        # 1. the microphone's question, answered and played out in the browser
        (first,) = await chat.wait_turns(1, timeout=90)
        report["first"] = turn_report(first)
        await until(player, views, lambda: player.position_ms > 1000 and not player.playing
                    and player.buffered_ms == 0, 30)
        report["played"] = {"position_ms": player.position_ms, "underruns": player.underruns}
        recorder.stop()
        await until(recorder, ["status"], lambda: recorder.status == "stopped", 30)
        # 2. barge-in: the local server streams at about the pace of speech, so there is an
        #    answer to talk over; the question is said again as soon as that answer starts
        local_server().faults = Faults(delay=0.04)
        speech = Clip.from_array(local_server().engine.synthesize(QUESTION, rate=16000), 16000)
        question = Clip.silence(0.3, 16000) + speech + Clip.silence(1.5, 16000)
        chat.say(question, realtime=False)
        await chat.wait_state("RESPONDING", timeout=60)
        chat.say(question, realtime=True)
        await until(player, views, lambda: player.flushed >= 1, 60)
        report["flush"] = {"flushed": player.flushed, "interrupted_at_ms": player.interrupted_at_ms}
        turns = await chat.wait_turns(3, timeout=90)
        local_server().faults = Faults()
        await until(player, views, lambda: player.position_ms > 1000 and not player.playing
                    and player.buffered_ms == 0, 30)
        report["final"] = {"position_ms": player.position_ms, "underruns": player.underruns}
        report["turns"] = [turn_report(t) for t in turns]
        report["timeline"] = [[round(e.t, 3), e.lane, e.name, dict(e.detail)] for e in chat.timeline]
        report["ledger"] = len(ledger.entries)
    except Exception as exc:
        report["error"] = repr(exc)
    open(result, "w").write(json.dumps(report))

task = asyncio.get_running_loop().create_task(drive(RESULT))
""".replace("QUESTION", repr(QUESTION))


@pytest.fixture(scope="module")
def question_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second of lead-in (capture settles), the question, then silence."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (make system-deps)")
    from nbtoolkit.audio import Clip
    from nbtoolkit.local.engine import Engine

    rate = 48000
    speech = np.asarray(Engine().synthesize(QUESTION, rate=rate), dtype=np.int16)

    def silence(seconds: float) -> np.ndarray:
        return np.zeros(round(seconds * rate), dtype=np.int16)

    samples = np.concatenate([silence(1.0), speech, silence(30)])
    path = tmp_path_factory.mktemp("mic") / "question.wav"
    Clip(samples, rate).save(path)
    return path.resolve()


@pytest.fixture(scope="module")
def chat_page(question_wav: Path, lab: Lab) -> Iterator[Any]:
    """A page in a Chromium of its own, whose fake microphone plays the WAV once (no loop)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={question_wav}%noloop",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )  # fmt: skip
        context = chromium.new_context(viewport={"width": 1280, "height": 900})
        context.grant_permissions(["microphone"], origin=lab.url)
        page = context.new_page()
        page.console_messages = []
        page.on("console", lambda m: page.console_messages.append(f"{m.type}: {m.text}"))
        try:
            yield page
        finally:
            context.close()
            chromium.close()


def test_voice_chat_answers_the_microphone_and_barge_in_flushes_the_player(
    chat_page: Any, lab: Lab, tmp_path: Path
) -> None:
    page = chat_page
    result = tmp_path / "voice_chat.json"
    lab.write_notebook(
        "voice_chat.ipynb", [BUILD, DRIVER.replace("drive(RESULT)", f"drive(r'{result}')")]
    )
    open_notebook(page, lab, "voice_chat.ipynb")
    run_cell(page, "chat = VoiceChat(")
    button = page.locator(".nbtk-voicechat .nbtk-recorder .nbtk-record")
    button.wait_for(timeout=timeout(30) * 1000)
    page.locator(".nbtk-voicechat .nbtk-state", has_text="LISTENING").wait_for(
        timeout=timeout(30) * 1000
    )
    page.locator(".nbtk-voicechat .nbtk-player .nbtk-stats").wait_for(timeout=timeout(30) * 1000)
    run_cell(page, "async def drive(")

    button.click()  # the user gesture; the fake microphone starts its file now
    page.locator(".nbtk-voicechat .nbtk-state", has_text="RESPONDING").wait_for(
        timeout=timeout(30) * 1000
    )
    screenshot(page, "voice_chat_responding.png", ".nbtk-voicechat")
    report = wait_for_file(result, timeout(180))
    page.locator(".nbtk-voicechat .nbtk-transcript", has_text="cancelled").first.wait_for(
        timeout=timeout(10) * 1000
    )
    shot = screenshot(page, "voice_chat_done.png", ".nbtk-voicechat")

    (SCREENSHOTS.parent / "voice_chat_metrics.json").write_text(json.dumps(report, indent=1))
    assert "error" not in report, report
    first = report["first"]
    assert first["status"] == "completed" and "two" in first["text"].lower(), first
    # the answer played in the browser to its end with no gap
    assert report["played"]["position_ms"] > 1000 and report["played"]["underruns"] == 0
    # the barge-in: one flush, carried out by the browser's player, then a full answer again
    flushes = [e for e in report["timeline"] if e[2] == "player.flush"]
    assert [e[3]["reason"] for e in flushes] == ["barge_in"], report["timeline"]
    assert any(e[2] == "barge_in" for e in report["timeline"])
    assert report["flush"]["flushed"] == 1 and report["flush"]["interrupted_at_ms"] is not None
    _, interrupted, again = report["turns"]
    assert interrupted["status"] == "cancelled", interrupted
    assert again["status"] == "completed" and "two" in again["text"].lower(), again
    # the answer after the barge-in played out gaplessly too
    assert report["final"]["position_ms"] > 1000 and report["final"]["underruns"] == 0
    assert report["ledger"] == 3
    print(
        "voice chat in the browser:",
        json.dumps({k: report[k] for k in ("played", "flush", "final", "turns")}),
    )
    print("screenshot:", shot)
