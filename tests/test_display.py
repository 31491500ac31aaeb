"""Display: waveform and spectrogram plots, inline players, and the Clip's own notebook view."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import timeout

from nbtoolkit.audio import Clip
from nbtoolkit.display import (
    EMBED_RATE,
    MAX_EMBED_SECONDS,
    InlinePlayer,
    play,
    plot_spectrogram,
    plot_waveform,
    waveform_svg,
)
from nbtoolkit.errors import AudioError

ROOT = Path(__file__).resolve().parents[1]


def sine(freq: float = 440.0, seconds: float = 1.0, rate: int = 16000, amp: float = 0.5) -> Clip:
    t = np.arange(round(seconds * rate)) / rate
    return Clip.from_array(amp * np.sin(2 * np.pi * freq * t), rate)


@pytest.fixture
def plt() -> Iterator:  # type: ignore[type-arg]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    yield pyplot
    pyplot.close("all")


def embedded_clip(html: str) -> Clip:
    match = re.search(r'src="data:audio/wav;base64,([^"]+)"', html)
    assert match, "the player embeds a WAV data URI"
    return Clip.load(base64.b64decode(match.group(1)))


def test_plot_waveform_draws_one_min_max_column_per_pixel(plt) -> None:  # type: ignore[no-untyped-def]
    clip = Clip(np.random.default_rng(0).integers(-2000, 2000, 16000 * 60, dtype=np.int16), 16000)
    _, ax = plt.subplots()
    assert plot_waveform(clip, ax, width_px=500) is ax
    (poly,) = ax.collections
    ys = poly.get_paths()[0].vertices[:, 1]
    assert len(ys) < 2 * 500 + 10  # the envelope, not 960 000 points
    assert ys.max() == pytest.approx(clip.samples.max() / 32768, abs=1e-6)
    assert ys.min() == pytest.approx(clip.samples.min() / 32768, abs=1e-6)
    assert ax.get_xlim() == pytest.approx((0, 60))


def test_plot_waveform_makes_its_own_figure_sized_to_its_pixels(plt) -> None:  # type: ignore[no-untyped-def]
    ax = plot_waveform(sine(seconds=120))
    width = round(ax.bbox.width)
    ys = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert len(ys) <= 2 * width + 10
    assert ax.get_xlabel() == "time (s)"
    ax.figure.canvas.draw()


def test_plot_spectrogram_shows_a_tone_at_its_frequency(plt) -> None:  # type: ignore[no-untyped-def]
    ax = plot_spectrogram(sine(3000, seconds=2.0))
    (image,) = ax.images
    data = np.asarray(image.get_array())
    assert data.shape[1] <= 800
    peak_row = int(np.argmax(data.mean(axis=1)))
    assert peak_row / (data.shape[0] - 1) * 8000 == pytest.approx(3000, abs=40)
    ax.figure.canvas.draw()


def test_plot_spectrogram_draws_into_a_given_axes_with_bounded_columns(plt) -> None:  # type: ignore[no-untyped-def]
    _, ax = plt.subplots()
    long = Clip(np.zeros(16000 * 3600, dtype=np.int16), 16000)
    assert plot_spectrogram(long, ax, max_columns=200) is ax
    assert np.asarray(ax.images[0].get_array()).shape[1] == 200


def test_player_of_a_long_clip_embeds_only_the_first_30_s_at_16_khz() -> None:
    clip = sine(seconds=300, rate=48000)
    html = clip._repr_html_()
    assert "(first 30 s of 5 min)" in html
    part = embedded_clip(html)
    assert (part.rate, part.duration) == (EMBED_RATE, MAX_EMBED_SECONDS)
    assert len(html) < 1.4e6  # 30 s of 16 kHz PCM16 in base64, plus the SVG


def test_player_of_a_short_clip_embeds_all_of_it_at_its_own_lower_rate() -> None:
    clip = sine(seconds=2.0, rate=8000)
    html = InlinePlayer(clip)._repr_html_()
    assert "first" not in html
    assert embedded_clip(html) == clip
    assert "2 s · 8000 Hz · -9.0 dBFS" in html


def test_player_bound_can_be_changed() -> None:
    html = play(sine(seconds=90), max_seconds=10)._repr_html_()
    assert "(first 10 s of 1 min 30 s)" in html
    assert embedded_clip(html).duration == 10


def test_play_accepts_clip_wav_bytes_pcm_bytes_and_arrays() -> None:
    clip = sine(seconds=0.5)
    players = [
        play(clip),
        play(clip.to_wav()),
        play(clip.to_pcm(), rate=16000),
        play(clip.samples, rate=16000),
        play(clip.to_float(), rate=16000),
    ]
    assert all(p.clip == clip for p in players)
    assert all(embedded_clip(p._repr_html_()) == clip for p in players)


def test_play_of_a_file_path(tmp_path: Path) -> None:
    clip = sine(seconds=0.5)
    assert play(clip.save(tmp_path / "a.wav")).clip == clip


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: play(b"\x01\x02" * 500), "pass rate="),
        (lambda: play(sine(), rate=8000), "drop rate="),
        (lambda: play(np.zeros(10)), "pass rate="),
        (lambda: play(b"\x01\x02\x03", rate=16000), "even number of bytes"),
        (lambda: InlinePlayer(sine(), max_seconds=0), "positive"),
    ],
    ids=["raw-bytes-without-rate", "clip-with-rate", "array-without-rate", "odd-pcm", "zero-bound"],
)
def test_play_refuses_ambiguous_input_with_a_fix(call, words: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(AudioError, match=words):
        call()


def test_silent_and_empty_clips_still_render() -> None:
    assert "silent" in Clip.silence(1.0)._repr_html_()
    assert "<polygon" in waveform_svg(Clip.silence(1.0))
    assert "empty" in Clip(np.zeros(0, dtype=np.int16), 16000)._repr_html_()


def test_waveform_svg_is_one_polygon_with_two_points_per_column() -> None:
    svg = waveform_svg(sine(seconds=10), width=300, height=40)
    points = re.search(r'points="([^"]+)"', svg)
    assert points
    coords = [tuple(map(float, p.split(","))) for p in points.group(1).split()]
    assert len(coords) == 600
    assert all(0 <= x <= 300 and 0 <= y <= 40 for x, y in coords)


def test_clip_display_does_not_import_matplotlib() -> None:
    code = (
        "import sys, numpy as np\n"
        "from nbtoolkit.audio import Clip\n"
        "import nbtoolkit.display\n"
        "html = Clip.from_array(np.zeros(1600), 16000)._repr_html_()\n"
        "assert '<audio' in html\n"
        "print('matplotlib' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout(60)
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
