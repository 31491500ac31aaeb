"""Decode any container/codec FFmpeg knows (via PyAV) into a Clip."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np

from nbtoolkit.audio.clip import Clip
from nbtoolkit.errors import AudioError

__all__ = ["MAX_FILE_BYTES", "decode"]

#: Refuse to decode inputs larger than this; nothing in a notebook needs more.
MAX_FILE_BYTES = 512 * 1024 * 1024


def _read_source(source: Any) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "the given bytes"
    if isinstance(source, str) and source.startswith("file://"):
        source = unquote(urlparse(source).path)
    if isinstance(source, str) and "://" in source:
        raise AudioError(
            f"Cannot load {source!r}: only local files and file:// URLs are read here",
            "download the file first, or pass the URL straight to a backend",
        )
    if isinstance(source, (str, Path)):
        p = Path(source).expanduser()
        if not p.is_file():
            raise AudioError(
                f"No audio file at {p}",
                "check the path (relative paths start from the notebook's folder)",
            )
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise AudioError(
                f"{p} is {size / 1e6:.0f} MB, over the {MAX_FILE_BYTES // 2**20} MiB limit",
                "cut the file first (e.g. with ffmpeg -t)",
            )
        return p.read_bytes(), str(p)
    raise AudioError(
        f"Cannot load audio from a {type(source).__name__}",
        "pass a path, file:// URL, bytes, numpy array (Clip.from_array) or Clip",
    )


def decode(source: Any) -> Clip:
    """Decode a file, ``file://`` URL or encoded bytes to a mono int16 Clip at the file's own rate."""
    import av

    data, name = _read_source(source)
    if not data:
        raise AudioError(f"{name} is empty (0 bytes)", "record or choose a file with sound in it")
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            streams = [s for s in container.streams if s.type == "audio"]
            if not streams:
                raise AudioError(
                    f"{name} has no audio stream",
                    "choose an audio file (WAV, MP3, FLAC, OGG, WebM…)",
                )
            stream = streams[0]
            rate_in = getattr(stream, "rate", None) or None
            resampler = av.AudioResampler(format="fltp", layout="mono", rate=rate_in)
            parts: list[np.ndarray] = []
            rate = 0
            for frame in container.decode(stream):
                if not isinstance(frame, av.AudioFrame):
                    continue
                for out in resampler.resample(frame):
                    rate = out.sample_rate
                    parts.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                rate = out.sample_rate
                parts.append(out.to_ndarray().reshape(-1))
    except AudioError:
        raise
    except (av.error.FFmpegError, ValueError, EOFError) as exc:
        raise AudioError(
            f"{name} could not be decoded as audio ({type(exc).__name__}: {exc})",
            "check that it is a complete WAV/MP3/FLAC/OGG/WebM file",
        ) from None
    if not parts or sum(p.size for p in parts) == 0:
        raise AudioError(f"{name} decoded to no samples", "the file holds no sound; record again")
    samples = np.concatenate(parts)
    if not np.all(np.isfinite(samples)):
        raise AudioError(f"{name} decoded to NaN/inf samples", "re-encode the file")
    return Clip.from_array(np.clip(samples, -1.0, 1.0), rate)
