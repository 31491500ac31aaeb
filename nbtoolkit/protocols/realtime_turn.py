"""The client's half of the Qwen-Omni realtime protocol (sans-I/O): folding server events into a turn.

Used by :class:`nbtoolkit.backends.omni.OmniRealtime` and the voice chat's Omni bridge; the local
server never needs it.
"""

from __future__ import annotations

from typing import Any

from nbtoolkit.protocols.realtime import (
    AudioDelta,
    AudioTranscriptDelta,
    AudioTranscriptDone,
    InputAudioCommitted,
    InputTranscriptionCompleted,
    RealtimeEvent,
    ResponseCreated,
    ResponseDone,
    TextDelta,
    TextDone,
)

__all__ = ["RealtimeTurnCollector"]


class RealtimeTurnCollector:
    """Folds the server events of one exchange into what was heard and answered.

    Feed every server event; the first ``response.created`` fixes which response is collected.
    ``done`` turns true on that response's ``response.done``.
    """

    def __init__(self) -> None:
        self.heard = ""
        self.input_item_id: str | None = None
        self.response_id: str | None = None
        self.status: str | None = None
        self.usage: dict[str, Any] | None = None
        self.audio = bytearray()
        self._text: list[str] = []
        self._final_text: str | None = None

    @property
    def text(self) -> str:
        return self._final_text if self._final_text is not None else "".join(self._text)

    @property
    def done(self) -> bool:
        return self.status is not None

    @property
    def started(self) -> bool:
        return self.response_id is not None

    def _mine(self, response_id: str) -> bool:
        return self.response_id is not None and response_id == self.response_id

    def feed(self, event: RealtimeEvent) -> None:
        if isinstance(event, InputAudioCommitted) and self.response_id is None:
            self.input_item_id = event.item_id
        elif isinstance(event, InputTranscriptionCompleted):
            if self.input_item_id in (None, event.item_id):
                self.heard = event.transcript
        elif isinstance(event, ResponseCreated) and self.response_id is None:
            self.response_id = str(event.response.get("id") or "")
        elif isinstance(event, (AudioTranscriptDelta, TextDelta)) and self._mine(event.response_id):
            self._text.append(event.delta)
        elif isinstance(event, AudioTranscriptDone) and self._mine(event.response_id):
            self._final_text = event.transcript
        elif isinstance(event, TextDone) and self._mine(event.response_id):
            self._final_text = event.text
        elif isinstance(event, AudioDelta) and self._mine(event.response_id):
            self.audio += event.pcm
        elif isinstance(event, ResponseDone) and self._mine(event.response_id):
            self.status = event.status or "completed"
            self.usage = event.response.get("usage") or None
