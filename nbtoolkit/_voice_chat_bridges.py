"""The bridges behind :class:`~nbtoolkit.voice_chat.VoiceChat`: one adapter per backend family.

A bridge turns the recorder's takes and chunks (handed over by the chat) into backend calls, and the
backend's events into :mod:`nbtoolkit.voice_chat_events` that it passes to ``emit`` (the chat
renders them). It never reads or calls the chat, and imports backends, never widgets (what each
family does is described in :mod:`nbtoolkit.voice_chat`). Every bridge method, and ``emit``, runs
on the chat's event loop; backend events from other threads (a Dialog's streams) hop there first.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from nbtoolkit import events as answer_events
from nbtoolkit.audio.clip import Clip
from nbtoolkit.backends.dialog import FRAME_INTERVAL, Dialog, DialogLive, to_jpeg
from nbtoolkit.backends.omni import OmniRealtime, Reconnected
from nbtoolkit.backends.qwen_audio import QwenAudio
from nbtoolkit.errors import ConfigError, ConnectionLost, ImageError, NbToolkitError, ProtocolError
from nbtoolkit.ledger import Ledger
from nbtoolkit.protocols.realtime import (
    MAX_IMAGE_BYTES,
    OUTPUT_RATE,
    AudioDelta,
    AudioTranscriptDelta,
    ErrorEvent,
    InputAudioCommitted,
    InputTranscriptionCompleted,
    RealtimeEvent,
    ResponseCreated,
    ResponseDone,
    SpeechStarted,
    SpeechStopped,
    TextDelta,
)
from nbtoolkit.protocols.realtime_turn import RealtimeTurnCollector
from nbtoolkit.results import Reply
from nbtoolkit.voice_chat_events import (
    LISTENING,
    RESPONDING,
    THINKING,
    Audio,
    ChatEvent,
    Failed,
    Flush,
    Heard,
    Mark,
    Said,
    State,
    TurnDone,
)

__all__ = ["FRAME_INTERVAL", "VISUAL_QUESTION", "Backend", "Bridge", "Emit", "bridge_for"]

# the chat's logger: one switch for the whole voice chat
log = logging.getLogger("nbtoolkit.voice_chat")

#: Dialog (SDK) states → the badge.
_DIALOG_STATES = {"Listening": LISTENING, "Thinking": THINKING, "Responding": RESPONDING}
#: What a Dialog without video is asked about a picture.
VISUAL_QUESTION = "What is in front of me?"

Backend = OmniRealtime | Dialog | QwenAudio
Emit = Callable[[ChatEvent], None]


class Bridge:
    """Joins one backend to a chat that renders what the bridge ``emit`` s. Every method runs on
    the chat's event loop."""

    notice = ""

    def __init__(self, emit: Emit) -> None:
        self.emit = emit

    @property
    def ledger(self) -> Ledger:
        raise NotImplementedError

    def mark(self, lane: str, name: str, **detail: Any) -> None:
        self.emit(Mark(lane, name, detail))

    async def open(self) -> None:
        """Connect the backend (if it is not connected yet)."""

    async def close(self) -> None:
        """Disconnect what :meth:`open` connected."""

    async def run(self) -> None:
        """Serve the session until cancelled."""
        raise NotImplementedError

    def take_started(self) -> None:
        """The recorder began a take."""

    def chunk(self, pcm: bytes) -> None:
        """16 kHz PCM16 from the current take."""

    def take_ended(self, take: Clip) -> None:
        """The recorder finished ``take`` (the whole of it)."""

    async def frame(self, image: Any) -> bool:
        """Show the backend a picture (see :meth:`VoiceChat.send_frame`)."""
        raise ConfigError(
            "This backend takes no pictures in a voice chat",
            "use an OmniRealtime or a Dialog for visual questions",
        )


def bridge_for(backend: Any, tts: bool, emit: Emit) -> Bridge:
    """The bridge that joins ``backend`` to a chat rendering ``emit`` (``tts``: QwenAudio only)."""
    if tts and not isinstance(backend, QwenAudio):
        raise ConfigError(
            f"tts=True is for QwenAudio; {type(backend).__name__} answers with its own voice",
            "drop tts=True",
        )
    if isinstance(backend, OmniRealtime):
        return _OmniBridge(emit, backend)
    if isinstance(backend, Dialog):
        if backend.mode == "push2talk":
            return _DialogBridge(emit, backend)
        return _DialogLiveBridge(emit, backend)
    if isinstance(backend, QwenAudio):
        return _QwenAudioBridge(emit, backend, tts)
    raise ConfigError(
        f"VoiceChat cannot talk to a {type(backend).__name__}",
        "pass an OmniRealtime, Dialog or QwenAudio",
    )


_COMMIT = object()


class _OmniBridge(Bridge):
    """Mic chunks → ``send_audio`` as they arrive; server events → chat events."""

    def __init__(self, emit: Emit, rt: OmniRealtime) -> None:
        super().__init__(emit)
        self.rt = rt
        self.vad = bool(rt.config.get("turn_detection"))
        self.speaks = "audio" in rt.config.get("modalities", ())
        self.notice = (
            "Qwen-Omni realtime · the server hears when you stop; speak over an answer to interrupt"
            if self.vad
            else "Qwen-Omni realtime · push to talk: record, stop, and the answer comes"
        )
        self.outbox: asyncio.Queue[Any] = asyncio.Queue()
        self.collector = RealtimeTurnCollector()
        self.answer = ""  # the response being (or last) answered: the label of its audio
        self.opened = False
        self.audio_sent = False  # images may only follow audio

    @property
    def ledger(self) -> Ledger:
        return self.rt.ledger

    async def open(self) -> None:
        if self.rt.session_id is None:
            await self.rt.connect()
            self.opened = True

    async def close(self) -> None:
        if self.opened:
            self.opened = False
            await self.rt.aclose()

    def take_started(self) -> None:
        if not self.vad:
            self.outbox.put_nowait(self._push_to_talk_barge_in)

    def chunk(self, pcm: bytes) -> None:
        self.audio_sent = True
        self.outbox.put_nowait(pcm)

    async def frame(self, image: Any) -> bool:
        if not self.audio_sent:
            raise ImageError(
                "A realtime session takes images only after some audio",
                "speak (or record) first, then send the frame",
            )
        jpeg = to_jpeg(image, MAX_IMAGE_BYTES)

        async def send() -> None:
            await self.rt.send_image(jpeg)

        self.outbox.put_nowait(send)  # in order with the audio around it
        return True

    def take_ended(self, take: Clip) -> None:
        if not self.vad:
            self.outbox.put_nowait(_COMMIT)

    async def _push_to_talk_barge_in(self) -> None:
        if await self.rt.cancel():
            self.mark("state", "barge_in", by="record")
        # an answer still streaming is dropped; one complete on the server only if still playing
        self.emit(Flush("record", self.answer, if_audible=not self.rt.response_active))

    async def run(self) -> None:
        reader = asyncio.create_task(self._read_loop(), name="voice-chat-read")
        sender = asyncio.create_task(self._send_loop(), name="voice-chat-send")
        try:
            done, _ = await asyncio.wait([reader, sender], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, sender):
                task.cancel()
            await asyncio.wait([reader, sender])
        for task in done:
            if (exc := task.exception()) is not None:
                raise exc
        raise ConnectionLost("The realtime session closed", "start the chat again")

    async def _read_loop(self) -> None:
        async for event in self.rt:
            self._on_event(event)

    async def _send_loop(self) -> None:
        while True:
            item = await self.outbox.get()
            if isinstance(item, bytes):
                await self.rt.send_audio(item)
            elif item is _COMMIT:
                self.mark("client", "commit")
                self.emit(State(THINKING))
                await self.rt.commit()
                await self.rt.create_response()
            else:
                await item()

    def _on_event(self, event: RealtimeEvent | Reconnected) -> None:
        emit = self.emit
        if isinstance(event, Reconnected):
            self.mark("state", "reconnected", close_code=event.close_code)
            return
        if isinstance(event, ErrorEvent):
            self.mark("server", "error", code=event.code)
            emit(
                Failed(
                    ProtocolError(
                        f"The realtime server refused this turn: {event.message} [{event.code}]",
                        "say it again; if it persists, check the session's settings",
                        code=event.code,
                    )
                )
            )
            return
        c = self.collector
        answering = c.started and not c.done
        c.feed(event)
        if isinstance(event, SpeechStarted):
            self.mark("vad", "speech_started")
            if answering:  # the client has cancelled that answer: the user spoke over it
                emit(Flush("barge_in", self.answer, by="server_vad"))
            else:  # the answer is complete on the server but the browser may still play it
                emit(Flush("barge_in", self.answer, by="player", if_audible=True))
            emit(State(LISTENING))
        elif isinstance(event, SpeechStopped):
            self.mark("vad", "speech_stopped")
            emit(State(THINKING))
        elif isinstance(event, InputAudioCommitted):
            emit(State(THINKING))
        elif isinstance(event, InputTranscriptionCompleted):
            emit(Heard(c.heard))
        elif isinstance(event, ResponseCreated):
            self.mark("server", "response.created")
            self.answer = c.response_id or ""
        elif isinstance(event, AudioDelta) and event.response_id == c.response_id:
            emit(Audio(event.pcm, OUTPUT_RATE, self.answer))
        elif isinstance(event, (AudioTranscriptDelta, TextDelta)):
            emit(Said(c.text))
            if not self.speaks:  # words lead their audio: with speech, RESPONDING waits for it
                emit(State(RESPONDING))
        elif isinstance(event, ResponseDone) and c.done:
            self.mark("server", "response.done", status=c.status)
            emit(TurnDone(self.rt.make_reply(c)))
            self.collector = RealtimeTurnCollector()


class _TakeBridge(Bridge):
    """Backends that answer one whole take at a time, in a worker thread (they block)."""

    def __init__(self, emit: Emit) -> None:
        super().__init__(emit)
        self.takes: asyncio.Queue[Clip | bytes] = asyncio.Queue()  # a recording, or a JPEG

    def take_ended(self, take: Clip) -> None:
        self.takes.put_nowait(take)

    async def run(self) -> None:
        while True:
            take = await self.takes.get()
            self.emit(State(THINKING))
            if isinstance(take, Clip):
                self.mark("client", "take", seconds=round(take.duration, 3))
            else:
                self.mark("client", "image", bytes=len(take))
            try:
                turn = await self.answer(take)
            except NbToolkitError as exc:
                self.emit(Failed(exc))
                continue
            self.emit(TurnDone(turn))

    async def answer(self, take: Clip | bytes) -> Reply:
        raise NotImplementedError


class _DialogView:
    """A Dialog's :mod:`nbtoolkit.events` → chat events: answer audio (labelled with the answer it
    belongs to), states, the growing transcripts, the server's barge-ins. Every method runs on the
    chat's loop."""

    def __init__(self, emit: Emit, dialog: Dialog) -> None:
        self.emit = emit
        self.dialog = dialog
        self.answers = 0  # the Dialog's answers so far: the label of their audio
        self.said = ""  # the current answer's text, from its deltas
        self.video_connected = False

    @property
    def answer(self) -> str:
        return f"dialog-{self.answers}"

    def flush(self, by: str, reason: str, *, if_audible: bool = False) -> None:
        """Drop the answer the player holds (the chat does it once per answer)."""
        self.emit(Flush(reason, self.answer, by=by, if_audible=if_audible))

    def show(self, event: answer_events.StreamEvent) -> None:
        """Render one event of the answer being heard or given."""
        if isinstance(event, answer_events.StateChanged):
            if event.state == "Responding":
                self.answers += 1  # a new answer
                self.said = ""
            mapped = _DIALOG_STATES.get(event.state)
            # Listening comes back once the answer is sent, before the turn is folded: TurnDone
            # says so
            if mapped is not None and mapped != LISTENING:
                self.emit(State(mapped))
        elif isinstance(event, answer_events.SpeechStarted):
            self.emit(Mark("vad", "speech_started"))
            # the server's answer may be complete while the browser still plays it: stop that too
            self.flush("player", "barge_in", if_audible=True)
        elif isinstance(event, answer_events.Heard):
            self.emit(Heard(event.text))
        elif isinstance(event, answer_events.TextDelta):
            self.said += event.delta
            self.emit(Said(self.said))
        elif isinstance(event, answer_events.AudioDelta):
            self.emit(Audio(event.audio.to_pcm(), event.audio.rate, self.answer))

    async def video_frame(self, image: Any) -> bool:
        """A live frame for a ``Dialog(video=True)`` (connects the video channel first)."""
        if not self.video_connected:
            await asyncio.to_thread(self.dialog.connect_video)
            self.video_connected = True
        return await asyncio.to_thread(self.dialog.send_frame, image)


class _DialogBridgeBase(Bridge):
    """A Dialog in any mode, opened and closed here unless the user had opened it already. Its
    ``on_…`` hooks stay the user's: the chat reads the Dialog's event streams."""

    def __init__(self, emit: Emit, dialog: Dialog) -> None:
        super().__init__(emit)
        self.dialog = dialog
        self.view = _DialogView(emit, dialog)
        self.opened = False

    @property
    def ledger(self) -> Ledger:
        ledger: Ledger = self.dialog.ledger
        return ledger

    async def open(self) -> None:
        if self.dialog.state == "Idle":  # not opened yet
            await asyncio.to_thread(self.dialog.open)
            self.opened = True

    async def close(self) -> None:
        if self.opened:
            self.opened = False
            await asyncio.to_thread(self.dialog.close)

    def flush_for_new_take(self) -> None:
        """A new take drops the answer: at once if it still streams, else if it still plays."""
        responding = self.dialog.state == "Responding"
        self.view.flush("record", "record", if_audible=not responding)

    async def frame(self, image: Any) -> bool:
        if self.dialog.video:
            return await self.view.video_frame(image)
        return await self.ask_about(to_jpeg(image))

    async def ask_about(self, jpeg: bytes) -> bool:
        raise NotImplementedError


class _DialogBridge(_DialogBridgeBase, _TakeBridge):
    """push2talk: each take is one ``Dialog.stream(take)``, whose events drive the chat; a
    picture is one ``stream(text=…, images=[…])``."""

    def __init__(self, emit: Emit, dialog: Dialog) -> None:
        super().__init__(emit, dialog)
        self.notice = (
            "Dialog · push to talk: your recording is the whole question; "
            "record over an answer to interrupt it"
        )

    def take_started(self) -> None:
        self.flush_for_new_take()
        if self.dialog.state == "Responding":
            self.dialog.interrupt()

    async def ask_about(self, jpeg: bytes) -> bool:
        self.takes.put_nowait(jpeg)
        return True

    async def answer(self, take: Clip | bytes) -> Reply:
        if isinstance(take, Clip):
            stream = self.dialog.stream(take)
        else:
            stream = self.dialog.stream(text=VISUAL_QUESTION, images=[take])
        async for event in stream:
            self.view.show(event)
        assert stream.reply is not None  # the stream ends with Done, or raises
        return stream.reply


class _DialogLiveBridge(_DialogBridgeBase):
    """duplex / tap2talk: one :class:`DialogLive` for the session. Chunks (and SendSpeech, the
    end-of-take check, pictures) go out in order from one sender task; the session's events
    (``async for event in live``) come back on the chat's loop."""

    def __init__(self, emit: Emit, dialog: Dialog) -> None:
        super().__init__(emit, dialog)
        self.live: DialogLive | None = None
        self.events: AsyncIterator[answer_events.StreamEvent] | None = None
        self.outbox: asyncio.Queue[Callable[[DialogLive], None]] = asyncio.Queue()
        self.notice = (
            "Dialog · duplex: the server hears where each question ends; "
            "speak over an answer to interrupt it"
            if dialog.mode == "duplex"
            else "Dialog · tap to talk: record, and the server hears where your question ends; "
            "record over an answer to interrupt it"
        )

    async def open(self) -> None:
        await super().open()
        self.live = await asyncio.to_thread(self.dialog.live)
        self.events = self.live.events()  # read from now: nothing the session says is missed

    async def close(self) -> None:
        live, self.live = self.live, None
        if live is not None:
            await asyncio.to_thread(live.close)
        await super().close()

    def take_started(self) -> None:
        if self.dialog.mode == "tap2talk":
            # SendSpeech makes the server drop its answer; the player drops what it holds now
            self.flush_for_new_take()
            self.outbox.put_nowait(DialogLive.start_speech)

    def chunk(self, pcm: bytes) -> None:
        self.outbox.put_nowait(lambda live: live.send_audio(pcm))

    def take_ended(self, take: Clip) -> None:
        self.outbox.put_nowait(DialogLive.end_of_input)

    async def ask_about(self, jpeg: bytes) -> bool:
        self.emit(State(THINKING))
        self.outbox.put_nowait(lambda live: live.ask(VISUAL_QUESTION, image=jpeg))
        return True

    async def _send_loop(self, live: DialogLive) -> None:
        while True:
            send = await self.outbox.get()
            try:
                await asyncio.to_thread(send, live)
            except NbToolkitError as exc:  # a lost session: its events end with why
                log.debug("dialog live send failed: %s", exc)

    async def run(self) -> None:
        live, events = self.live, self.events
        assert live is not None and events is not None
        sender = asyncio.create_task(self._send_loop(live), name="voice-chat-dialog-send")
        try:
            async for event in events:  # raises what ended the session
                self._on_event(event)
        finally:
            sender.cancel()
            await asyncio.wait([sender])
        raise ConnectionLost("The dialog's live session was closed", "start the chat again")

    def _on_event(self, event: answer_events.StreamEvent) -> None:
        """One event of the live session → chat events."""
        if isinstance(event, answer_events.Cancelled):  # a barge-in: the server dropped it
            self.view.flush("server_vad", "barge_in")
        elif isinstance(event, answer_events.Done):
            self.view.said = ""
            self.emit(TurnDone(event.reply))
        elif isinstance(event, answer_events.Failed):
            self.emit(Failed(event.error))  # no speech heard, an Error event
        else:
            self.view.show(event)


class _QwenAudioBridge(_TakeBridge):
    """Each take is one ``QwenAudio.ask(audio=take)``: a text answer, optionally read aloud."""

    def __init__(self, emit: Emit, qa: QwenAudio, tts: bool) -> None:
        super().__init__(emit)
        self.qa = qa
        self.tts = tts
        self.engine: Any = None
        self.notice = (
            "Qwen-Audio answers in text; it is read aloud by the offline eSpeak engine "
            "(not the model's voice)"
            if tts
            else "Qwen-Audio answers in text only (pass tts=True to hear it through the offline "
            "eSpeak engine)"
        )

    @property
    def ledger(self) -> Ledger:
        return self.qa.ledger

    async def answer(self, take: Clip | bytes) -> Reply:
        assert isinstance(take, Clip)  # frame() refuses pictures
        reply = await asyncio.to_thread(self.qa.ask, audio=take)
        self.emit(Said(reply.text))
        spoken = None
        if self.tts and reply.text.strip():
            spoken = await asyncio.to_thread(self._speak, reply.text)
            self.emit(Audio(spoken.to_pcm(), spoken.rate, reply.request_id or ""))
        return dataclasses.replace(reply, audio=spoken)

    def _speak(self, text: str) -> Clip:
        if self.engine is None:
            from nbtoolkit.local.engine import Engine

            self.engine = Engine()
        return Clip.from_array(self.engine.synthesize(text, rate=OUTPUT_RATE), OUTPUT_RATE)
