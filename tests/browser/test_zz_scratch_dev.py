# TEMPORARY dev scratch (deleted before the report): engine ASR/TTS not ready yet
from __future__ import annotations
import json
from pathlib import Path
import numpy as np
import pytest
from tests.browser.conftest import Lab, open_notebook, run_cell, screenshot, wait_for_file, PHRASE


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory):
    from nbtoolkit.audio import Clip
    from nbtoolkit.local.engine.tts import Tts

    rate = 48000
    speech = np.asarray(Tts().synthesize(PHRASE, rate=rate), dtype=np.int16)
    pause = np.zeros(rate // 2, dtype=np.int16)
    path = tmp_path_factory.mktemp("mic") / "speech.wav"
    Clip(np.concatenate([pause, speech, pause]), rate).save(path)
    return path.resolve()


def test_dev(page, lab: Lab, tmp_path: Path, speech_wav):
    result = tmp_path / "r.json"
    lab.write_notebook(
        "dev.ipynb",
        [
            f"from nbtoolkit.widgets import Recorder\nrec = Recorder(save_dir=r'{tmp_path / 'rec'}')\nrec",
            "import json\nclip = rec.clip\n"
            f"open(r'{result}', 'w').write(json.dumps({{'seconds': clip.duration, 'lat': rec.chunk_latencies_ms, 'path': rec.path, 'rms': clip.rms}}))",
        ],
    )
    open_notebook(page, lab, "dev.ipynb")
    run_cell(page, "rec = Recorder(")
    button = page.locator(".nbtk-recorder .nbtk-record")
    button.wait_for(timeout=30000)
    button.click()
    page.wait_for_function(
        "s => { const t = document.querySelector('.nbtk-recorder .nbtk-time'); return t && parseFloat(t.textContent.split(':')[1]) >= s; }",
        arg=4.0,
        timeout=30000,
    )
    screenshot(page, "dev_rec.png", ".nbtk-recorder")
    button.click()
    page.locator(".nbtk-recorder .nbtk-info", has_text="stopped").wait_for(timeout=10000)
    run_cell(page, "clip = rec.clip")
    rep = wait_for_file(result, 60)
    print({k: v for k, v in rep.items() if k != "lat"}, np.percentile(rep["lat"], [50, 95]))
    print("\n".join(page.console_messages[-20:]))
    from nbtoolkit.audio import Clip

    got = Clip.load(rep["path"]).to_float()
    src = Clip.load(str(speech_wav), rate=16000).to_float()
    c = (
        np.correlate(got, src, mode="valid")
        if len(got) > len(src)
        else np.correlate(src, got, mode="valid")
    )
    print("corr", c.max() / np.sqrt(np.dot(src, src) * np.dot(got[: len(src)], got[: len(src)])))


from tests.browser.test_player_browser import (
    test_player_streams_30_s_gaplessly_and_flush_stops_it_at_once,
)  # noqa
from tests.browser.test_recorder_browser import test_recorder_explains_a_denied_microphone_in_the_widget  # noqa
