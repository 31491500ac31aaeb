"""The Recorder in real headless Chromium: fake microphone → AudioWorklet → kernel, words intact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.browser.conftest import PHRASE, Notebook, save_metrics, wait_for_file
from tests.conftest import timeout

pytestmark = pytest.mark.browser

RECORD_SECONDS = 4.0


def test_recorder_streams_the_microphone_to_the_kernel_with_the_words_intact(
    page, notebook: Notebook, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    result = tmp_path / "recorder.json"
    notebook.open(
        "recorder.ipynb",
        [
            f"from nbtoolkit.widgets import Recorder\nrec = Recorder(save_dir=r'{tmp_path / 'rec'}')\nrec",
            "import json\nfrom nbtoolkit.local.engine import Engine\n"
            "clip = rec.clip\n"
            "report = {'seconds': clip.duration, 'rate': clip.rate, 'path': rec.path,\n"
            "          'text': Engine().transcribe(clip.samples, 16000),\n"
            "          'latencies_ms': rec.chunk_latencies_ms, 'missing': rec.missing_chunks,\n"
            "          'chunks': len(rec.chunk_latencies_ms), 'takes': len(rec.clips)}\n"
            f"open(r'{result}', 'w').write(json.dumps(report))",
        ],
    )
    notebook.run_cell("rec = Recorder(")
    button = page.locator(".nbtk-recorder .nbtk-record")
    button.wait_for(timeout=timeout(30) * 1000)

    button.click()  # the click is the user gesture that lets the AudioContext start
    page.wait_for_function(
        "s => { const t = document.querySelector('.nbtk-recorder .nbtk-time');"
        " return t && parseFloat(t.textContent.split(':')[1]) >= s; }",
        arg=RECORD_SECONDS,
        timeout=timeout(30) * 1000,
    )
    shot = notebook.screenshot("recorder_recording.png", ".nbtk-recorder")
    button.click()
    page.locator(".nbtk-recorder .nbtk-info", has_text="stopped").wait_for(
        timeout=timeout(10) * 1000
    )
    assert page.locator(".nbtk-recorder .nbtk-error").inner_text() == ""

    notebook.run_cell("report = {")
    report = wait_for_file(result, timeout(60))
    notebook.screenshot("recorder_stopped.png", ".nbtk-recorder")

    assert report["rate"] == 16000 and report["takes"] == 1
    assert report["seconds"] >= RECORD_SECONDS - 0.5
    assert report["missing"] == 0
    assert "forward" in report["text"].split(), report["text"]
    assert Path(report["path"]).stat().st_size == 44 + round(report["seconds"] * 16000) * 2

    lat = np.array(report["latencies_ms"])
    metrics = {
        "phrase": PHRASE,
        "heard": report["text"],
        "chunks": report["chunks"],
        "latency_p50_ms": float(np.percentile(lat, 50)),
        "latency_p95_ms": float(np.percentile(lat, 95)),
        "latency_max_ms": float(lat.max()),
        "screenshot": str(shot),
    }
    save_metrics("recorder_metrics.json", metrics)
    print("recorder browser→kernel chunk latency:", json.dumps(metrics))


def test_recorder_explains_a_denied_microphone_in_the_widget(page, notebook: Notebook) -> None:  # type: ignore[no-untyped-def]
    # the fake-media flags accept every prompt, so deny the way a user would: getUserMedia rejects
    page.add_init_script(
        "navigator.mediaDevices.getUserMedia = () =>"
        " Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));"
    )
    notebook.open("denied.ipynb", ["from nbtoolkit.widgets import Recorder\nrec = Recorder()\nrec"])
    notebook.run_cell("rec = Recorder(")
    page.locator(".nbtk-recorder .nbtk-record").click(timeout=timeout(30) * 1000)
    error = page.locator(".nbtk-recorder .nbtk-error")
    error.wait_for(state="visible", timeout=timeout(10) * 1000)
    assert "Microphone access was denied" in error.inner_text()
    assert "allow the microphone" in error.inner_text()
    notebook.screenshot("recorder_denied.png", ".nbtk-recorder")
