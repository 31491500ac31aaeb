"""The offline engine (placeholder until vad/asr/tts/responder land)."""

from __future__ import annotations

from typing import Any


class Engine:
    """Offline speech engine."""

    def __init__(self, **kwargs: Any) -> None:
        self.options = kwargs

    def transcribe(self, pcm: Any, rate: int = 16000) -> str:
        raise NotImplementedError("the offline ASR is being built (issue 3)")
