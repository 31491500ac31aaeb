"""ipywebrtc's AudioRecorder in real headless Chromium (JupyterLab 4): the fake microphone's words
come back through its WebM blob as a Clip (notebook 02's last section does the same by hand)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import PHRASE, UNTIL, Notebook, wait_for_file
from tests.conftest import timeout

pytestmark = pytest.mark.browser

#: How long the test "speaks": longer than one loop of the fake microphone's file (the phrase,
#: then 6 s of silence) plus the phrase, so the take holds the phrase whole wherever the loop is.
RECORD_SECONDS = 10

BUILD = """
from ipywebrtc import AudioRecorder, CameraStream

webrtc = AudioRecorder(stream=CameraStream(constraints={"audio": True, "video": False}))
webrtc
"""

CONVERT = """
import json
from nbtoolkit.audio import Clip
from nbtoolkit.local.engine import Engine

async def convert(result):
    # ipywebrtc hands over the whole WebM only after the recording stops
    await until(webrtc.audio, ["value"], lambda: bool(webrtc.audio.value), 120)
    take = Clip.from_ipywebrtc(webrtc, rate=16000)
    report = {"seconds": take.duration, "rate": take.rate, "format": webrtc.audio.format,
              "text": Engine().transcribe(take.samples, 16000)}
    open(result, "w").write(json.dumps(report))

task = asyncio.get_running_loop().create_task(convert(RESULT))
"""


def test_ipywebrtc_recording_becomes_a_clip_with_the_words_intact(
    page: Any, notebook: Notebook, tmp_path: Path
) -> None:
    result = tmp_path / "webrtc.json"
    notebook.open("webrtc.ipynb", [BUILD, UNTIL + CONVERT.replace("RESULT", repr(str(result)))])
    notebook.run_cell("webrtc = AudioRecorder(")
    record = page.locator(".jp-OutputArea-output button").first  # ● toggles recording
    record.wait_for(timeout=timeout(30) * 1000)
    notebook.run_cell("async def convert(")

    record.click()
    page.wait_for_timeout(RECORD_SECONDS * 1000)  # the take's length, not a wait for an event
    record.click()
    report = wait_for_file(result, timeout(120))
    notebook.screenshot("ipywebrtc_recorded.png", ".jp-OutputArea-output audio")

    assert report["format"] == "webm" and report["rate"] == 16000
    assert report["seconds"] >= RECORD_SECONDS - 1
    assert set(PHRASE.split()) <= set(report["text"].split()), report
