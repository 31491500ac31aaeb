"""Numbers that describe a Clip, in pure numpy: envelope, loudness per frame, pitch, spectrogram.

Every function here does work bounded by its output size or by one pass over the samples, so they
stay fast on hour-long clips (the display and the offline engine both rely on that).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nbtoolkit.audio.clip import Clip
from nbtoolkit.errors import AudioError

__all__ = ["Spectrogram", "dominant_pitch", "envelope", "rms_frames", "spectrogram"]


def envelope(clip: Clip, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Min and max sample of each of ``columns`` equal slices of the clip, as int16 arrays.

    This is what a waveform plot needs per pixel column: two reductions over the samples, never a
    point per sample. Fewer columns come back when the clip has fewer samples than ``columns``.
    """
    if columns < 1:
        raise AudioError(f"columns must be at least 1 (got {columns})", "ask for 1 or more columns")
    x = clip.samples
    if not x.size:
        return np.zeros(0, np.int16), np.zeros(0, np.int16)
    columns = min(columns, x.size)
    # floor of an evenly spaced grid with step >= 1: strictly increasing, so no slice is empty
    starts = np.linspace(0, x.size, columns + 1)[:-1].astype(np.intp)
    return np.minimum.reduceat(x, starts), np.maximum.reduceat(x, starts)


def rms_frames(clip: Clip, frame_ms: float = 20.0) -> np.ndarray:
    """RMS level (fraction of full scale, 0…1) of consecutive ``frame_ms`` frames; a short last frame counts."""
    n = max(1, round(clip.rate * frame_ms / 1000))
    x = clip.samples
    full = x.size // n
    levels = np.empty(full + (x.size > full * n), dtype=np.float64)
    # float32 in blocks of ~1M samples: an hour-long clip never needs a float64 copy of itself
    step = max(1, (1 << 20) // n)
    for i in range(0, full, step):
        block = x[i * n : min(full, i + step) * n].reshape(-1, n).astype(np.float32) / 32768.0
        levels[i : i + block.shape[0]] = np.einsum("ij,ij->i", block, block) / n
    if levels.size > full:
        tail = x[full * n :].astype(np.float64) / 32768.0
        levels[full] = np.mean(tail * tail)
    return np.sqrt(levels)


#: frames analysed by :func:`dominant_pitch`, at most; spread evenly over the loud part of the clip
_PITCH_MAX_FRAMES = 400
#: normalised autocorrelation a frame needs at its best lag to count as voiced (periodic)
_VOICING_THRESHOLD = 0.45


#: Frames quieter than this (RMS, dB below full scale) hold no speech a recogniser could use: room
#: noise of a quiet microphone sits around -60 dBFS, quiet speech above -40 dBFS.
SILENCE_DBFS = -50.0


def is_silent(clip: Clip, floor_dbfs: float = SILENCE_DBFS) -> bool:
    """True when no 20 ms frame of ``clip`` is louder than ``floor_dbfs`` (RMS)."""
    frames = rms_frames(clip)
    if frames.size == 0:
        return True
    return bool(float(frames.max()) <= 10 ** (floor_dbfs / 20))


def dominant_pitch(clip: Clip, fmin: float = 60.0, fmax: float = 500.0) -> float | None:
    """The typical fundamental frequency in Hz of the periodic (voiced) parts, or None if none.

    Autocorrelation per 40 ms frame over frames within 30 dB of the loudest; the median over voiced
    frames. Pitches outside ``fmin``…``fmax`` are not looked for (the defaults cover speech).
    """
    if not 0 < fmin < fmax < clip.rate / 2:
        raise AudioError(
            f"Pitch range {fmin}…{fmax} Hz does not fit a {clip.rate} Hz clip",
            f"choose 0 < fmin < fmax < {clip.rate // 2}",
        )
    n = max(1, round(clip.rate * 40.0 / 1000))  # the frame rms_frames(clip, 40.0) uses
    lag_lo, lag_hi = int(clip.rate / fmax), int(np.ceil(clip.rate / fmin))
    if clip.samples.size < n or lag_hi >= n:
        return None
    count = clip.samples.size // n
    energy = rms_frames(clip, 40.0)[:count]
    if energy.max() <= 0:
        return None
    loud = np.flatnonzero(energy >= energy.max() * 10 ** (-30 / 20))
    if loud.size > _PITCH_MAX_FRAMES:
        loud = loud[np.linspace(0, loud.size - 1, _PITCH_MAX_FRAMES).astype(np.intp)]
    f = clip.samples[loud[:, None] * n + np.arange(n)].astype(np.float64)
    f -= f.mean(axis=1, keepdims=True)
    spec = np.fft.rfft(f, n=2 * n, axis=1)
    # biased autocorrelation: it falls with lag, so the true period wins over its multiples
    ac = np.fft.irfft(spec * np.conj(spec), axis=1)[:, : lag_hi + 2]
    zero = ac[:, 0]
    valid = zero > 0
    ac, zero = ac[valid], zero[valid]
    if not ac.size:
        return None
    window = ac[:, lag_lo : lag_hi + 1]
    best = window.argmax(axis=1) + lag_lo
    rows = np.arange(best.size)
    peak = ac[rows, best] / zero
    voiced = peak >= _VOICING_THRESHOLD
    if not voiced.any():
        return None
    b, r = best[voiced], rows[voiced]
    # parabolic interpolation between neighbouring lags for a sub-sample period
    left, mid, right = ac[r, b - 1], ac[r, b], ac[r, b + 1]
    denom = left - 2 * mid + right
    shift = np.where(denom != 0, 0.5 * (left - right) / np.where(denom != 0, denom, 1), 0.0)
    return float(np.median(clip.rate / (b + np.clip(shift, -0.5, 0.5))))


@dataclass(frozen=True)
class Spectrogram:
    """Power in dB (``db[freq, time]``, 0 dB = a full-scale sine) at ``times`` (s) and ``freqs`` (Hz)."""

    times: np.ndarray
    freqs: np.ndarray
    db: np.ndarray


def _default_fft_size(rate: int) -> int:
    # ~32 ms windows: fine enough in frequency for speech harmonics, in time for syllables
    return int(2 ** round(np.log2(rate * 0.032)))


def spectrogram(clip: Clip, *, n_fft: int | None = None, max_columns: int = 800) -> Spectrogram:
    """Short-time Fourier power of the clip in at most ``max_columns`` time columns (Hann window).

    Short clips get overlapping frames every ``n_fft/4`` samples; longer clips get ``max_columns``
    frames spread evenly, so the cost is bounded by ``max_columns × n_fft`` whatever the length.
    """
    n_fft = n_fft or _default_fft_size(clip.rate)
    if n_fft < 16 or max_columns < 1:
        raise AudioError("n_fft must be at least 16 and max_columns at least 1", "use the defaults")
    x = clip.samples
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    hop = n_fft // 4
    starts = np.arange(0, x.size - n_fft + 1, hop)
    if starts.size > max_columns:
        starts = np.linspace(0, x.size - n_fft, max_columns).astype(np.intp)
    window = np.hanning(n_fft).astype(np.float32)
    # gather the frames first, then convert: never a float copy of the whole clip
    frames = x[starts[:, None] + np.arange(n_fft)].astype(np.float32) * (window / 32768.0)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    # a full-scale sine puts amplitude sum(window)/2 into its bin; make that 0 dB
    ref = (window.sum() / 2) ** 2
    db = 10 * np.log10(np.maximum(power / ref, 1e-12)).T
    times = (starts + n_fft / 2) / clip.rate
    freqs = np.fft.rfftfreq(n_fft, 1 / clip.rate)
    return Spectrogram(times=times, freqs=freqs, db=db.astype(np.float32))
