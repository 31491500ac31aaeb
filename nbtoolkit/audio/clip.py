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


def _check_rate(rate: int) -> int:
    if not isinstance(rate, (int, np.integer)) or not (MIN_RATE <= int(rate) <= MAX_RATE):
        raise AudioError(
            f"Sample rate {rate!r} is not usable",
            f"give a whole number of Hz between {MIN_RATE} and {MAX_RATE} (speech is usually 16000)",
        )
    return int(rate)


@dataclass(frozen=True, eq=False)
class Clip:
    """Mono 16-bit PCM audio. Build one with :meth:`load`, :meth:`from_array` or :meth:`from_pcm`.

    The samples are a read-only ``int16`` numpy array, so a Clip can be shared safely between threads,
    widgets and backends.
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
        """From a numpy array: float (−1…1) or integer, mono ``(n,)`` or multi-channel ``(n, ch)``."""
        _check_rate(rate)
        arr = np.asarray(data)
        if arr.size == 0:
            raise AudioError("The audio is empty (0 samples)", "record or load some sound first")
        if arr.dtype.kind not in "fiub":
            raise AudioError(
                f"Array of dtype {arr.dtype} is not audio",
                "pass float samples in −1…1 or integer PCM",
            )
        if arr.ndim == 2:
            # channels are the shorter axis: (n, ch) or (ch, n)
            arr = arr.mean(axis=1 if arr.shape[1] <= arr.shape[0] else 0)
        elif arr.ndim != 1:
            raise AudioError(
                f"Array of shape {arr.shape} is not audio",
                "pass shape (samples,) or (samples, channels)",
            )
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)):
                raise AudioError(
                    "The audio contains NaN or infinite samples",
                    "clean the array (e.g. np.nan_to_num) before making a Clip",
                )
            pcm = np.clip(np.round(arr * 32767.0), -32768, 32767).astype(np.int16)
        elif arr.dtype == np.int16:
            pcm = arr.astype(np.int16)
        elif arr.dtype.kind == "b":
            raise AudioError("A boolean array is not audio", "pass float or integer samples")
        else:
            info = np.iinfo(arr.dtype)
            if arr.dtype.kind == "u":
                mid = (int(info.max) + 1) // 2
                scaled = (arr.astype(np.float64) - mid) / mid
            else:
                scaled = arr.astype(np.float64) / (int(info.max) + 1)
            pcm = np.clip(np.round(scaled * 32768.0), -32768, 32767).astype(np.int16)
        return cls(pcm, rate)

    @classmethod
    def from_pcm(cls, data: bytes | bytearray | memoryview, rate: int) -> Clip:
        """From raw little-endian signed 16-bit mono PCM bytes at ``rate`` Hz."""
        _check_rate(rate)
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
        """``seconds`` of digital silence."""
        return cls(np.zeros(max(1, round(seconds * rate)), dtype=np.int16), rate)

    @classmethod
    def load(cls, source: Any, rate: int | None = None) -> Clip:
        """From a path, ``file://`` URL, bytes of an encoded file (WAV/MP3/FLAC/OGG/WebM…), or a Clip.

        ``rate`` resamples the result. Decoding uses PyAV; see :mod:`nbtoolkit.audio.decode`.
        """
        from nbtoolkit.audio.decode import decode

        clip = source if isinstance(source, Clip) else decode(source)
        return clip.resample(rate) if rate else clip

    # ----------------------------------------------------------------- properties
    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.samples) / self.rate

    @property
    def nbytes(self) -> int:
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

    # ----------------------------------------------------------------- transforms
    def resample(self, rate: int) -> Clip:
        """The same sound at ``rate`` Hz (soxr, high quality)."""
        import soxr

        rate = _check_rate(rate)
        if rate == self.rate:
            return self
        out = soxr.resample(self.samples, self.rate, rate, quality="HQ")
        if out.size == 0:
            out = np.zeros(1, dtype=np.int16)
        return Clip(np.asarray(out, dtype=np.int16), rate)

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
        """Write a WAV file (other formats: encode with :func:`nbtoolkit.audio.decode.encode`)."""
        p = Path(path)
        p.write_bytes(self.to_wav())
        return p
