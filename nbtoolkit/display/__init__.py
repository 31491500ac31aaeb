"""Rich display: waveform, spectrogram, usage and timeline plots (matplotlib, imported lazily) and players.

Importing this package does not import matplotlib; only the ``plot_*`` functions do.
"""

from nbtoolkit.display.player import EMBED_RATE, MAX_EMBED_SECONDS, InlinePlayer, play
from nbtoolkit.display.spectrogram import plot_spectrogram
from nbtoolkit.display.timeline import plot_timeline
from nbtoolkit.display.usage import plot_usage
from nbtoolkit.display.waveform import plot_waveform, waveform_svg

__all__ = [
    "EMBED_RATE",
    "MAX_EMBED_SECONDS",
    "InlinePlayer",
    "play",
    "plot_spectrogram",
    "plot_timeline",
    "plot_usage",
    "plot_waveform",
    "waveform_svg",
]
