"""Features: min/max envelope, RMS per frame, dominant pitch, spectrogram."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from nbtoolkit.audio import Clip
from nbtoolkit.audio.features import dominant_pitch, envelope, rms_frames, spectrogram
from nbtoolkit.errors import AudioError

RATE = 16000


def sine(freq: float, seconds: float = 1.0, amp: float = 0.5, rate: int = RATE) -> Clip:
    t = np.arange(round(seconds * rate)) / rate
    return Clip.from_array(amp * np.sin(2 * np.pi * freq * t), rate)


def test_envelope_matches_min_and_max_of_each_slice() -> None:
    x = np.random.default_rng(3).integers(-32768, 32767, 10_007, dtype=np.int16)
    clip = Clip(x, RATE)
    mins, maxs = envelope(clip, 100)
    bounds = np.linspace(0, x.size, 101).astype(int)
    assert mins.tolist() == [x[a:b].min() for a, b in pairwise(bounds)]
    assert maxs.tolist() == [x[a:b].max() for a, b in pairwise(bounds)]


def test_envelope_never_asks_for_more_columns_than_samples() -> None:
    clip = Clip.from_pcm(b"\x01\x00\x02\x00\x03\x00", RATE)
    mins, maxs = envelope(clip, 1000)
    assert mins.tolist() == maxs.tolist() == [1, 2, 3]
    with pytest.raises(AudioError):
        envelope(clip, 0)


def test_envelope_shows_where_the_sound_is() -> None:
    clip = Clip.silence(1.0) + sine(440, 1.0) + Clip.silence(1.0)
    mins, maxs = envelope(clip, 30)
    loud = maxs > 1000
    assert loud.tolist() == [False] * 10 + [True] * 10 + [False] * 10
    assert np.all(mins[loud] < -16000)


def test_rms_frames_track_loudness_per_frame() -> None:
    clip = sine(440, 0.5, amp=0.5) + Clip.silence(0.5) + sine(440, 0.5, amp=0.05)
    levels = rms_frames(clip, 100)
    assert levels.shape == (15,)
    assert levels[:5] == pytest.approx(0.5 / np.sqrt(2), rel=0.01)
    assert levels[5:10].tolist() == [0.0] * 5
    assert levels[10:] == pytest.approx(0.05 / np.sqrt(2), rel=0.01)


def test_rms_frames_count_a_short_last_frame() -> None:
    levels = rms_frames(Clip.from_pcm(b"\x00\x40" * 7, RATE), frame_ms=0.25)  # 4-sample frames
    assert levels.tolist() == [0.5, 0.5]


@pytest.mark.parametrize("f0", [85.0, 120.0, 210.0, 390.0])
def test_dominant_pitch_of_a_voice_like_buzz(f0: float) -> None:
    t = np.arange(RATE) / RATE
    buzz = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 12))
    clip = Clip.from_array(0.2 * buzz, RATE)
    assert dominant_pitch(clip) == pytest.approx(f0, rel=0.01)


def test_dominant_pitch_ignores_quiet_parts_and_finds_the_voiced_one() -> None:
    noise = Clip.from_array(np.random.default_rng(0).standard_normal(RATE) * 0.001, RATE)
    assert dominant_pitch(noise + sine(200, 0.5, amp=0.5) + noise) == pytest.approx(200, rel=0.01)


@pytest.mark.parametrize(
    "clip",
    [
        Clip.silence(1.0),
        Clip.from_array(np.random.default_rng(1).standard_normal(RATE) * 0.3, RATE),
        Clip.silence(0.01),
    ],
    ids=["silence", "white-noise", "too-short"],
)
def test_dominant_pitch_is_none_without_a_periodic_sound(clip: Clip) -> None:
    assert dominant_pitch(clip) is None


def test_dominant_pitch_refuses_an_impossible_range() -> None:
    with pytest.raises(AudioError, match="fmin < fmax"):
        dominant_pitch(sine(200), fmin=500, fmax=100)


def test_spectrogram_puts_a_tone_in_its_frequency_bin_at_its_level() -> None:
    clip = Clip.silence(0.5) + sine(1000, 1.0, amp=0.5) + Clip.silence(0.5)
    spec = spectrogram(clip)
    assert spec.db.shape == (spec.freqs.size, spec.times.size)
    middle = np.argmin(np.abs(spec.times - 1.0))
    assert spec.freqs[np.argmax(spec.db[:, middle])] == pytest.approx(1000, abs=spec.freqs[1])
    assert spec.db[:, middle].max() == pytest.approx(-6.0, abs=0.5)  # amplitude 0.5 = −6 dB
    start = np.argmin(np.abs(spec.times - 0.2))
    assert spec.db[:, start].max() < -100  # digital silence


def test_spectrogram_work_is_bounded_for_long_clips() -> None:
    long = Clip(np.zeros(RATE * 600, dtype=np.int16), RATE)
    spec = spectrogram(long, max_columns=300)
    assert spec.times.size == 300
    assert spec.times[0] < 0.1
    assert spec.times[-1] > 599.9


def test_spectrogram_of_a_clip_shorter_than_one_window() -> None:
    spec = spectrogram(Clip.from_pcm(b"\x00\x10" * 10, RATE))
    assert spec.times.size == 1
