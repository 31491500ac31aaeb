"""The bridges behind :class:`~nbtoolkit.voice_chat.VoiceChat`: one adapter per backend family.

A bridge turns recorder takes/chunks into backend calls and backend events into player audio,
turns and dialog states (what each family does is described in :mod:`nbtoolkit.voice_chat`).
This is the widgets' only way to the backends: it imports no widget, and reaches the chat's
widgets through the chat's own ``_``-prefixed "bridge → widgets" methods, so it is private to
:mod:`nbtoolkit.voice_chat`. Every bridge method runs on the chat's event loop.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nbtoolkit.audio.clip import Clip
from nbtoolkit.backends.dialog import Dialog, DialogStream, to_jpeg
from nbtoolkit.backends.omni import OmniRealtime, Reconnected
from nbtoolkit.backends.qwen_audio import QwenAudio
from nbtoolkit.errors import ConfigError, ConnectionLost, ImageError, NbToolkitError
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
from nbtoolkit.results import Turn

if TYPE_CHECKING:
    from nbtoolkit.voice_chat import VoiceChat

# the chat's logger: one switch for the whole voice chat
log = logging.getLogger("nbtoolkit.voice_chat")

#: The dialog states (the chat's ``state``), set by the bridges; re-exported by voice_chat.
IDLE, LISTENING, THINKING, RESPONDING, STOPPED, ERROR = (
    "IDLE",
    "LISTENING",
    "THINKING",
    "RESPONDING",
    "STOPPED",
    "ERROR",
)
#: Dialog (SDK) states → the badge.
_DIALOG_STATES = {"Listening": LISTENING, "Thinking": THINKING, "Responding": RESPONDING}
#: What a Dialog without video is asked about a picture.
VISUAL_QUESTION = "What is in front of me?"

Backend = OmniRealtime | Dialog | QwenAudio


class Bridge:
    """Joins one backend to the chat. Every method runs on the chat's event loop."""

    notice = ""

    def __init__(self, chat: VoiceChat) -> None:
        self.chat = chat

    @property
    def ledger(self) -> Ledger:
        raise NotImplementedError

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
        """The recorder finished ``take``."""

    async def frame(self, image: Any) -> bool:
        """Show the backend a picture (see :meth:`VoiceChat.send_frame`)."""
        raise ConfigError(
            "This backend takes no pictures in a voice chat",
            "use an OmniRealtime or a Dialog for visual questions",
        )

    def answered(self, turn: Turn) -> None:
        """``turn`` is complete: the player may run dry now; the chat shows it and listens."""
        self.chat.player.finish()
        self.chat._add_turn(turn)
        self.chat._set_state(LISTENING)

    def failed(self, exc: NbToolkitError) -> None:
        """One failed turn (too short, no speech heard, refused, timed out) need not end the
        conversation: keep what arrived, say why on the badge, and listen again."""
        self.chat.failures.append(exc)
        partial = getattr(exc, "partial", None)
        if isinstance(partial, Turn):
            self.chat._add_turn(partial)
        self.chat._set_state(LISTENING, str(exc))


def bridge_for(chat: VoiceChat, backend: Any, tts: bool) -> Bridge:
    """The bridge that joins ``backend`` to ``chat`` (``tts`` is for QwenAudio only)."""
    if tts and not isinstance(backend, QwenAudio):
        raise ConfigError(
            f"tts=True is for QwenAudio; {type(backend).__name__} answers with its own voice",
            "drop tts=True",
        )
    if isinstance(backend, OmniRealtime):
        return _OmniBridge(chat, backend)
    if isinstance(backend, Dialog):
        if backend.mode == "push2talk":
            return _DialogBridge(chat, backend)
        return _DialogStreamBridge(chat, backend)
    if isinstance(backend, QwenAudio):
        return _QwenAudioBridge(chat, backend, tts)
    raise ConfigError(
        f"VoiceChat cannot talk to a {type(backend).__name__}",
        "pass an OmniRealtime, Dialog or QwenAudio",
    )


_COMMIT = object()


class _OmniBridge(Bridge):
    """Mic chunks → ``send_audio`` as they arrive; server events → player, transcript, turns."""

    def __init__(self, chat: VoiceChat, rt: OmniRealtime) -> None:
        super().__init__(chat)
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
        self.flushed = False  # the player was flushed since the current answer began
        self.opened = False
        self.audio_sent = False  # images may only follow audio
        self.user_flush = rt.on_flush

    @property
    def ledger(self) -> Ledger:
        return self.rt.ledger

    async def open(self) -> None:
        self.rt.on_flush = self._on_flush
        if self.rt.session_id is None:
            await self.rt.connect()
            self.opened = True

    async def close(self) -> None:
        self.rt.on_flush = self.user_flush
        if self.opened:
            self.opened = False
            await self.rt.close()

    async def _on_flush(self) -> None:
        # the client has just cancelled the server's answer because the user spoke over it
        self.chat._mark("state", "barge_in", by="server_vad")
        self._flush("barge_in")
        if self.user_flush is not None:
            result = self.user_flush()
            if inspect.isawaitable(result):
                await result

    def _flush(self, reason: str) -> None:
        if not self.flushed:
            self.flushed = True
            self.chat._flush_player(reason)

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
            self.chat._mark("state", "barge_in", by="record")
        if self.chat._player_audible() or self.rt.response_active:
            self._flush("record")

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
                self.chat._mark("client", "commit")
                self.chat._set_state(THINKING)
                await self.rt.commit()
                await self.rt.create_response()
            else:
                await item()

    def _on_event(self, event: RealtimeEvent | Reconnected) -> None:
        chat = self.chat
        if isinstance(event, Reconnected):
            chat._mark("state", "reconnected", close_code=event.close_code)
            return
        if isinstance(event, ErrorEvent):
            chat._mark("server", "error", code=event.code)
            chat._render_state(f"{event.code}: {event.message}")
            return
        c = self.collector
        c.feed(event)
        if isinstance(event, SpeechStarted):
            chat._mark("vad", "speech_started")
            # the server's answer may be complete while the browser still plays it: stop that too
            if chat._player_audible():
                chat._mark("state", "barge_in", by="player")
                self._flush("barge_in")
            chat._set_state(LISTENING)
        elif isinstance(event, SpeechStopped):
            chat._mark("vad", "speech_stopped")
            chat._set_state(THINKING)
        elif isinstance(event, InputAudioCommitted):
            chat._set_state(THINKING)
        elif isinstance(event, InputTranscriptionCompleted):
            chat._live(heard=c.heard)
        elif isinstance(event, ResponseCreated):
            chat._mark("server", "response.created")
            self.flushed = False
        elif isinstance(event, AudioDelta) and event.response_id == c.response_id:
            if chat.state != RESPONDING:
                chat._mark("audio-out", "first_audio")
                chat._set_state(RESPONDING)
            if not self.flushed:
                chat.player.feed(event.pcm, OUTPUT_RATE)
        elif isinstance(event, (AudioTranscriptDelta, TextDelta)):
            chat._live(text=c.text)
            if not self.speaks:  # words lead their audio: with speech, RESPONDING waits for it
                chat._set_state(RESPONDING)
        elif isinstance(event, ResponseDone) and c.done:
            chat._mark("server", "response.done", status=c.status)
            self.answered(self.rt.make_turn(c, chat._new_turn_timeline()))
            self.collector = RealtimeTurnCollector()


class _TakeBridge(Bridge):
    """Backends that answer one whole take at a time, in a worker thread (they block)."""

    def __init__(self, chat: VoiceChat) -> None:
        super().__init__(chat)
        self.takes: asyncio.Queue[Clip | bytes] = asyncio.Queue()  # a recording, or a JPEG

    def take_ended(self, take: Clip) -> None:
        self.takes.put_nowait(take)

    async def run(self) -> None:
        chat = self.chat
        while True:
            take = await self.takes.get()
            chat._set_state(THINKING)
            if isinstance(take, Clip):
                chat._mark("client", "take", seconds=round(take.duration, 3))
            else:
                chat._mark("client", "image", bytes=len(take))
            try:
                turn = await self.answer(take)
            except NbToolkitError as exc:
                self.failed(exc)
                continue
            self.answered(turn)

    async def answer(self, take: Clip | bytes) -> Turn:
        raise NotImplementedError


class _DialogView:
    """A Dialog's hooks → the chat: answer audio to the player, states to the badge, text to the
    live transcript, barge-ins to a player flush. The hooks run in the SDK's (or the stream's)
    thread and hop to the chat's loop; the user's own hooks are still called."""

    def __init__(self, chat: VoiceChat, dialog: Dialog) -> None:
        self.chat = chat
        self.dialog = dialog
        self.user = (
            dialog.on_audio,
            dialog.on_state,
            dialog.on_text,
            dialog.on_flush,
            dialog.on_speech_started,
        )
        self.flushed = False  # the player was flushed since the current answer began
        self.video_connected = False

    def install(self) -> None:
        chat, d = self.chat, self.dialog
        user_audio, user_state, user_text, user_flush, user_speech = self.user

        def on_audio(clip: Clip) -> None:
            chat._hop(self._audio, clip)
            if user_audio is not None:
                user_audio(clip)

        def on_state(state: str) -> None:
            chat._hop(self._state, state)
            if user_state is not None:
                user_state(state)

        def on_text(role: str, text: str, final: bool) -> None:
            chat._hop(self._text, role, text)
            if user_text is not None:
                user_text(role, text, final)

        def on_flush() -> None:
            chat._hop(self.flush, "server_vad", "barge_in")
            if user_flush is not None:
                user_flush()

        def on_speech_started() -> None:
            chat._hop(self._speech_started)
            if user_speech is not None:
                user_speech()

        d.on_audio, d.on_state, d.on_text = on_audio, on_state, on_text
        d.on_flush, d.on_speech_started = on_flush, on_speech_started

    def restore(self) -> None:
        d = self.dialog
        d.on_audio, d.on_state, d.on_text, d.on_flush, d.on_speech_started = self.user

    def flush(self, by: str, reason: str) -> None:
        """Drop the answer the player holds (once per answer)."""
        if not self.flushed:
            self.flushed = True
            self.chat._mark("state", "barge_in", by=by)
            self.chat._flush_player(reason)

    def _speech_started(self) -> None:
        self.chat._mark("vad", "speech_started")
        # the server's answer may be complete while the browser still plays it: stop that too
        if self.chat._player_audible():
            self.flush("player", "barge_in")

    def _audio(self, clip: Clip) -> None:
        if self.flushed:
            return  # a late chunk of the answer that was just flushed
        if self.chat.state != RESPONDING:
            self.chat._mark("audio-out", "first_audio")
            self.chat._set_state(RESPONDING)
        self.chat.player.feed(clip.to_pcm(), clip.rate)

    def _state(self, state: str) -> None:
        if state == "Responding":
            self.flushed = False  # a new answer
        mapped = _DIALOG_STATES.get(state)
        # Listening comes back once the answer is sent, before the turn is folded: run() says so
        if mapped is not None and mapped != LISTENING:
            self.chat._set_state(mapped)

    def _text(self, role: str, text: str) -> None:
        if role == "user":
            self.chat._live(heard=text)
        else:
            self.chat._live(text=text)

    async def video_frame(self, image: Any) -> bool:
        """A live frame for a ``Dialog(video=True)`` (connects the video channel first)."""
        if not self.video_connected:
            await asyncio.to_thread(self.dialog.connect_video)
            self.video_connected = True
        return await asyncio.to_thread(self.dialog.send_frame, image)


class _DialogBridgeBase(Bridge):
    """A Dialog in any mode: its hooks drive the chat (through a :class:`_DialogView`) while the
    session runs, and it is opened and closed here unless the user had opened it already."""

    def __init__(self, chat: VoiceChat, dialog: Dialog) -> None:
        super().__init__(chat)
        self.dialog = dialog
        self.view = _DialogView(chat, dialog)
        self.opened = False

    @property
    def ledger(self) -> Ledger:
        ledger: Ledger = self.dialog.ledger
        return ledger

    async def open(self) -> None:
        self.view.install()
        if self.dialog.state == "Idle":  # not opened yet
            await asyncio.to_thread(self.dialog.open)
            self.opened = True

    async def close(self) -> None:
        self.view.restore()
        if self.opened:
            self.opened = False
            await asyncio.to_thread(self.dialog.close)


class _DialogBridge(_DialogBridgeBase, _TakeBridge):
    """push2talk: each take is one ``Dialog.say``; a picture is one ``ask_about_image``."""

    def __init__(self, chat: VoiceChat, dialog: Dialog) -> None:
        super().__init__(chat, dialog)
        self.notice = (
            "Dialog · push to talk: your recording is the whole question; "
            "record over an answer to interrupt it"
        )

    def take_started(self) -> None:
        if self.dialog.state == "Responding" or self.chat._player_audible():
            self.view.flush("record", "record")
            if self.dialog.state == "Responding":
                self.dialog.interrupt()

    async def frame(self, image: Any) -> bool:
        if self.dialog.video:
            return await self.view.video_frame(image)
        self.takes.put_nowait(to_jpeg(image))
        return True

    async def answer(self, take: Clip | bytes) -> Turn:
        if isinstance(take, Clip):
            turn = await asyncio.to_thread(self.dialog.say, take)
        else:
            turn = await asyncio.to_thread(self.dialog.ask_about_image, take, VISUAL_QUESTION)
        self.chat._new_turn_timeline()
        return turn


class _DialogStreamBridge(_DialogBridgeBase):
    """duplex / tap2talk: one :class:`DialogStream` for the session. Chunks (and SendSpeech, the
    end-of-take check, pictures) go out in order from one sender task; finished turns come back
    from the stream's thread."""

    def __init__(self, chat: VoiceChat, dialog: Dialog) -> None:
        super().__init__(chat, dialog)
        self.stream: DialogStream | None = None
        self.outbox: asyncio.Queue[Callable[[DialogStream], None]] = asyncio.Queue()
        self.notice = (
            "Dialog · duplex: the server hears where each question ends; "
            "speak over an answer to interrupt it"
            if dialog.mode == "duplex"
            else "Dialog · tap to talk: record, and the server hears where your question ends; "
            "record over an answer to interrupt it"
        )

    async def open(self) -> None:
        await super().open()
        self.stream = await asyncio.to_thread(self.dialog.stream)

    async def close(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            await asyncio.to_thread(stream.close)
        await super().close()

    def take_started(self) -> None:
        if self.dialog.mode == "tap2talk":
            # SendSpeech makes the server drop its answer; the player drops what it holds now
            if self.dialog.state == "Responding" or self.chat._player_audible():
                self.view.flush("record", "record")
            self.outbox.put_nowait(DialogStream.start_speech)

    def chunk(self, pcm: bytes) -> None:
        self.outbox.put_nowait(lambda stream: stream.send_audio(pcm))

    def take_ended(self, take: Clip) -> None:
        self.outbox.put_nowait(DialogStream.end_of_input)

    async def frame(self, image: Any) -> bool:
        if self.dialog.video:
            return await self.view.video_frame(image)
        jpeg = to_jpeg(image)
        self.chat._set_state(THINKING)
        self.outbox.put_nowait(lambda stream: stream.ask(VISUAL_QUESTION, image=jpeg))
        return True

    async def _send_loop(self, stream: DialogStream) -> None:
        while True:
            send = await self.outbox.get()
            try:
                await asyncio.to_thread(send, stream)
            except NbToolkitError as exc:  # a lost stream: its next_turn() says why
                log.debug("dialog stream send failed: %s", exc)

    async def run(self) -> None:
        chat, stream = self.chat, self.stream
        assert stream is not None
        sender = asyncio.create_task(self._send_loop(stream), name="voice-chat-dialog-send")
        try:
            while True:
                try:
                    turn = await asyncio.to_thread(stream.next_turn, math.inf)
                except NbToolkitError as exc:
                    if stream.closed:
                        raise  # the connection is gone: the session ends
                    self.failed(exc)  # no speech heard, an Error event
                    continue
                chat._new_turn_timeline()
                self.answered(turn)
        finally:
            sender.cancel()
            await asyncio.wait([sender])


class _QwenAudioBridge(_TakeBridge):
    """Each take is one ``QwenAudio.ask(audio=take)``: a text answer, optionally read aloud."""

    def __init__(self, chat: VoiceChat, qa: QwenAudio, tts: bool) -> None:
        super().__init__(chat)
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

    async def answer(self, take: Clip | bytes) -> Turn:
        assert isinstance(take, Clip)  # frame() refuses pictures
        reply = await asyncio.to_thread(self.qa.ask, audio=take)
        self.chat._live(text=reply.text)
        spoken = None
        if self.tts and reply.text.strip():
            spoken = await asyncio.to_thread(self._speak, reply.text)
            self.chat._set_state(RESPONDING)
            self.chat.player.feed(spoken.to_pcm(), spoken.rate)
        return Turn(
            heard="",
            text=reply.text,
            audio=spoken,
            usage=reply.usage,
            timeline=self.chat._new_turn_timeline(),
            request_id=reply.request_id,
            model=reply.model,
            local=reply.local,
        )

    def _speak(self, text: str) -> Clip:
        if self.engine is None:
            from nbtoolkit.local.engine import Engine

            self.engine = Engine()
        return Clip.from_array(self.engine.synthesize(text, rate=OUTPUT_RATE), OUTPUT_RATE)
