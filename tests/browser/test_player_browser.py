"""The Player in real headless Chromium: 30 s streamed in real time, then a barge-in flush."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import pytest

from tests.browser.conftest import UNTIL, Notebook, save_metrics, wait_for_file
from tests.conftest import timeout

pytestmark = pytest.mark.browser

STREAM_SECONDS = 30

# Runs in the kernel (after UNTIL) as a background task, so the cell returns and widget messages
# keep flowing.
DRIVER = """
import asyncio, json
import numpy as np
from nbtoolkit.audio import Clip

async def drive(seconds, result):
    rate = 24000
    t = np.arange(rate * (seconds + 10)) / rate  # a 10 s tail: "over 2 s buffered" holds for 8 s
    sweep = Clip.from_array(0.2 * np.sin(2 * np.pi * (300 + 100 * np.sin(2 * np.pi * 0.2 * t)) * t), rate)
    chunks = list(sweep[0:seconds].chunks(100))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    positions = []
    for i, chunk in enumerate(chunks):
        # real-time pace against the start, like audio arriving from a backend
        await asyncio.sleep(max(0.0, t0 + i * 0.1 - loop.time()))
        player.feed(chunk)
        if i % 10 == 0:
            positions.append(player.position_ms)
    # an answer still arriving faster than it plays: then the user barges in
    player.feed(sweep[seconds:].to_pcm())
    def barge_in():
        state = {"positions_ms": positions, "underruns": player.underruns,
                 "before_flush": {"buffered_ms": player.buffered_ms, "position_ms": player.position_ms},
                 "fed_ms": player.fed_ms, "flushed_at": loop.time()}
        player.flush()
        return state
    report = await when(player, PLAYER_VIEW, lambda: player.buffered_ms > 2000, barge_in, 30)
    # how late this task resumed after the flush (a diagnostic for loaded machines)
    report["resume_lag_s"] = round(loop.time() - report.pop("flushed_at"), 3)
    await until(player, PLAYER_VIEW,
                lambda: player.flushed == 1 and player.buffered_ms == 0 and not player.playing, 30)
    report["after_flush"] = {"buffered_ms": player.buffered_ms, "position_ms": player.position_ms,
                             "playing": player.playing, "interrupted_at_ms": player.interrupted_at_ms,
                             "fed_ms": player.fed_ms}
    open(result, "w").write(json.dumps(report))

async def drive_and_report(seconds, result):
    # a failure must reach the test as a message, not as a result file that never appears
    try:
        await drive(seconds, result)
    except BaseException as exc:
        open(result, "w").write(json.dumps({"error": repr(exc), "underruns": player.underruns,
                                            "buffered_ms": player.buffered_ms}))
        raise

task = asyncio.get_running_loop().create_task(drive_and_report(SECONDS, RESULT))
"""


def test_player_streams_30_s_gaplessly_and_flush_stops_it_at_once(
    page, notebook: Notebook, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    result = tmp_path / "player.json"
    driver = UNTIL + DRIVER.replace("SECONDS, RESULT", f"{STREAM_SECONDS}, r'{result}'")
    notebook.open(
        "player.ipynb",
        ["from nbtoolkit.widgets import Player\nplayer = Player(rate=24000)\nplayer", driver],
    )
    notebook.run_cell("player = Player(")
    page.locator(".nbtk-player .nbtk-stats").wait_for(timeout=timeout(30) * 1000)
    notebook.run_cell("async def drive(")

    page.wait_for_function(
        "() => /played (1[0-9]|[2-9][0-9])\\./.test(document.querySelector('.nbtk-player .nbtk-stats').textContent)",
        timeout=timeout(40) * 1000,
    )
    notebook.screenshot("player_playing.png", ".nbtk-player")
    report = wait_for_file(result, timeout(STREAM_SECONDS + 80))
    assert "error" not in report, report
    notebook.screenshot("player_flushed.png", ".nbtk-player")

    positions = report["positions_ms"]
    assert report["underruns"] == 0, report
    # advancing every second (the first sample is taken before any sound)
    assert all(b > a for a, b in pairwise(positions[1:])), positions
    assert positions[-1] >= (STREAM_SECONDS - 3) * 1000
    assert report["before_flush"]["buffered_ms"] > 2000
    after = report["after_flush"]
    assert after["buffered_ms"] == 0 and not after["playing"] and after["fed_ms"] == 0
    # the view reports how far it got: inside what was fed, short of the end
    assert 0 < after["interrupted_at_ms"] < report["fed_ms"]
    save_metrics("player_metrics.json", report)
    print(
        "player over",
        STREAM_SECONDS,
        "s:",
        json.dumps({k: v for k, v in report.items() if k != "positions_ms"}),
    )
