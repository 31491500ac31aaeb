"""Jupyter widgets: the streaming :class:`Recorder` and the gapless :class:`Player` (anywidget).

They import nothing from ``nbtoolkit.backends``; ``nbtoolkit.voice_chat`` joins them to a backend.
A Recorder tells its consumers about each take in one ordered channel (:meth:`Recorder.events`):
:class:`TakeStarted`, :class:`Chunk` s, :class:`TakeEnded`.
"""

from nbtoolkit.widgets.player import Player
from nbtoolkit.widgets.recorder import (
    Chunk,
    Recorder,
    RecorderEvent,
    TakeEnded,
    TakeEvents,
    TakeStarted,
    is_headless,
)

__all__ = [
    "Chunk",
    "Player",
    "Recorder",
    "RecorderEvent",
    "TakeEnded",
    "TakeEvents",
    "TakeStarted",
    "is_headless",
]
