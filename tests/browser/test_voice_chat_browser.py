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

import pytest

from tests.browser.conftest import (
    UNTIL,
    Lab,
    Notebook,
    chromium_with_microphone,
    microphone_wav,
    new_page,
    save_metrics,
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

# Runs in the kernel (after UNTIL) as a background task, so the cell returns and widget messages
# keep flowing.
DRIVER = """
def turn_report(t):
    return {"heard": t.heard, "text": t.text, "status": t.status}

async def drive(result):
    report = {}
    player, recorder = chat.player, chat.recorder
    try:
        # 1. the microphone's question, answered and played out in the browser
        (first,) = await chat.wait_turns(1, timeout=90)
        report["first"] = turn_report(first)
        await until(player, PLAYER_VIEW, lambda: player.position_ms > 1000 and not player.playing
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
        await until(player, PLAYER_VIEW, lambda: player.flushed >= 1, 60)
        report["flush"] = {"flushed": player.flushed, "interrupted_at_ms": player.interrupted_at_ms}
        turns = await chat.wait_turns(3, timeout=90)
        local_server().faults = Faults()
        await until(player, PLAYER_VIEW, lambda: player.position_ms > 1000 and not player.playing
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
def chat_notebook(tmp_path_factory: pytest.TempPathFactory, lab: Lab) -> Iterator[Notebook]:
    """A page in a Chromium of its own, whose fake microphone says the question once (no loop)
    after a second of lead-in (capture settles)."""
    wav = microphone_wav(tmp_path_factory.mktemp("mic"), QUESTION, lead=1.0, tail=30)
    with (
        chromium_with_microphone(f"{wav}%noloop") as chromium,
        new_page(chromium, lab, height=900) as page,
    ):
        yield Notebook(page, lab)


def test_voice_chat_answers_the_microphone_and_barge_in_flushes_the_player(
    chat_notebook: Notebook, tmp_path: Path
) -> None:
    notebook, page = chat_notebook, chat_notebook.page
    result = tmp_path / "voice_chat.json"
    driver = UNTIL + DRIVER.replace("drive(RESULT)", f"drive(r'{result}')")
    notebook.open("voice_chat.ipynb", [BUILD, driver])
    notebook.run_cell("chat = VoiceChat(")
    button = page.locator(".nbtk-voicechat .nbtk-recorder .nbtk-record")
    button.wait_for(timeout=timeout(30) * 1000)
    page.locator(".nbtk-voicechat .nbtk-state", has_text="LISTENING").wait_for(
        timeout=timeout(30) * 1000
    )
    page.locator(".nbtk-voicechat .nbtk-player .nbtk-stats").wait_for(timeout=timeout(30) * 1000)
    notebook.run_cell("async def drive(")

    button.click()  # the user gesture; the fake microphone starts its file now
    page.locator(".nbtk-voicechat .nbtk-state", has_text="RESPONDING").wait_for(
        timeout=timeout(30) * 1000
    )
    notebook.screenshot("voice_chat_responding.png", ".nbtk-voicechat")
    report = wait_for_file(result, timeout(180))
    page.locator(".nbtk-voicechat .nbtk-transcript", has_text="cancelled").first.wait_for(
        timeout=timeout(10) * 1000
    )
    shot = notebook.screenshot("voice_chat_done.png", ".nbtk-voicechat")

    save_metrics("voice_chat_metrics.json", report)
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
