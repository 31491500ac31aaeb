"""Audio: the :class:`Clip` value object, decoding, resampling and features."""

from nbtoolkit.audio.clip import Clip
from nbtoolkit.audio.decode import decode

__all__ = ["Clip", "decode"]
