"""Waveforms: a matplotlib plot and a dependency-free inline SVG, both from the min/max envelope."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from nbtoolkit.audio.clip import Clip
from nbtoolkit.audio.features import envelope
from nbtoolkit.audio.inline import WAVEFORM_COLOR, waveform_svg
from nbtoolkit.errors import AudioError

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["axes_or_new", "plot_waveform", "waveform_svg"]


def axes_or_new(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    """``ax``, or the Axes of a new pyplot figure (matplotlib is imported only here, when needed)."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, new = plt.subplots(figsize=figsize, layout="constrained")
    return new


def plot_waveform(
    clip: Clip, ax: Axes | None = None, width_px: int | None = None, *, color: str = WAVEFORM_COLOR
) -> Axes:
    """Plot the clip's waveform and return the matplotlib Axes.

    Draws the min/max envelope of one slice of samples per pixel column (``width_px``, by default
    the Axes' width in pixels), never a point per sample: an hour at 16 kHz takes about as long as
    one numpy pass over the samples. Makes a new figure when ``ax`` is None.
    """
    if not isinstance(clip, Clip):
        raise AudioError(
            f"plot_waveform() draws a Clip, not a {type(clip).__name__}",
            "make one first: Clip.load(path) or Clip.from_array(samples, rate)",
        )
    ax = axes_or_new(ax, (10, 2.2))
    columns = width_px or max(1, round(ax.bbox.width))
    mins, maxs = envelope(clip, columns)
    t = (np.arange(mins.size) + 0.5) * (clip.duration / max(1, mins.size))
    # the edge line keeps flat stretches (silence, min == max) visible
    ax.fill_between(t, mins / 32768.0, maxs / 32768.0, color=color, edgecolor=color, linewidth=0.6)
    ax.set_xlim(0, clip.duration)
    ax.set_ylim(-1, 1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("amplitude")
    return ax
