"""VoiceChat(OmniRealtime) in real headless Chromium: fake microphone → Recorder → server VAD →
answer → Player, and a barge-in that flushes the playing answer.

The fake microphone says the question, pauses, and says it again while the first answer is still
playing (its file does not loop). So the first answer is complete on the server (its text holds
"two") but is cut off in the browser by the second question; the second answer plays to the end.
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
#: Silence between the two questions: more than the server VAD's 0.8 s (so the first is a turn of
#: its own) and short enough that the second starts while the first answer (1.8 s) plays.
GAP_SECONDS = 1.9

BUILD = """
import asyncio, json
import nbtoolkit
from nbtoolkit.backends.omni import OmniRealtime
from nbtoolkit.ledger import Ledger
from nbtoolkit.voice_chat import VoiceChat

ledger = Ledger()
chat = VoiceChat(OmniRealtime(nbtoolkit.connect(local=True, quiet=True), ledger=ledger))
chat.start()
chat
"""

# Runs in the kernel as a background task, so the cell returns and widget messages keep flowing.
DRIVER = """
async def until(predicate, seconds):
    player, changed = chat.player, asyncio.Event()
    names = ["buffered_ms", "position_ms", "flushed", "underruns", "playing"]
    poke = lambda _change: changed.set()
    player.observe(poke, names=names)
    try:
        async with asyncio.timeout(seconds):
            while not predicate():
                changed.clear()
                await changed.wait()
    finally:
        player.unobserve(poke, names=names)

async def drive(result):
    report = {}
    try:
        turns = await chat.wait_turns(2, timeout=60)
        report["turns"] = [{"heard": t.heard, "text": t.text, "status": t.status} for t in turns]
        player = chat.player
        # the second answer has played out: the view reports its position and no underrun
        await until(lambda: player.position_ms > 1000 and not player.playing
                    and player.buffered_ms == 0, 20)
        report["player"] = {"position_ms": player.position_ms, "underruns": player.underruns,
                            "flushed": player.flushed, "interrupted_at_ms": player.interrupted_at_ms}
        report["timeline"] = [[round(e.t, 3), e.lane, e.name, dict(e.detail)] for e in chat.timeline]
        report["ledger"] = len(ledger.entries)
    except Exception as exc:
        report["error"] = repr(exc)
    open(result, "w").write(json.dumps(report))

task = asyncio.get_running_loop().create_task(drive(RESULT))
"""


@pytest.fixture(scope="module")
def two_questions_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Lead-in, the question, a short pause, the question again, then long silence."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (make system-deps)")
    from nbtoolkit.audio import Clip
    from nbtoolkit.local.engine import Engine

    rate = 48000
    speech = np.asarray(Engine().synthesize(QUESTION, rate=rate), dtype=np.int16)

    def silence(seconds: float) -> np.ndarray:
        return np.zeros(round(seconds * rate), dtype=np.int16)

    samples = np.concatenate([silence(0.5), speech, silence(GAP_SECONDS), speech, silence(20)])
    path = tmp_path_factory.mktemp("mic") / "two_questions.wav"
    Clip(samples, rate).save(path)
    return path.resolve()


@pytest.fixture(scope="module")
def chat_page(two_questions_wav: Path, lab: Lab) -> Iterator[Any]:
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
                f"--use-file-for-fake-audio-capture={two_questions_wav}%noloop",
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
    report = wait_for_file(result, timeout(90))
    page.locator(".nbtk-voicechat .nbtk-transcript", has_text="assistant").first.wait_for(
        timeout=timeout(10) * 1000
    )
    shot = screenshot(page, "voice_chat_done.png", ".nbtk-voicechat")
    button.click()  # stop recording

    assert "error" not in report, report
    first, second = report["turns"]
    assert first["status"] == "completed" and "two" in first["text"].lower(), first
    assert "plus" in first["heard"].split(), first
    assert second["status"] == "completed" and "two" in second["text"].lower(), second
    player = report["player"]
    # the second answer played to its end with no gap
    assert player["position_ms"] > 1000 and player["underruns"] == 0, player
    # the second question cut the first answer off in the browser: one flush, mid-answer
    flushes = [e for e in report["timeline"] if e[2] == "player.flush"]
    assert [e[3]["reason"] for e in flushes] == ["barge_in"], report["timeline"]
    assert player["flushed"] == 1
    assert player["interrupted_at_ms"] is not None and 0 < player["interrupted_at_ms"] < 1800
    assert report["ledger"] == 2
    metrics = {
        "turns": report["turns"],
        "player": player,
        "timeline": [e for e in report["timeline"] if e[1] != "audio-in"],
        "screenshot": str(shot),
    }
    (SCREENSHOTS.parent / "voice_chat_metrics.json").write_text(json.dumps(metrics, indent=1))
    print("voice chat in the browser:", json.dumps({"player": player, "turns": report["turns"]}))
