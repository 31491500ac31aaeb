"""Helpers for demos and notebooks: a spoken question without a microphone, and the words of an
answer to check.

    question = nbtoolkit.spoken("what is two plus two")     # a Clip, spoken by the offline TTS
    reply = client.ask(question)
    assert "four" in nbtoolkit.words(reply.text)

The voice is eSpeak NG from the offline engine (no key, no network): robotic, but every recogniser
understands it, so a notebook runs the same in a browser and headless in CI.
"""

from __future__ import annotations

import threading

from nbtoolkit.audio.clip import Clip
from nbtoolkit.errors import ConfigError
from nbtoolkit.local.engine import Engine
from nbtoolkit.text import tokens

__all__ = ["spoken", "words"]

_lock = threading.Lock()
_engine: Engine | None = None

#: Silence around a spoken question, as a person leaves it: before, and after (long enough for a
#: server's voice detector to hear the end of speech).
LEAD_SECONDS = 0.3
TAIL_SECONDS = 1.5


def _tts() -> Engine:
    global _engine
    with _lock:
        if _engine is None:
            _engine = Engine()
        return _engine


def spoken(text: str, *, rate: int = 16000, pause: bool = True, lang: str | None = None) -> Clip:
    """``text`` spoken by the offline engine's eSpeak NG voice (Mandarin for Chinese text).

    ``pause`` puts 0.3 s of silence before the speech and 1.5 s after it, as a person leaves;
    ``lang`` forces a voice ("en" or "zh").
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"spoken() needs some text, not {text!r}", 'e.g. spoken("hello")')
    speech = Clip.from_array(_tts().synthesize(text, rate=rate, lang=lang), rate)
    if not pause:
        return speech
    return Clip.silence(LEAD_SECONDS, rate) + speech + Clip.silence(TAIL_SECONDS, rate)


def words(text: str) -> list[str]:
    """The words of ``text``, normalised for comparison: lower case, no punctuation (a Chinese
    character is a word of its own)."""
    return tokens(text)
