"""Decode any container/codec FFmpeg knows (via PyAV) into a Clip at the file's own rate.

Checks made so that a bad input fails here, with the fix, rather than later as silence or noise:
size (:data:`MAX_FILE_BYTES`), length once decoded (:data:`MAX_SECONDS`), "not audio at all"
(text, images), damage part-way through, and truncation against the length the header declares
(WAV, WebM/Matroska, FLAC, MP3 with a Xing/Info/VBRI header; Ogg and browser WebM declare none).
"""

from __future__ import annotations

import io
import wave
from itertools import chain
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np

from nbtoolkit.audio.clip import Clip
from nbtoolkit.errors import AudioError

__all__ = ["MAX_FILE_BYTES", "MAX_SECONDS", "decode"]

#: Refuse encoded inputs larger than this; nothing in a notebook needs more.
MAX_FILE_BYTES = 512 * 1024 * 1024
#: Refuse audio that decodes to more than this many seconds (4 h; ~0.5 GB of int16 at 16 kHz).
MAX_SECONDS = 4 * 3600.0

#: A decoded length this much shorter than the header declares means the file was cut off.
_TRUNCATION_TOLERANCE_S = 0.25
_ACCEPTED = "WAV, MP3, FLAC, OGG or WebM"


def _too_big(name: str, size: int, limit: int) -> AudioError:
    return AudioError(
        f"{name} is {size / 2**20:.1f} MiB, over the {limit / 2**20:.1f} MiB limit",
        "cut it first (e.g. ffmpeg -i in.wav -t 600 out.wav), or pass max_bytes= to "
        "nbtoolkit.audio.decode()",
    )


def _read_source(source: Any, max_bytes: int) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = f"The audio data ({len(data)} bytes)"
        if len(data) > max_bytes:
            raise _too_big(name, len(data), max_bytes)
        return data, name
    if hasattr(source, "read"):
        data = source.read(max_bytes + 1)
        if not isinstance(data, bytes):
            raise AudioError(
                "The file object gave text, not bytes", "open the file in binary mode ('rb')"
            )
        name = f"The file object {getattr(source, 'name', '')!s}".rstrip()
        if len(data) > max_bytes:
            raise _too_big(name, len(data), max_bytes)
        return data, name
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
        if size > max_bytes:
            raise _too_big(str(p), size, max_bytes)
        return p.read_bytes(), str(p)
    if isinstance(source, np.ndarray):
        raise AudioError(
            "A numpy array has no sample rate of its own",
            "use Clip.from_array(samples, rate)",
        )
    raise AudioError(
        f"Cannot load audio from a {type(source).__name__}",
        "pass a path, file:// URL, bytes, numpy array (Clip.from_array) or Clip",
    )


def _not_audio(name: str, data: bytes, detail: str) -> AudioError:
    # text has no control bytes besides whitespace; binary formats all have them in their header
    looks_like_text = all(c >= 32 or c in b"\t\r\n" for c in data[:512])
    what = (
        "looks like text, not audio"
        if looks_like_text
        else f"is not audio FFmpeg can read ({detail})"
    )
    return AudioError(
        f"{name} {what}",
        f"pass a {_ACCEPTED} file; for raw 16-bit PCM use Clip.from_pcm(data, rate)",
    )


def _wav_header_seconds(data: bytes) -> float | None:
    """Length the RIFF header declares, or None when it declares none (streamed WAV) or isn't PCM."""
    try:
        with wave.open(io.BytesIO(data)) as w:
            frames, rate = w.getnframes(), w.getframerate()
            frame_bytes = w.getsampwidth() * w.getnchannels()
    except (wave.Error, EOFError):
        return None
    # streaming writers leave 0 or 0xFFFFFFFF as a placeholder for "unknown"
    if frames == 0 or rate == 0 or frames * frame_bytes >= 0xFFFF0000:
        return None
    return frames / rate


def _declared_seconds(container: Any, data: bytes) -> float | None:
    fmt = container.format.name
    if fmt == "wav":
        return _wav_header_seconds(data)
    # only these formats store an exact length; elsewhere FFmpeg estimates it from the file size
    exact = fmt in ("matroska,webm", "flac") or (
        fmt == "mp3" and any(tag in data[:65536] for tag in (b"Xing", b"Info", b"VBRI"))
    )
    return container.duration / 1e6 if exact and container.duration else None


def _truncated(name: str, got: float, expected: float | None, why: str) -> AudioError:
    said = f" of the {expected:.2f} s its header declares" if expected else ""
    return AudioError(
        f"{name} is cut off or damaged: only {got:.2f} s{said} could be decoded ({why})",
        "re-record or re-download it; or pass allow_truncated=True to keep the part that decodes",
    )


def decode(
    source: Any,
    *,
    allow_truncated: bool = False,
    max_bytes: int | None = None,
    max_seconds: float | None = None,
    first_seconds: float | None = None,
) -> Clip:
    """Decode a file, ``file://`` URL, binary file object or encoded bytes to a mono int16 Clip.

    The Clip keeps the file's own sample rate (resample with :meth:`Clip.resample`); channels are
    mixed down to mono. WebM/Opus blobs as browsers' MediaRecorder (and ipywebrtc) write them,
    without a duration in the header, decode like any other file.

    A file that stops decoding part-way, or that decodes to less than the length its header declares,
    raises :class:`~nbtoolkit.errors.AudioError`; ``allow_truncated=True`` returns the part that
    decodes instead. Inputs over ``max_bytes`` (default :data:`MAX_FILE_BYTES`) or decoding to more
    than ``max_seconds`` (default :data:`MAX_SECONDS`) are refused. Every other problem raises
    AudioError too, naming the fix.

    ``first_seconds`` keeps only the head of the audio: decoding stops there, so a long file costs
    the time and memory of its first seconds only (a 10 MB Opus file holds about 40 min; its whole
    decode at 48 kHz would be ≈ 0.5 GB of floats). The length checks then apply to that head.
    """
    import av

    max_bytes = MAX_FILE_BYTES if max_bytes is None else max_bytes
    max_seconds = MAX_SECONDS if max_seconds is None else max_seconds
    if first_seconds is not None and first_seconds <= 0:
        raise ValueError(f"first_seconds must be positive, not {first_seconds!r}")
    data, name = _read_source(source, max_bytes)
    if not data:
        raise AudioError(f"{name} is empty (0 bytes)", "record or choose a file with sound in it")
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.error.FFmpegError, ValueError, EOFError) as exc:
        raise _not_audio(name, data, str(exc)) from None
    parts: list[np.ndarray] = []
    rate = 0
    failure = ""
    with container:
        if not container.streams.audio:
            kinds: list[str] = sorted({s.type for s in container.streams}) or ["nothing"]
            raise AudioError(
                f"{name} holds no audio stream ({container.format.name}: {', '.join(kinds)})",
                f"choose an audio file ({_ACCEPTED}…)",
            )
        stream = container.streams.audio[0]
        declared = _declared_seconds(container, data)
        # keep the channels and average them below, as Clip.from_array mixes arrays (FFmpeg's own
        # downmix scales each channel by 1/√2, so the two would disagree)
        resampler = av.AudioResampler(format="fltp", rate=stream.rate or None)
        total = 0
        parts_converted = False  # once the converter holds samples, every frame must go through it
        enough = False
        try:
            for frame in chain(container.decode(stream), [None]):
                if enough:
                    break
                # Opus, AAC, MP3 and Vorbis decoders already give planar float: skip the converter
                if frame is not None and frame.format.name == "fltp" and not parts_converted:
                    outs = [frame]
                else:
                    outs = resampler.resample(frame)
                    parts_converted = True
                for out in outs:
                    rate = out.sample_rate
                    total += out.samples
                    if total > max_seconds * rate:
                        raise AudioError(
                            f"{name} decodes to more than {max_seconds:g} s of audio",
                            "cut it into parts (e.g. ffmpeg -ss/-t), or pass max_seconds= to "
                            "nbtoolkit.audio.decode()",
                        )
                    parts.append(out.to_ndarray())
                    if first_seconds is not None and total >= first_seconds * rate:
                        enough = True
        except (av.error.FFmpegError, ValueError, EOFError) as exc:
            failure = f"{type(exc).__name__}: {exc}"
    got = sum(p.shape[-1] for p in parts) / rate if rate else 0.0
    if not parts or got == 0:
        if failure:
            raise _not_audio(name, data, failure)
        raise AudioError(f"{name} decoded to no samples", "the file holds no sound; record again")
    if not allow_truncated:
        if failure:
            raise _truncated(name, got, declared, failure)
        if declared and not enough and got < declared - _TRUNCATION_TOLERANCE_S:
            raise _truncated(name, got, declared, "the rest of the file is missing")
    samples = np.concatenate(parts, axis=-1).mean(axis=0, dtype=np.float32)
    if first_seconds is not None:
        samples = samples[: round(first_seconds * rate)]
    if not np.all(np.isfinite(samples)):
        raise AudioError(f"{name} decoded to NaN/inf samples", "re-encode the file")
    # decoders may overshoot full scale slightly (MP3, float WAV); that is loud audio, not an error
    return Clip.from_array(np.clip(samples, -1.0, 1.0), rate)
