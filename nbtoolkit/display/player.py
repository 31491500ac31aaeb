"""Inline players: a waveform plus an HTML ``<audio>`` element, with a bounded embedded size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nbtoolkit.audio.clip import Clip
from nbtoolkit.audio.inline import EMBED_RATE, MAX_EMBED_SECONDS, clip_html, embedded
from nbtoolkit.errors import AudioError

__all__ = ["EMBED_RATE", "MAX_EMBED_SECONDS", "InlinePlayer", "play"]


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
        return embedded(self.clip, self.max_seconds)

    def __repr__(self) -> str:
        return f"InlinePlayer({self.clip!r})"

    def _repr_html_(self) -> str:
        return clip_html(self.clip, self.max_seconds)


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
