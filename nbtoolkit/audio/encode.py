"""Encode a Clip to WAV, FLAC, MP3, Ogg/Opus or WebM/Opus bytes with PyAV.

Useful for saving, for sending compressed audio, and for tests that need what a browser or a
phone would hand over (``encode(clip, "webm", live=True)`` writes WebM/Opus the way a browser's
MediaRecorder does: 48 kHz, no duration and no cues in the header).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import cast

from nbtoolkit.audio.clip import Clip
from nbtoolkit.errors import AudioError

__all__ = ["FORMATS", "encode", "format_for_suffix"]


@dataclass(frozen=True)
class _Spec:
    container: str
    codec: str
    rates: tuple[int, ...]  # empty: any rate the clip has
    bitrate: int | None


_SPECS = {
    "flac": _Spec("flac", "flac", (), None),
    # Opus runs at 48 kHz inside; browsers record at 48 kHz too
    "ogg": _Spec("ogg", "libopus", (48000,), 32000),
    "webm": _Spec("webm", "libopus", (48000,), 32000),
    "mp3": _Spec(
        "mp3",
        "libmp3lame",
        (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000),
        64000,
    ),
}
#: Formats :func:`encode` writes.
FORMATS = ("wav", *_SPECS)
_SUFFIXES = {
    ".wav": "wav",
    ".flac": "flac",
    ".mp3": "mp3",
    ".ogg": "ogg",
    ".opus": "ogg",
    ".webm": "webm",
}


def format_for_suffix(suffix: str) -> str:
    """The :data:`FORMATS` entry a file suffix such as ``".mp3"`` stands for."""
    fmt = _SUFFIXES.get(suffix.lower())
    if fmt is None:
        raise AudioError(
            f"Cannot write audio as {suffix or 'a file without a suffix'!r}",
            f"use one of {', '.join(_SUFFIXES)}",
        )
    return fmt


def _encode_rate(rate: int, allowed: tuple[int, ...]) -> int:
    if not allowed or rate in allowed:
        return rate
    # the smallest allowed rate that keeps every frequency the clip has, else the largest
    return min((r for r in allowed if r >= rate), default=max(allowed))


def encode(
    clip: Clip, fmt: str = "webm", *, bitrate: int | None = None, live: bool = False
) -> bytes:
    """``clip`` encoded as ``fmt`` (one of :data:`FORMATS`), as bytes.

    The clip is resampled (soxr) to a rate the codec supports where needed: 48 kHz for Opus, the
    nearest MP3 rate at or above the clip's. ``bitrate`` is in bit/s (Opus 32 k and MP3 64 k by
    default). ``live=True`` (WebM only) leaves duration and cues out of the header, as browsers do.
    """
    import av
    import numpy as np

    if fmt == "wav":
        return clip.to_wav()
    spec = _SPECS.get(fmt)
    if spec is None:
        raise AudioError(f"Cannot encode audio as {fmt!r}", f"choose one of {', '.join(FORMATS)}")
    if live and fmt != "webm":
        raise AudioError("live=True applies to WebM only", "drop live=True or use fmt='webm'")
    if not len(clip):
        raise AudioError("The clip is empty (0 samples)", "encode a clip with sound in it")
    clip = clip.resample(_encode_rate(clip.rate, spec.rates))
    buf = io.BytesIO()
    with av.open(buf, "w", format=spec.container, options={"live": "1"} if live else {}) as out:
        stream = cast("av.audio.stream.AudioStream", out.add_stream(spec.codec, rate=clip.rate))
        stream.layout = "mono"
        chosen = bitrate or spec.bitrate
        if chosen:
            stream.bit_rate = chosen
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(clip.to_float()[None, :]), format="flt", layout="mono"
        )
        frame.sample_rate = clip.rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()
