"""The offline engine: real VAD, ASR, TTS and a deterministic responder, from PyPI wheels only.

* VAD — webrtcvad (:mod:`.vad`)
* ASR — pocketsphinx 5 with a run-time domain grammar plus the generic en-us LM (:mod:`.asr`)
* TTS — eSpeak NG from the ``espeakng-loader`` wheel through ctypes (:mod:`.tts`)
* answers — :mod:`.responder` (rules), :mod:`.describe` (audio/image facts)
* token counts — :mod:`.usage` (a documented rule)

``Engine()`` is cheap: models load on first use (or all at once with :meth:`Engine.load`). Every
method may be called from many threads at once: each pocketsphinx decoder has a lock, eSpeak has
one process-wide lock, and a :class:`VadStream` is per stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nbtoolkit.local.engine.asr import AsrResult, Mode, Recognizer
from nbtoolkit.local.engine.responder import EngineReply, Responder
from nbtoolkit.local.engine.tts import Tts
from nbtoolkit.local.engine.vad import VadEvent, VadStream

__all__ = ["AsrResult", "Engine", "EngineReply", "VadEvent", "VadStream"]


class Engine:
    """Offline speech engine.

    ``asr`` chooses the recognizer: ``"auto"`` (domain grammar, falling back to open vocabulary when
    the grammar does not fit — see :mod:`nbtoolkit.local.engine.asr`), ``"domain"`` or ``"open"``.
    """

    def __init__(self, asr: Mode = "auto", *, grammar: str | None = None) -> None:
        self.recognizer = Recognizer(asr, grammar=grammar)
        # pocketsphinx's open search when Whisper wrote the words: the responder's test of whether
        # speech was English at all, made when first needed
        self._english_check: Recognizer | None = None
        self.tts = Tts()
        self.responder = Responder(self._recognize_clip, self._check_clip)

    @property
    def asr_mode(self) -> str:
        return self.recognizer.mode

    @property
    def summary(self) -> str:
        """What the engine hears and speaks with, for people: "ASR: pocketsphinx grammar + Whisper
        base; TTS: eSpeak NG" (loads nothing)."""
        whisper = self.recognizer.whisper
        ears = f"Whisper {whisper.name}" if whisper is not None else "pocketsphinx's open LM"
        return f"ASR: pocketsphinx grammar + {ears}; TTS: eSpeak NG"

    def load(self) -> Engine:
        """Load every model now (ASR decoders, eSpeak) instead of on first use."""
        self.recognizer.load()
        self.tts.load()
        return self

    # ------------------------------------------------------------------ speech
    def transcribe(self, pcm: np.ndarray, rate: int = 16000) -> str:
        """Lower-case words heard in int16 mono ``pcm`` at ``rate`` Hz; "" when there is no speech."""
        return self.recognizer.transcribe(pcm, rate)

    def recognize(self, pcm: np.ndarray, rate: int = 16000, mode: Mode | None = None) -> AsrResult:
        """Like :meth:`transcribe`, with which search produced the words and its confidence."""
        return self.recognizer.recognize(pcm, rate, mode)

    def synthesize(self, text: str, rate: int = 24000, lang: str | None = None) -> np.ndarray:
        """``text`` spoken by eSpeak NG as int16 mono at ``rate`` Hz (Mandarin voice for CJK text)."""
        return self.tts.synthesize(text, rate, lang)

    def vad(
        self,
        threshold: float = 0.5,
        prefix_padding_ms: int = 300,
        silence_duration_ms: int = 800,
        rate: int = 16000,
        *,
        pauses: bool = False,
    ) -> VadStream:
        """A new VAD stream (one per audio stream); ``pauses`` adds ``speech_paused`` hints."""
        return VadStream(threshold, prefix_padding_ms, silence_duration_ms, rate, pauses=pauses)

    # ------------------------------------------------------------------ answers
    def respond(
        self,
        text: str = "",
        *,
        audio: Any = None,
        images: Sequence[bytes] = (),
        history: Sequence[tuple[str, str]] = (),
        context: str = "",
        spoken: bool = False,
        heard: AsrResult | None = None,
    ) -> EngineReply:
        """The engine's answer to one turn (rules in :mod:`nbtoolkit.local.engine.responder`), in
        the language of the question (``context``, e.g. Omni instructions, and ``history`` pick it
        when the turn has no words of its own; ``spoken``: ``text`` is the transcript of ``audio``;
        ``heard``: the recognition that transcript came from, when the caller has it)."""
        return self.responder.respond(
            text,
            audio=audio,
            images=images,
            history=history,
            context=context,
            spoken=spoken,
            heard=heard,
        )

    def _recognize_clip(self, clip: Any) -> AsrResult:
        return self.recognizer.recognize(clip.samples, clip.rate)

    def _check_clip(self, clip: Any) -> AsrResult:
        if self._english_check is None:  # two threads may both make one: harmless
            self._english_check = Recognizer("open", tier="pocketsphinx")
        return self._english_check.recognize(clip.samples, clip.rate)
