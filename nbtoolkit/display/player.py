"""Inline players: a waveform plus an HTML ``<audio>`` element, with a bounded embedded size."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

import numpy as np

from nbtoolkit.audio.clip import Clip
from nbtoolkit.display.waveform import waveform_svg
from nbtoolkit.errors import AudioError

__all__ = ["EMBED_RATE", "MAX_EMBED_SECONDS", "InlinePlayer", "play"]

#: A player embeds at most this many seconds, so a long clip never puts megabytes into the notebook.
MAX_EMBED_SECONDS = 30.0
#: Embedded audio is downsampled to this rate (mono WAV): 30 s is then ≤ 960 kB, ≤ 1.3 MB as base64.
EMBED_RATE = 16000


def _human_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.3g} s"
    total = round(seconds)
    if total < 3600:
        m, s = divmod(total, 60)
        return f"{m} min {s} s" if s else f"{m} min"
    h, rest = divmod(total, 3600)
    m = rest // 60
    return f"{h} h {m} min" if m else f"{h} h"


class InlinePlayer:
    """A clip shown inline as a waveform (whole clip) and an ``<audio>`` player (bounded).

    The player embeds at most the first ``max_seconds`` (default :data:`MAX_EMBED_SECONDS`),
    downsampled to :data:`EMBED_RATE` Hz mono WAV when the clip's rate is higher, and says
    "(first 30 s of 5 min)" when it cuts. Needs numpy only, not matplotlib.
    """

    def __init__(self, clip: Clip, *, max_seconds: float = MAX_EMBED_SECONDS) -> None:
        if not max_seconds > 0:
            raise AudioError(f"max_seconds must be positive (got {max_seconds})", "use e.g. 30")
        self.clip = clip
        self.max_seconds = float(max_seconds)

    @property
    def cut(self) -> bool:
        """True when the clip is longer than what is embedded."""
        return self.clip.duration > self.max_seconds

    def embedded(self) -> Clip:
        """The audio the player embeds: the first ``max_seconds``, at most :data:`EMBED_RATE` Hz."""
        part = self.clip[: self.max_seconds] if self.cut else self.clip
        return part.resample(min(part.rate, EMBED_RATE))

    def __repr__(self) -> str:
        return f"InlinePlayer({self.clip!r})"

    def _repr_html_(self) -> str:
        clip = self.clip
        if not len(clip):
            return '<div class="nbtk-player"><em>empty clip (0 samples)</em></div>'
        level = "silent" if math.isinf(clip.dbfs) else f"{clip.dbfs:.1f} dBFS"
        info = f"{_human_duration(clip.duration)} · {clip.rate} Hz · {level}"
        if self.cut:
            info += (
                f" · (first {_human_duration(self.max_seconds)} of "
                f"{_human_duration(clip.duration)})"
            )
        wav = base64.b64encode(self.embedded().to_wav()).decode("ascii")
        return (
            '<div class="nbtk-player" style="display:inline-block;font:12px sans-serif;color:#444">'
            f"{waveform_svg(clip)}"
            f'<div style="margin:2px 0">{html.escape(info)}</div>'
            f'<audio controls preload="metadata" src="data:audio/wav;base64,{wav}"></audio>'
            "</div>"
        )


def play(
    audio: Clip | bytes | bytearray | memoryview | np.ndarray | str | Path,
    rate: int | None = None,
    *,
    max_seconds: float = MAX_EMBED_SECONDS,
) -> InlinePlayer:
    """An inline player for a Clip, encoded audio (WAV/MP3/… bytes or a path), or raw samples.

    Raw PCM16 bytes and numpy arrays need ``rate``; encoded files carry their own, so ``rate`` must
    be left out for them and for a Clip. See :class:`InlinePlayer` for the size bound.
    """
    clip: Clip
    if isinstance(audio, Clip):
        if rate is not None:
            raise AudioError("A Clip has its own rate", "drop rate=, or use clip.resample(rate)")
        clip = audio
    elif isinstance(audio, np.ndarray):
        if rate is None:
            raise AudioError(
                "A numpy array needs a sample rate", "pass rate=, e.g. play(x, rate=16000)"
            )
        clip = Clip.from_array(audio, rate)
    elif isinstance(audio, (bytes, bytearray, memoryview)) and rate is not None:
        clip = Clip.from_pcm(audio, rate)
    else:
        clip = _load_encoded(audio)
    return InlinePlayer(clip, max_seconds=max_seconds)


def _load_encoded(audio: Any) -> Clip:
    try:
        return Clip.load(audio)
    except AudioError as err:
        if not isinstance(audio, (bytes, bytearray, memoryview)):
            raise
        raise AudioError(
            err.problem, f"{err.fix}; if these are raw PCM16 samples, pass rate= (e.g. rate=16000)"
        ) from None
