"""Spectrogram plot (matplotlib) of a Clip, from the bounded numpy STFT in audio.features."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbtoolkit.audio.clip import Clip
from nbtoolkit.audio.features import spectrogram
from nbtoolkit.display.waveform import axes_or_new

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_spectrogram"]


def plot_spectrogram(
    clip: Clip,
    ax: Axes | None = None,
    *,
    max_columns: int = 800,
    dynamic_range_db: float = 80.0,
    cmap: str = "magma",
) -> Axes:
    """Plot the clip's spectrogram (dB, 0 = full-scale sine) and return the matplotlib Axes.

    At most ``max_columns`` STFT frames are computed, so hour-long clips plot as fast as short ones;
    the colour scale spans ``dynamic_range_db`` below the loudest cell. Makes a new figure when
    ``ax`` is None.
    """
    ax = axes_or_new(ax, (10, 3))
    spec = spectrogram(clip, max_columns=max_columns)
    top = float(spec.db.max())
    image = ax.imshow(
        spec.db,
        origin="lower",
        aspect="auto",
        extent=(0.0, clip.duration, 0.0, clip.rate / 2),
        cmap=cmap,
        vmin=top - dynamic_range_db,
        vmax=top,
        interpolation="nearest",
    )
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (Hz)")
    ax.figure.colorbar(image, ax=ax, label="dB")
    return ax
