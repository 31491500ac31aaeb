"""Clip: construction from arrays and PCM, properties, transforms, WAV/encoded round trips."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from nbtoolkit.audio import Clip
from nbtoolkit.audio.features import dominant_pitch
from nbtoolkit.errors import AudioError


def tone(freq: float = 220.0, seconds: float = 1.0, rate: int = 16000, amp: float = 0.5) -> Clip:
    t = np.arange(round(seconds * rate)) / rate
    return Clip.from_array(amp * np.sin(2 * np.pi * freq * t), rate)


def test_float_array_becomes_int16_scaled_to_full_scale() -> None:
    clip = Clip.from_array(np.array([0.0, 0.5, -0.5, 1.0, -1.0]), 8000)
    assert clip.samples.dtype == np.int16
    assert clip.samples.tolist() == [0, 16384, -16384, 32767, -32768]


def test_int16_array_is_kept_sample_for_sample() -> None:
    x = np.array([0, 1, -1, 32767, -32768], dtype=np.int16)
    assert Clip.from_array(x, 16000).samples.tolist() == x.tolist()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (np.array([0, 2**30, -(2**31)], dtype=np.int32), [0, 16384, -32768]),
        (np.array([128, 255, 0], dtype=np.uint8), [0, 32512, -32768]),
        (np.array([0, 64, -128], dtype=np.int8), [0, 16384, -32768]),
    ],
)
def test_other_integer_widths_are_rescaled_to_16_bit(data: np.ndarray, expected: list[int]) -> None:
    assert Clip.from_array(data, 16000).samples.tolist() == expected


@pytest.mark.parametrize("layout", ["samples_by_channels", "channels_by_samples"])
def test_multichannel_arrays_are_mixed_to_mono(layout: str) -> None:
    left = np.full(100, 0.5)
    right = np.full(100, -0.25)
    stereo = np.stack([left, right], axis=1 if layout == "samples_by_channels" else 0)
    clip = Clip.from_array(stereo, 44100)
    assert len(clip) == 100
    assert np.all(clip.samples == round(0.125 * 32767))


def test_int16_stereo_mix_does_not_overflow() -> None:
    loud = np.full((10, 2), 32000, dtype=np.int16)
    assert np.all(Clip.from_array(loud, 16000).samples == 32000)


def test_from_array_copies_so_later_edits_to_the_input_do_not_change_the_clip() -> None:
    x = np.zeros(10, dtype=np.int16)
    clip = Clip.from_array(x, 16000)
    x[:] = 5
    assert not clip.samples.any()
    with pytest.raises(ValueError):
        clip.samples[0] = 1


@settings(max_examples=60, deadline=None)
@given(arrays(np.int16, st.integers(1, 400)), st.sampled_from([8000, 16000, 44100]))
def test_float_pcm_and_wav_round_trips_are_sample_exact(x: np.ndarray, rate: int) -> None:
    clip = Clip(x, rate)
    assert Clip.from_array(clip.to_float(), rate) == clip
    assert Clip.from_pcm(clip.to_pcm(), rate) == clip
    assert Clip.load(clip.to_wav()) == clip


def test_pcm_bytes_round_trip() -> None:
    clip = tone()
    assert Clip.from_pcm(clip.to_pcm(), clip.rate) == clip
    assert Clip.from_pcm(bytearray(b"\x01\x00\xff\xff"), 8000).samples.tolist() == [1, -1]


def test_duration_level_and_repr() -> None:
    clip = tone(amp=0.5, seconds=2.0)
    assert clip.duration == pytest.approx(2.0)
    assert clip.rms == pytest.approx(0.5 / np.sqrt(2), rel=1e-3)
    assert clip.dbfs == pytest.approx(-9.03, abs=0.05)
    assert repr(clip) == "Clip(2.00 s, 16000 Hz, -9.0 dBFS)"
    silent = Clip.silence(0.5, 8000)
    assert (len(silent), silent.rate, silent.dbfs) == (4000, 8000, float("-inf"))


def test_resample_keeps_duration_and_pitch() -> None:
    clip = tone(300.0, seconds=1.0, rate=48000)
    low = clip.resample(16000)
    assert (low.rate, len(low)) == (16000, 16000)
    assert dominant_pitch(low) == pytest.approx(300.0, rel=0.01)
    assert clip.resample(48000) is clip


def test_slicing_by_seconds() -> None:
    clip = tone(seconds=3.0)
    part = clip[0.5:2.0]
    assert part.duration == pytest.approx(1.5)
    assert np.array_equal(part.samples, clip.samples[8000:32000])
    assert clip[2.5:].duration == pytest.approx(0.5)
    assert clip[:1].duration == pytest.approx(1.0)


def test_slicing_outside_the_clip_or_with_a_step_is_refused() -> None:
    clip = tone(seconds=1.0)
    with pytest.raises(AudioError, match="choose a range inside the clip"):
        clip[2.0:3.0]
    with pytest.raises(TypeError):
        clip[0:1:2]


def test_concatenation_resamples_the_right_hand_clip() -> None:
    joined = tone(seconds=1.0, rate=16000) + Clip.silence(0.5, 8000)
    assert joined.rate == 16000
    assert joined.duration == pytest.approx(1.5)
    assert not joined.samples[16000:].any()


def test_chunks_cover_the_clip_in_pieces_of_the_given_length() -> None:
    clip = tone(seconds=0.21)
    pieces = list(clip.chunks(20))
    assert [len(p) for p in pieces] == [640] * 10 + [320]
    assert b"".join(pieces) == clip.to_pcm()


def test_to_wav_is_a_standard_pcm16_wav() -> None:
    clip = tone(rate=22050)
    with wave.open(io.BytesIO(clip.to_wav())) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 22050)
        assert w.readframes(w.getnframes()) == clip.to_pcm()


def test_to_float_is_minus_one_to_one() -> None:
    f = Clip.from_array(np.array([32767, -32768, 0], dtype=np.int16), 8000).to_float()
    assert f.dtype == np.float32
    assert f.tolist() == pytest.approx([32767 / 32768, -1.0, 0.0])


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_lossless_save_and_load_is_exact(tmp_path, suffix: str) -> None:  # type: ignore[no-untyped-def]
    clip = tone(rate=22050)
    path = clip.save(tmp_path / f"tone{suffix}")
    assert Clip.load(path) == clip
    assert Clip.load(f"file://{path}") == clip


@pytest.mark.parametrize("suffix", [".mp3", ".ogg", ".opus", ".webm"])
def test_lossy_save_and_load_keeps_length_and_pitch(tmp_path, suffix: str) -> None:  # type: ignore[no-untyped-def]
    clip = tone(180.0, seconds=2.0, rate=16000)
    back = Clip.load(clip.save(tmp_path / f"tone{suffix}"), rate=16000)
    assert back.duration == pytest.approx(2.0, abs=0.06)
    assert dominant_pitch(back) == pytest.approx(180.0, rel=0.01)
    assert back.dbfs == pytest.approx(clip.dbfs, abs=1.0)


def test_load_resamples_when_asked_and_passes_a_clip_through() -> None:
    clip = tone(rate=48000)
    assert Clip.load(clip) is clip
    assert Clip.load(clip.to_wav(), rate=16000).rate == 16000


def test_saving_to_an_unknown_suffix_names_the_ones_that_work(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(AudioError, match=r"\.wav, \.flac"):
        tone().save(tmp_path / "tone.aiff")


def test_clip_renders_in_a_notebook_as_waveform_and_player() -> None:
    html = tone()._repr_html_()
    assert "<svg" in html
    assert "<audio" in html
    assert "data:audio/wav;base64," in html
