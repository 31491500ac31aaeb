"""The Clip value object: immutable int16 mono PCM plus its sample rate."""

from __future__ import annotations

import io
import math
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nbtoolkit.errors import AudioError

__all__ = ["MAX_RATE", "MIN_RATE", "Clip"]

MIN_RATE = 1000
MAX_RATE = 384_000

#: Float input peaking above this is integer PCM stored as floats, not −1…1 audio; clipping it
#: would turn the sound into a square wave, so it is refused rather than silently ruined.
_FLOAT_PEAK_LIMIT = 2.0


#: The longest silence Clip.silence makes (a day at 16 kHz is 2.8 GB: longer is a mistake).
MAX_SILENCE_SECONDS = 24 * 3600.0


def _check_rate(rate: Any) -> int:
    if (
        isinstance(rate, bool)
        or not isinstance(rate, (int, np.integer))
        or not (MIN_RATE <= int(rate) <= MAX_RATE)
    ):
        raise AudioError(
            f"Sample rate {rate!r} is not usable",
            f"give a whole number of Hz between {MIN_RATE} and {MAX_RATE} (speech is usually 16000)",
        )
    return int(rate)


def _to_pcm16(arr: np.ndarray) -> np.ndarray:
    """Element-wise conversion of float (−1…1) or integer samples of any shape to int16."""
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise AudioError(
                "The audio contains NaN or infinite samples",
                "clean the array (e.g. np.nan_to_num) before making a Clip",
            )
        peak = float(np.max(np.abs(arr)))
        if peak > _FLOAT_PEAK_LIMIT:
            raise AudioError(
                f"Float samples reach {peak:g}, but float audio must lie in −1…1",
                "divide by 32768 if these are 16-bit values, or pass the integer array itself",
            )
        # × 32768 with clipping: the inverse of to_float() and of FFmpeg's s16 → float, so round trips are exact
        return np.clip(np.round(arr * 32768.0), -32768, 32767).astype(np.int16)
    if arr.dtype == np.int16:
        return arr
    info = np.iinfo(arr.dtype)
    if arr.dtype.kind == "u":
        mid = (int(info.max) + 1) // 2
        scaled = (arr.astype(np.float64) - mid) / mid
    else:
        scaled = arr.astype(np.float64) / (int(info.max) + 1)
    return np.clip(np.round(scaled * 32768.0), -32768, 32767).astype(np.int16)


@dataclass(frozen=True, eq=False)
class Clip:
    """Mono 16-bit PCM audio. Build one with :meth:`load`, :meth:`from_array` or :meth:`from_pcm`.

    The samples are a read-only ``int16`` numpy array, so a Clip can be shared safely between threads,
    widgets and backends. In a notebook a Clip shows itself as a small waveform and a player whose
    embedded audio is bounded (see :meth:`_repr_html_`).
    """

    samples: np.ndarray
    rate: int

    def __post_init__(self) -> None:
        rate = _check_rate(self.rate)
        arr = np.asarray(self.samples)
        if arr.dtype != np.int16 or arr.ndim != 1:
            raise AudioError(
                "Clip samples must be a 1-D int16 array",
                "use Clip.from_array(), which converts any numeric array",
            )
        arr = arr.copy() if arr.flags.writeable else arr
        arr.flags.writeable = False
        object.__setattr__(self, "samples", arr)
        object.__setattr__(self, "rate", rate)

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_array(cls, data: Any, rate: int) -> Clip:
        """From a numpy array: float (−1…1) or integer PCM, mono or multi-channel, at ``rate`` Hz.

        Multi-channel input may be ``(n, channels)`` or ``(channels, n)`` (the shorter axis is taken
        as channels) and is mixed down to mono. Unsigned integers are offset binary (as in 8-bit WAV).
        """
        _check_rate(rate)
        arr = np.asarray(data)
        if arr.size == 0:
            raise AudioError("The audio is empty (0 samples)", "record or load some sound first")
        if arr.dtype.kind == "b":
            raise AudioError("A boolean array is not audio", "pass float or integer samples")
        if arr.dtype.kind not in "fiu":
            raise AudioError(
                f"An array of dtype {arr.dtype} is not audio",
                "pass float samples in −1…1 or integer PCM",
            )
        if arr.ndim not in (1, 2):
            raise AudioError(
                f"An array of shape {arr.shape} is not audio",
                "pass shape (samples,) or (samples, channels)",
            )
        pcm = _to_pcm16(arr)
        if pcm.ndim == 2:
            channel_axis = 1 if pcm.shape[1] <= pcm.shape[0] else 0
            pcm = np.round(pcm.mean(axis=channel_axis, dtype=np.float64)).astype(np.int16)
        return cls(pcm, rate)

    @classmethod
    def from_pcm(cls, data: bytes | bytearray | memoryview, rate: int) -> Clip:
        """From raw little-endian signed 16-bit mono PCM bytes at ``rate`` Hz."""
        _check_rate(rate)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise AudioError(
                f"PCM data must be bytes, not {type(data).__name__}",
                "pass raw 16-bit samples as bytes (for a file use Clip.load, for numbers "
                "Clip.from_array)",
            )
        raw = bytes(data)
        if not raw:
            raise AudioError("The PCM data is empty", "send at least one 16-bit sample")
        if len(raw) % 2:
            raise AudioError(
                f"PCM16 data must have an even number of bytes (got {len(raw)})",
                "check that the stream is 16-bit mono and was not cut mid-sample",
            )
        return cls(np.frombuffer(raw, dtype="<i2").astype(np.int16), rate)

    @classmethod
    def silence(cls, seconds: float, rate: int = 16000) -> Clip:
        """``seconds`` of digital silence (at least one sample)."""
        _check_rate(rate)
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, (int, float))
            or not (0 <= seconds <= MAX_SILENCE_SECONDS)
        ):
            raise AudioError(
                f"Silence of {seconds!r} seconds cannot be made",
                f"give a number of seconds from 0 to {MAX_SILENCE_SECONDS:.0f}",
            )
        return cls(np.zeros(max(1, round(seconds * rate)), dtype=np.int16), rate)

    @classmethod
    def load(cls, source: Any, rate: int | None = None, *, allow_truncated: bool = False) -> Clip:
        """From a path, ``file://`` URL, bytes of an encoded file (WAV/MP3/FLAC/OGG/WebM…), or a Clip.

        ``rate`` resamples the result. Decoding uses PyAV; see :func:`nbtoolkit.audio.decode.decode`
        (also for ``allow_truncated``). For numpy arrays use :meth:`from_array`, for raw PCM
        :meth:`from_pcm`.
        """
        from nbtoolkit.audio.decode import decode  # PyAV: ≈ 120 ms to import, only when decoding

        clip = (
            source if isinstance(source, Clip) else decode(source, allow_truncated=allow_truncated)
        )
        return clip if rate is None else clip.resample(rate)

    @classmethod
    def from_ipywebrtc(cls, recorder: Any, rate: int | None = None) -> Clip:
        """From an ipywebrtc ``AudioRecorder`` (or its ``.audio`` widget) after a recording.

        The browser's MediaRecorder hands over WebM/Opus at 48 kHz; ``rate`` resamples it
        (16000 suits speech models).
        """
        media = getattr(recorder, "audio", recorder)
        value = getattr(media, "value", None)
        if value is None:
            raise AudioError(
                f"A {type(recorder).__name__} is not an ipywebrtc recorder",
                "pass the ipywebrtc.AudioRecorder you recorded with",
            )
        data = bytes(value)
        if not data:
            raise AudioError(
                "The recorder holds no recording yet",
                "press the record button, speak, press stop, then run this cell again",
            )
        return cls.load(data, rate)

    # ----------------------------------------------------------------- properties
    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.samples) / self.rate

    @property
    def nbytes(self) -> int:
        """Size of the PCM16 samples in bytes."""
        return int(self.samples.nbytes)

    @property
    def rms(self) -> float:
        """Root-mean-square level as a fraction of full scale (0…1)."""
        x = self.samples.astype(np.float64) / 32768.0
        return float(np.sqrt(np.mean(x * x))) if x.size else 0.0

    @property
    def dbfs(self) -> float:
        """RMS level in dBFS (−inf for digital silence)."""
        r = self.rms
        return 20 * math.log10(r) if r > 0 else float("-inf")

    def __len__(self) -> int:
        return len(self.samples)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Clip)
            and other.rate == self.rate
            and np.array_equal(other.samples, self.samples)
        )

    def __hash__(self) -> int:
        return hash((self.rate, self.samples.tobytes()))

    def __repr__(self) -> str:
        return f"Clip({self.duration:.2f} s, {self.rate} Hz, {self.dbfs:.1f} dBFS)"

    def _repr_html_(self) -> str:
        """A compact inline waveform (SVG, numpy only) and an ``<audio>`` player.

        Bounded: the player embeds at most the first
        :data:`nbtoolkit.display.player.MAX_EMBED_SECONDS` (30 s) as 16 kHz mono WAV (about 1.3 MB of
        base64 at most) and says "(first 30 s of 5 min)" when it cuts; the waveform always covers the
        whole clip. matplotlib is not used.
        """
        from nbtoolkit.audio.inline import clip_html

        return clip_html(self)

    # ----------------------------------------------------------------- transforms
    def resample(self, rate: int) -> Clip:
        """The same sound at ``rate`` Hz (soxr, high quality)."""
        import soxr  # ≈ 170 ms to import, only when resampling

        rate = _check_rate(rate)
        if rate == self.rate:
            return self
        if not self.samples.size:
            return Clip(self.samples, rate)
        # in float: soxr's int16 output adds dither, which would turn digital silence into noise
        out = soxr.resample(self.to_float(), self.rate, rate, quality="HQ")
        if out.size == 0:
            return Clip(np.zeros(1, dtype=np.int16), rate)
        return Clip(_to_pcm16(np.clip(out, -1.0, 1.0)), rate)

    def __getitem__(self, key: slice) -> Clip:
        """Slice by seconds: ``clip[0.5:2.0]`` is the part from 0.5 s to 2 s."""
        if not isinstance(key, slice) or key.step is not None:
            raise TypeError("slice a Clip by seconds, e.g. clip[0.5:2.0]")
        start = 0 if key.start is None else max(0, round(key.start * self.rate))
        stop = len(self.samples) if key.stop is None else max(0, round(key.stop * self.rate))
        part = self.samples[start:stop]
        if part.size == 0:
            raise AudioError(
                f"The slice {key.start}:{key.stop} s is empty "
                f"(the clip is {self.duration:.2f} s long)",
                "choose a range inside the clip",
            )
        return Clip(part, self.rate)

    def __add__(self, other: Clip) -> Clip:
        """Concatenate; ``other`` is resampled to this clip's rate if needed."""
        if not isinstance(other, Clip):
            return NotImplemented
        other = other.resample(self.rate)
        return Clip(np.concatenate([self.samples, other.samples]), self.rate)

    def chunks(self, ms: float) -> Iterator[bytes]:
        """PCM16 bytes in pieces of ``ms`` milliseconds (the last may be shorter)."""
        n = max(1, round(self.rate * ms / 1000))
        for i in range(0, len(self.samples), n):
            yield self.samples[i : i + n].tobytes()

    def to_pcm(self) -> bytes:
        """Raw little-endian PCM16 bytes."""
        return self.samples.astype("<i2").tobytes()

    def to_float(self) -> np.ndarray:
        """Samples as float32 in −1…1."""
        return self.samples.astype(np.float32) / 32768.0

    def to_wav(self) -> bytes:
        """A complete WAV file (PCM16 mono) as bytes."""
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(self.rate)
            w.writeframes(self.to_pcm())
        return buf.getvalue()

    def save(self, path: str | Path) -> Path:
        """Write the clip to ``path``; the suffix picks the format.

        ``.wav`` is PCM16; ``.flac``, ``.mp3``, ``.ogg``/``.opus`` (Opus) and ``.webm`` (Opus) are
        encoded with PyAV by :func:`nbtoolkit.audio.encode.encode`.
        """
        from nbtoolkit.audio.encode import encode, format_for_suffix  # PyAV, only when saving

        p = Path(path)
        fmt = format_for_suffix(p.suffix)
        p.write_bytes(self.to_wav() if fmt == "wav" else encode(self, fmt))
        return p
