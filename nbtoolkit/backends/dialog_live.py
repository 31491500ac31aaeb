"""Continuous dialog: audio in as it comes, finished turns out, barge-ins included.

Made by :meth:`nbtoolkit.backends.dialog.Dialog.live` for a live microphone: audio goes out as it
comes (``send_audio``), zero frames fill the gaps while nothing is sent (the server's VAD needs a
running clock to hear the end of speech, as in the official demos), and each turn is reported as it
finishes (``next_turn()`` / ``turns()`` and the dialog's ``on_turn`` hook): speech over an answer
makes the server stop it, the turn is reported "cancelled" and ``on_flush`` is called so a player
drops what it still holds.

The same session is also a stream of :mod:`nbtoolkit.events` for async code (a notebook cell, a
voice chat on the kernel's loop): ``async for event in live`` gives what the server says as it says
it (states, speech started/stopped, the words heard, the answer's text and audio), ``Cancelled``
when a barge-in stops an answer, ``Done(reply)`` for each finished turn and ``Failed(error)`` for a
turn that failed while the session goes on; it ends when the session does.
"""

from __future__ import annotations

import asyncio
import math
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Protocol

from dashscope.multimodal.multimodal_request_params import RequestToRespondParameters

from nbtoolkit.audio.clip import Clip
from nbtoolkit.backends._base import Emit
from nbtoolkit.backends._dialog_sdk import (
    Inbox,
    call_hook,
    error_from,
    image_param,
    is_error_event,
    to_jpeg,
)
from nbtoolkit.backends._sdk import TIMED_OUT
from nbtoolkit.config import Endpoints
from nbtoolkit.errors import AudioError, ConfigError, ConnectionLost, NbToolkitError
from nbtoolkit.events import Cancelled, Done, Failed, StreamEvent
from nbtoolkit.ledger import Ledger
from nbtoolkit.protocols.dialog import INPUT_RATE, DialogTurnCollector
from nbtoolkit.results import Reply, Timeline, Usage

__all__ = ["FILL_AFTER", "FRAME_MS", "DialogLive", "LiveOwner"]

FRAME_MS = 100


class LiveOwner(Protocol):
    """The dialog a :class:`DialogLive` streams on (a :class:`~nbtoolkit.backends.dialog.Dialog`)."""

    mode: str
    timeout: float
    endpoints: Endpoints
    on_turn: Callable[[Reply], None] | None
    on_flush: Callable[[], None] | None
    _inbox: Inbox
    _stopping: bool
    _live: DialogLive | None
    _emit: Emit | None

    @property
    def ledger(self) -> Ledger: ...

    def _require_open(self) -> Any: ...

    def _handle(
        self, item: tuple[Any, ...], collector: DialogTurnCollector, timeline: Timeline
    ) -> None: ...

    def _partial(self, c: DialogTurnCollector, timeline: Timeline, status: str) -> Reply: ...

    def _usage(self, c: DialogTurnCollector) -> Usage: ...

    def _record(self, usage: Usage, t0: float) -> None: ...


_END = object()
_SILENT_FRAME = bytes(INPUT_RATE * 2 * FRAME_MS // 1000)
#: Zero frames start after this long without audio: a microphone's chunks arrive with some jitter,
#: and a zero frame slipped between two of them would cut a word in half.
FILL_AFTER = 0.3


class DialogLive:
    """Continuous audio in, finished turns out; made by :meth:`Dialog.live`.

    Mode semantics: in duplex just :meth:`send_audio`; in tap2talk call :meth:`start_speech`
    before each utterance (the server's VAD ends it); in push2talk bracket it with
    :meth:`start_speech` / :meth:`stop_speech`. A thread of the stream reads the server's events:
    each finished turn is recorded in the dialog's ledger, passed to ``Dialog.on_turn`` and queued
    for :meth:`next_turn` / :meth:`turns`. A turn that fails (an ``Error`` event, or the server
    heard no speech — see :meth:`end_of_input`) is raised by :meth:`next_turn` and the stream goes
    on; a lost connection ends it (the exception's ``partial`` is the turn so far).

    ``async for event in live`` (or :meth:`events`) reads the same session as
    :mod:`nbtoolkit.events`; turns still queue for :meth:`next_turn` meanwhile.
    """

    def __init__(self, dialog: LiveOwner, *, fill_silence: bool) -> None:
        self.dialog = dialog
        self.fill_silence = fill_silence
        #: Replys finished so far, oldest first (what next_turn() returned or will return).
        self.turns_done: list[Reply] = []
        self._sdk = dialog._require_open()
        self._results: queue.Queue[Any] = queue.Queue()
        self._stop = threading.Event()
        self._send_lock = threading.Lock()
        self._last_audio = time.monotonic()
        self._filling = False  # zero frames are going out (no audio for FILL_AFTER)
        self._sent_seconds = 0.0  # user audio (not filler) since the last turn ended
        self._heard = False  # SpeechStarted since the last start_speech / end_of_input check
        self._checks = 0  # end_of_input heartbeats not answered yet
        self._fatal: BaseException | None = None
        # readers of events(): (their loop, their queue); replaced whole, so the stream's
        # thread can walk it without the lock
        self._readers: tuple[tuple[asyncio.AbstractEventLoop, asyncio.Queue[Any]], ...] = ()
        self._readers_lock = threading.Lock()
        self._events_over = False
        self._new_turn()
        dialog._emit = self._publish  # Dialog._handle reports the server's events here
        self._thread = threading.Thread(target=self._run, name="nbtoolkit-dialog-stream")
        self._thread.daemon = True
        self._thread.start()

    def __enter__(self) -> DialogLive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran or the connection was lost."""
        return self._stop.is_set()

    # ------------------------------------------------------------------ sending (any thread)
    def send_audio(
        self, audio: Clip | bytes | bytearray | memoryview, *, pace: bool = False
    ) -> None:
        """Send 16 kHz PCM16 mono bytes (or a Clip, resampled) in 100 ms frames; ``pace=True``
        blocks to send them at real time, as a microphone would."""
        if isinstance(audio, Clip):
            pcm = audio.resample(INPUT_RATE).to_pcm()
        else:
            pcm = bytes(audio)
            if len(pcm) % 2:
                raise AudioError(
                    f"PCM16 audio must have an even number of bytes (got {len(pcm)})",
                    "send 16-bit mono PCM at 16 kHz, or pass a Clip (it is resampled for you)",
                )
        step = len(_SILENT_FRAME)
        t0 = time.monotonic()
        for i in range(0, len(pcm), step):
            if pace and (ahead := t0 + i / step * FRAME_MS / 1000 - time.monotonic()) > 0:
                time.sleep(ahead)  # pacing the stream like a microphone, not waiting for an event
            self._send(pcm[i : i + step], user=True)

    def start_speech(self) -> None:
        """tap2talk/push2talk: an utterance begins (SendSpeech; it also interrupts an answer).
        Nothing to do in duplex, where the server always listens."""
        self._heard = False
        if self.dialog.mode != "duplex":
            self._mark("client", "SendSpeech")
            self._control(lambda sdk: sdk.start_speech())

    def stop_speech(self) -> None:
        """push2talk: the utterance is complete (StopSpeech)."""
        if self.dialog.mode == "push2talk":
            self._mark("client", "StopSpeech")
            self._control(lambda sdk: sdk.stop_speech())

    def end_of_input(self) -> None:
        """The microphone stopped (e.g. the end of a take). If the server's VAD heard no speech
        since the last :meth:`start_speech` or check, :meth:`next_turn` raises AudioError: a
        HeartBeat sent after the audio comes back only once the server has seen all of it."""
        self._checks += 1
        self._control(lambda sdk: sdk.send_heart_beat())

    def ask(self, text: str, image: Any = None) -> None:
        """Ask in text, optionally about ``image`` (sent with the question); the answer comes as
        a turn like any other."""
        params = RequestToRespondParameters(images=[image_param(to_jpeg(image))]) if image else None
        self._mark("client", "ask" if image is None else "send_image")
        self._control(lambda sdk: sdk.request_to_respond("prompt", text, parameters=params))

    def speak(self, text: str) -> None:
        """Have the server say ``text`` (TTS only); reported as a turn."""
        self._mark("client", "speak")
        self._control(lambda sdk: sdk.request_to_respond("transcript", text))

    def interrupt(self) -> None:
        """Ask to speak (RequestToSpeak): the server stops its answer; the turn ends cancelled."""
        self._mark("client", "RequestToSpeak")
        self._control(lambda sdk: sdk.interrupt())

    def _send(self, frame: bytes, *, user: bool) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self._stop.is_set():
            if not user:
                return  # the stream's own zero frame, as close() stops it: nothing is lost
            raise ConnectionLost("The dialog stream is closed", "open a new one with d.live()")
        with self._send_lock:
            try:
                self._sdk.send_audio_data(frame)
            except Exception as exc:  # the socket is gone: the inbox will say why
                raise ConnectionLost(
                    f"Cannot send audio: {type(exc).__name__}", "open a new Dialog"
                ) from exc
            self._last_audio = time.monotonic()
            self._filling = not user
            if user:
                self._sent_seconds += len(frame) / 2 / INPUT_RATE

    def _control(self, send: Callable[[Any], None]) -> None:
        if self._fatal is not None:
            raise self._fatal
        with self._send_lock:
            send(self._sdk)

    def _mark(self, lane: str, name: str, **detail: Any) -> None:
        self._timeline.mark(lane, name, **detail)

    # ------------------------------------------------------------------ turns (caller's thread)
    def next_turn(self, timeout: float | None = None) -> Reply:
        """The next finished turn (wait at most ``timeout`` seconds, default the dialog's;
        ``math.inf`` waits until a turn finishes or the stream is closed).

        Raises the failure of a turn (with ``partial``), ConnectionLost when the time is up, and,
        once the stream has ended, what ended it (ConnectionLost "closed" after :meth:`close`).
        """
        wait = self.dialog.timeout if timeout is None else timeout
        try:
            item = self._results.get(timeout=None if math.isinf(wait) else wait)
        except queue.Empty:
            raise ConnectionLost(
                f"No turn finished within {wait:g} s",
                "speak (or send audio), or wait longer with a larger timeout",
                code=TIMED_OUT,
            ) from None
        if item is _END:
            self._results.put(_END)  # every later call ends too
            raise self._fatal or ConnectionLost(
                "The dialog stream is closed", "open a new one with d.live()"
            )
        if isinstance(item, BaseException):
            raise item
        turn: Reply = item
        return turn

    def turns(self, timeout: float | None = None) -> Iterator[Reply]:
        """Finished turns as they come, until the stream is closed (see :meth:`next_turn`)."""
        while True:
            try:
                yield self.next_turn(timeout)
            except ConnectionLost:
                if self._fatal is None and self._stop.is_set():
                    return
                raise

    # ------------------------------------------------------------------ events (async readers)
    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self.events()

    def events(self) -> AsyncIterator[StreamEvent]:
        """The session's :mod:`nbtoolkit.events` from now on, for ``async for`` on the running
        loop: StateChanged, SpeechStarted/SpeechStopped, Heard, TextDelta and AudioDelta as they
        come (audio of the current answer only), Cancelled when a barge-in stops an answer,
        Done(reply) per finished turn, Failed(error) per failed turn. Call it before sending what
        it should see: it reads from the moment it is called.

        The iteration ends when the session is closed, and raises what ended it otherwise (a
        lost connection, with ``partial``). It waits as long as the session is quiet (a live
        microphone may say nothing for minutes); :meth:`close` ends it. Events are queued without
        a bound: the server paces them (about real time for audio), and a reader that stops
        iterating stops being fed.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise ConfigError(
                "A live session's events are read on a running event loop",
                "use `async for event in live` in async code (a notebook cell can await), "
                "or next_turn() from plain code",
            ) from None
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        reader = (loop, inbox)
        with self._readers_lock:
            if self._events_over:
                inbox.put_nowait(_END)
            else:
                self._readers = (*self._readers, reader)
        return self._read(reader)

    async def _read(
        self, reader: tuple[asyncio.AbstractEventLoop, asyncio.Queue[Any]]
    ) -> AsyncIterator[StreamEvent]:
        try:
            while (item := await reader[1].get()) is not _END:
                yield item
        finally:
            self._drop_reader(reader)
        if self._fatal is not None:
            raise self._fatal

    def _drop_reader(self, reader: tuple[asyncio.AbstractEventLoop, asyncio.Queue[Any]]) -> None:
        with self._readers_lock:
            self._readers = tuple(r for r in self._readers if r is not reader)

    def _publish(self, event: Any) -> None:
        """Hand ``event`` (or the end, ``_END``) to every reader, on its own loop."""
        for reader in self._readers:
            loop, inbox = reader
            try:
                loop.call_soon_threadsafe(inbox.put_nowait, event)
            except RuntimeError:  # that loop is closed: nobody reads there any more
                self._drop_reader(reader)

    def _end_events(self) -> None:
        with self._readers_lock:
            if self._events_over:
                return
            self._events_over = True
        self._publish(_END)
        with self._readers_lock:
            self._readers = ()

    def close(self) -> None:
        """Stop the stream's thread (the dialog stays open for say/ask or a new stream)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        self._results.put(_END)
        self._end_events()
        if self.dialog._live is self:
            self.dialog._live = None

    # ------------------------------------------------------------------ the stream's thread
    def _new_turn(self) -> None:
        self._collector = DialogTurnCollector()
        self._timeline = Timeline()
        self._t0: float | None = None

    def _run(self) -> None:
        inbox = self.dialog._inbox.items
        try:
            while not self._stop.is_set():
                wait = 0.2
                if self.fill_silence:
                    gap = FRAME_MS / 1000 if self._filling else FILL_AFTER
                    wait = max(0.0, self._last_audio + gap - time.monotonic())
                try:
                    item = inbox.get(timeout=wait) if wait > 0 else inbox.get_nowait()
                except queue.Empty:
                    item = None
                if item is not None:
                    self._fold(item)
                gap = FRAME_MS / 1000 if self._filling else FILL_AFTER
                if self.fill_silence and time.monotonic() - self._last_audio >= gap:
                    self._send(_SILENT_FRAME, user=False)
        except NbToolkitError as exc:  # the session is over (or the budget spent): keep the turn
            self._fail(exc)
        finally:
            self._stop.set()
            self._results.put(_END)
            if self.dialog._emit == self._publish:
                self.dialog._emit = None
            self._end_events()

    def _fold(self, item: tuple[Any, ...]) -> None:
        d, c = self.dialog, self._collector
        kind = item[0]
        if kind == "audio" and not c.responding:
            return  # a frame of an answer abandoned by a barge-in, arriving late
        if kind == "error" and not d._stopping and is_error_event(item[1]):
            partial = d._partial(c, self._timeline, "failed")
            exc = error_from(item[1], partial, local=d.endpoints.local)
            self._end_turn(exc.partial if c.begun else None)
            self._results.put(exc)
            self._publish(Failed(exc))
            return
        d._handle(item, c, self._timeline)  # raises when the session is over
        if self._t0 is None and c.begun:
            self._t0 = time.monotonic()
        if kind == "event" and item[1] == "SpeechStarted":
            self._heard = True
        elif kind == "event" and item[1] == "HeartBeat" and self._checks > 0:
            self._checks -= 1
            heard, self._heard = self._heard, False
            if not heard:
                unheard = AudioError(
                    "The server's voice detector heard no speech in the recording",
                    "speak louder or closer, or use mode='push2talk'",
                )
                self._results.put(unheard)
                self._publish(Failed(unheard))
        if c.done:
            turn = d._partial(c, self._timeline, c.status)
            self._end_turn(turn)
            if turn.status == "cancelled":
                call_hook(d.on_flush)
                self._publish(Cancelled(turn))
            call_hook(d.on_turn, turn)
            self.turns_done.append(turn)
            self._results.put(turn)
            self._publish(Done(turn))
            d.ledger.check(local=d.endpoints.local)

    def _end_turn(self, turn: Reply | None) -> None:
        """Record ``turn`` (what the server produced counts, finished or not); start the next."""
        if turn is not None:
            if self._collector.usage is None and self._sent_seconds:
                # no usage from the service: count the audio sent for this turn
                self._collector.sent_seconds = self._sent_seconds
                turn.usage = self.dialog._usage(self._collector)
            self.dialog._record(turn.usage, self._t0 or time.monotonic())
        self._sent_seconds = 0.0
        self._new_turn()

    def _fail(self, exc: NbToolkitError) -> None:
        partial = getattr(exc, "partial", None)
        partial = partial if isinstance(partial, Reply) else None
        self._end_turn(partial if self._collector.begun else None)
        self._fatal = exc
        self._results.put(exc)
