"""Rich display of audio: waveform and spectrogram plots (matplotlib, imported lazily) and players.

Importing this package does not import matplotlib; only the ``plot_*`` functions do.
"""

from nbtoolkit.display.player import EMBED_RATE, MAX_EMBED_SECONDS, Player, play
from nbtoolkit.display.spectrogram import plot_spectrogram
from nbtoolkit.display.waveform import plot_waveform, waveform_svg

__all__ = [
    "EMBED_RATE",
    "MAX_EMBED_SECONDS",
    "Player",
    "play",
    "plot_spectrogram",
    "plot_waveform",
    "waveform_svg",
]
