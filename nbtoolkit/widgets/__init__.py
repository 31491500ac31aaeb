"""Jupyter widgets: the streaming :class:`Recorder` and the gapless :class:`Player` (anywidget).

They import nothing from ``nbtoolkit.backends``; ``nbtoolkit.voice_chat`` joins them to a backend.
"""

from nbtoolkit.widgets.player import Player
from nbtoolkit.widgets.recorder import Recorder, clip_from_ipywebrtc, is_headless

__all__ = ["Player", "Recorder", "clip_from_ipywebrtc", "is_headless"]
