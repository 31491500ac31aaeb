"""Audio: the :class:`Clip` value object, decoding and encoding (PyAV), resampling (soxr), features."""

from nbtoolkit.audio.clip import Clip
from nbtoolkit.audio.decode import decode
from nbtoolkit.audio.encode import encode

__all__ = ["Clip", "decode", "encode"]
