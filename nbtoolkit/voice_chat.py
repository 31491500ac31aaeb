"""``VoiceChat``: Recorder + a speech backend + Player + live transcript + dialog state + usage.

The one module that imports both :mod:`nbtoolkit.widgets` and :mod:`nbtoolkit.backends`.

ipykernel handles no widget message while a cell runs, so :meth:`VoiceChat.start` runs the session
as a background task on the kernel's event loop and returns at once; microphone chunks, backend
events and the SDK's thread callbacks all meet on that loop (callbacks from other threads hop there
with ``loop.call_soon_threadsafe``) before anything touches a widget.

One bridge class per backend family turns recorder takes/chunks into backend calls and backend
events into player audio, turns and dialog states:

* :class:`~nbtoolkit.backends.omni.OmniRealtime` — chunks stream as they arrive. With server VAD the
  server finds the turns; speech over an answer cancels it and flushes the player. Without VAD
  (push-to-talk) the end of a take commits and asks for the answer; a new take cancels one playing.
* :class:`~nbtoolkit.backends.dialog.Dialog` in duplex or tap2talk — one
  :class:`~nbtoolkit.backends.dialog.DialogStream` for the session: chunks stream as they arrive
  (zero frames while the microphone is off), the server's VAD finds the turns, and speech over an
  answer (duplex) or a new take (tap2talk) cancels it and flushes the player. A take in which the
  server heard no speech is reported as a failure.
* :class:`~nbtoolkit.backends.dialog.Dialog` in push2talk — each take is one ``say()`` bracketed
  by SendSpeech/StopSpeech; a take started while the answer plays interrupts it (RequestToSpeak)
  and flushes the player.
* :class:`~nbtoolkit.backends.qwen_audio.QwenAudio` — each take is one ``ask(audio=…)``; the answer
  is text. ``tts=True`` reads it aloud with the offline engine's eSpeak voice (and the UI says so).

Camera frames (:meth:`VoiceChat.send_frame`, :meth:`VoiceChat.snapshot`, the Recorder's Snapshot
button with ``camera=True``): OmniRealtime appends them to the speech being heard, a
``Dialog(video=True)`` takes them as live video frames, and any other Dialog is asked about the
picture at once. At most 2 frames a second are sent; sooner ones are dropped.
"""

from __future__ import annotations

import asyncio
import html
import inspect
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import ipywidgets
import traitlets

from nbtoolkit import pricing
from nbtoolkit.audio.clip import Clip
from nbtoolkit.backends.dialog import FRAME_INTERVAL, Dialog, DialogStream, to_jpeg
from nbtoolkit.backends.omni import OmniRealtime, Reconnected
from nbtoolkit.backends.qwen_audio import QwenAudio
from nbtoolkit.config import scrub_secrets
from nbtoolkit.errors import AudioError, ConfigError, ConnectionLost, ImageError, NbToolkitError
from nbtoolkit.ledger import Ledger, LedgerEntry, LedgerSummary
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
    TurnCollector,
)
from nbtoolkit.results import Timeline, Turn
from nbtoolkit.widgets.player import Player
from nbtoolkit.widgets.recorder import RATE, Recorder, is_headless

__all__ = ["IDLE", "LISTENING", "RESPONDING", "STOPPED", "THINKING", "VoiceChat"]

log = logging.getLogger("nbtoolkit.voice_chat")

IDLE, LISTENING, THINKING, RESPONDING, STOPPED, ERROR = (
    "IDLE",
    "LISTENING",
    "THINKING",
    "RESPONDING",
    "STOPPED",
    "ERROR",
)
_COLOURS = {
    IDLE: "#8a8a8a",
    LISTENING: "#2e8b3d",
    THINKING: "#c98a00",
    RESPONDING: "#2a7ab9",
    STOPPED: "#8a8a8a",
    ERROR: "#c0392b",
}
#: Dialog (SDK) states → the badge.
_DIALOG_STATES = {"Listening": LISTENING, "Thinking": THINKING, "Responding": RESPONDING}
#: What a Dialog without video is asked about a picture.
VISUAL_QUESTION = "What is in front of me?"

Backend = OmniRealtime | Dialog | QwenAudio


class VoiceChat(ipywidgets.VBox):
    """Talk to ``backend`` from the notebook: microphone in, answer out, transcript and usage shown.

    Parameters
    ----------
    backend:
        An :class:`OmniRealtime`, :class:`Dialog` (any mode) or :class:`QwenAudio`, not yet opened
        (VoiceChat opens and closes it) or already open (it is left open).
    recorder, player:
        Widgets to use; new ones by default.
    source:
        A Clip "spoken" into the recorder when the session starts (headless runs, demos).
    realtime:
        Feed ``source`` at the pace of a live microphone (True) or as fast as possible.
    tts:
        QwenAudio only: read its text answers aloud with the offline engine's eSpeak voice.
    camera, frames:
        Give the new Recorder a camera Snapshot button (``camera=True``), or images that stand in
        for the camera (``frames=[…]``, headless runs); see :meth:`snapshot`.

    ``start()`` returns at once; ``await wait_turns(n, timeout=…)`` waits (bounded) for answers;
    ``turns``, ``state``, ``transcript`` and ``timeline`` show what happened; ``stop()`` ends it.
    """

    #: The dialog state: IDLE, LISTENING, THINKING, RESPONDING, STOPPED or ERROR.
    state = traitlets.Unicode(IDLE)

    def __init__(
        self,
        backend: Backend,
        *,
        recorder: Recorder | None = None,
        player: Player | None = None,
        source: Clip | None = None,
        realtime: bool = True,
        tts: bool = False,
        camera: bool = False,
        frames: Iterable[Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if recorder is None:
            recorder = Recorder(source=source, realtime=realtime, camera=camera, frames=frames)
        else:
            if frames is not None:
                raise ConfigError(
                    "frames= is for the Recorder VoiceChat makes", "pass it to your Recorder"
                )
            if source is not None:
                recorder.source, recorder.realtime, recorder.simulated = source, realtime, True
            recorder.camera = recorder.camera or camera
        self.backend = backend
        self.recorder = recorder
        self.player = player if player is not None else Player()
        #: Finished turns (answered, cancelled or failed), oldest first.
        self.turns: list[Turn] = []
        #: Everything the chat saw and did: VAD, answers, barge-ins, player flushes.
        self.timeline = Timeline()
        #: Why the session ended, if it failed.
        self.error: BaseException | None = None
        #: Turns that failed without ending the session (shown on the badge), oldest first.
        self.failures: list[BaseException] = []
        self._bridge = _bridge_for(self, backend, tts)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed: asyncio.Event | None = None
        self._take: bytearray | None = None
        self._live_heard = ""
        self._live_text = ""
        self._turn_tl = Timeline()
        self._last_frame = float("-inf")
        self._frame_tasks: set[asyncio.Task[None]] = set()
        self._ledger_start = len(self._bridge.ledger.entries)
        self._badge = ipywidgets.HTML()
        self._usage_line = ipywidgets.HTML()
        self._notice = ipywidgets.HTML(
            f'<div style="color:#666;font-size:12px">{html.escape(self._bridge.notice)}</div>'
        )
        self._transcript = ipywidgets.HTML()
        header = ipywidgets.HBox([self._badge, self._usage_line])
        header.layout.align_items = "center"
        super().__init__(
            [header, self._notice, self.recorder, self.player, self._transcript], **kwargs
        )
        self.add_class("nbtk-voicechat")
        self.recorder.on_chunk(self._on_chunk)
        self.recorder.observe(self._on_recorder_status, names="status")
        self.recorder.on_snapshot(self._on_snapshot)
        self._render_state("")
        self._render_usage()
        self._render_transcript()

    # ------------------------------------------------------------------ public API
    @property
    def running(self) -> bool:
        """True while the session task is alive."""
        return self._task is not None and not self._task.done()

    @property
    def transcript(self) -> str:
        """What was heard and answered, one ``you:`` / ``assistant:`` line each."""
        lines: list[str] = []
        for turn in self.turns:
            lines.append(f"you: {turn.heard or '(audio)'}")
            suffix = "" if turn.status == "completed" else f" [{turn.status}]"
            lines.append(f"assistant: {turn.text}{suffix}")
        return "\n".join(lines)

    @property
    def notice(self) -> str:
        """What the widget says about the backend (how to talk to it, whether it has a voice)."""
        return self._bridge.notice

    @property
    def usage(self) -> LedgerSummary:
        """Calls, tokens and cost of this chat so far, from the backend's ledger."""
        return LedgerSummary.of(self._entries())

    def start(self) -> asyncio.Task[None]:
        """Open the backend and listen, in a background task on the running loop; returns at once.

        With a ``source`` Clip it is spoken into the recorder as soon as the backend is open.
        """
        if self._task is not None and not self._task.done():
            return self._task
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise ConfigError(
                "VoiceChat.start() needs a running event loop",
                "call it in a notebook cell (the kernel runs one) or inside async code",
            ) from None
        if self.recorder.source is None and is_headless():
            raise AudioError(
                "No browser is attached (headless run), so there is no microphone",
                "pass source=Clip to VoiceChat to speak a recording instead",
            )
        self._loop = loop
        self._changed = asyncio.Event()
        self.error = None
        self._task = loop.create_task(self._run(), name="voice-chat")
        return self._task

    def stop(self) -> asyncio.Task[None] | None:
        """End the session (the backend is closed if VoiceChat opened it); await the returned task
        to know it is closed."""
        if self.recorder.recording:
            self.recorder.stop()
        task = self._task
        if task is not None and not task.done():
            task.cancel()
        return task

    def say(
        self, clip: Clip, *, realtime: bool | None = None
    ) -> asyncio.Task[Clip | None] | Clip | None:
        """Speak ``clip`` into the recorder as if from the microphone (e.g. to talk over an answer).

        Returns what :meth:`Recorder.simulate` returns (a task when paced inside a loop).
        """
        pace = self.recorder.realtime if realtime is None else realtime
        return self.recorder.simulate(clip, realtime=pace)

    async def send_frame(self, image: Any) -> bool:
        """Show the backend a picture (JPEG/PNG bytes, a path or a PIL image).

        OmniRealtime: appended to the speech being heard (send some audio first); it goes with
        the next turn. ``Dialog(video=True)``: a live video frame (the video channel is connected
        on the first one); questions are about the latest frame. Any other Dialog: asked about at
        once ("What is in front of me?"), answered as a turn. At most 2 frames a second: one that
        comes sooner than 0.5 s after the last is dropped (returns False).
        """
        if not self.running:
            raise ConfigError("The chat is not started", "call chat.start() first")
        now = time.monotonic()
        if now - self._last_frame < FRAME_INTERVAL:
            return False
        self._last_frame = now
        self._mark("client", "frame")
        return await self._bridge.frame(image)

    async def snapshot(self, timeout: float = 10.0) -> bytes:
        """Take a camera frame with the recorder (its camera, or the next of its ``frames``),
        :meth:`send_frame` it, and return the JPEG."""
        jpeg = await self.recorder.snapshot(timeout)
        await self.send_frame(jpeg)
        return jpeg

    async def wait_turns(self, n: int = 1, timeout: float = 60.0) -> list[Turn]:
        """Wait until ``n`` turns have finished (at most ``timeout`` seconds); returns them.

        Raises what went wrong if the session fails or a take fails meanwhile, and
        :class:`~nbtoolkit.errors.ConnectionLost` when the time is up.
        """
        await self._wait(lambda: len(self.turns) >= n, timeout, f"{n} turn(s)")
        return self.turns[:n]

    async def wait_state(self, state: str, timeout: float = 60.0) -> None:
        """Wait until the dialog state is ``state`` (at most ``timeout`` seconds)."""
        await self._wait(lambda: self.state == state, timeout, f"state {state}")

    # ------------------------------------------------------------------ the session task
    async def _run(self) -> None:
        try:
            await self._bridge.open()
            self._set_state(LISTENING)
            if self.recorder.source is not None:
                self.recorder.start()
            await self._bridge.run()
        except asyncio.CancelledError:
            self._set_state(STOPPED)
            raise
        except Exception as exc:
            log.warning("VoiceChat session failed: %s", exc)
            self.error = exc
            self._set_state(ERROR, str(exc))
        finally:
            try:
                await self._bridge.close()
            except Exception as exc:  # closing a broken session: nothing left to save
                log.debug("VoiceChat close failed: %s", exc)
            self._poke()

    async def _wait(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        if self._changed is None:
            raise ConfigError("The chat is not started", "call chat.start() first")
        changed = self._changed
        failures = len(self.failures)

        async def until() -> None:
            while not done():
                if self.error is not None:
                    raise self.error
                if len(self.failures) > failures:  # a take failed while we waited: say why
                    raise self.failures[-1]
                if self._task is None or self._task.done():
                    raise ConnectionLost(
                        f"The voice chat ended before {what}", "call chat.start() again"
                    )
                changed.clear()
                await changed.wait()

        try:
            await asyncio.wait_for(until(), timeout)
        except (TimeoutError, asyncio.TimeoutError):
            last = f"; last failure: {self.failures[-1]}" if self.failures else ""
            raise ConnectionLost(
                f"No {what} within {timeout:g} s (state {self.state}, "
                f"{len(self.turns)} turn(s){last})",
                "speak (or check the microphone), or wait longer with a larger timeout",
            ) from None

    def _poke(self) -> None:
        if self._changed is not None:
            self._changed.set()

    # ------------------------------------------------------------------ recorder → bridge
    def _hop(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the session's loop (from any thread), if a session runs."""
        loop = self._loop
        if loop is not None and self.running and not loop.is_closed():
            loop.call_soon_threadsafe(fn, *args)

    def _on_chunk(self, pcm: bytes) -> None:
        self._hop(self._chunk, pcm)

    def _on_recorder_status(self, change: dict[str, Any]) -> None:
        if change["new"] == "recording":
            self._hop(self._take_started)
        elif change["new"] in ("stopped", "error", "idle"):
            self._hop(self._take_ended)

    def _on_snapshot(self, jpeg: bytes) -> None:
        self._hop(self._snapshot_pressed, jpeg)

    def _snapshot_pressed(self, jpeg: bytes) -> None:
        async def send() -> None:
            try:
                await self.send_frame(jpeg)
            except NbToolkitError as exc:  # shown on the badge; the conversation goes on
                self.failures.append(exc)
                self._render_state(str(exc))
                self._poke()

        task = asyncio.get_running_loop().create_task(send(), name="voice-chat-frame")
        self._frame_tasks.add(task)
        task.add_done_callback(self._frame_tasks.discard)

    def _take_started(self) -> None:
        if self._take is None:
            self._take = bytearray()
            self._bridge.take_started()

    def _chunk(self, pcm: bytes) -> None:
        self._take_started()  # a chunk may overtake the status change that opens its take
        assert self._take is not None
        self._take += pcm
        self._bridge.chunk(pcm)

    def _take_ended(self) -> None:
        take, self._take = self._take, None
        if take:
            self._bridge.take_ended(Clip.from_pcm(bytes(take), RATE))

    # ------------------------------------------------------------------ bridge → widgets
    def _mark(self, lane: str, name: str, **detail: Any) -> None:
        self.timeline.mark(lane, name, **detail)
        self._turn_tl.mark(lane, name, **detail)

    def _new_turn_timeline(self) -> Timeline:
        timeline, self._turn_tl = self._turn_tl, Timeline()
        return timeline

    def _set_state(self, state: str, detail: str = "") -> None:
        if state != self.state:
            self._mark("state", state)
        self.state = state
        self._render_state(detail)
        self._poke()

    def _player_audible(self) -> bool:
        """The browser still plays (or holds) answer audio; headless players never do."""
        return bool(self.player.playing or self.player.buffered_ms > 0)

    def _flush_player(self, reason: str) -> None:
        self._mark("client", "player.flush", reason=reason)
        self.player.flush()
        self._poke()

    def _live(self, heard: str | None = None, text: str | None = None) -> None:
        if heard is not None:
            self._live_heard = heard
        if text is not None:
            self._live_text = text
        self._render_transcript()

    def _add_turn(self, turn: Turn) -> None:
        self.turns.append(turn)
        self._live_heard = self._live_text = ""
        self._render_transcript()
        self._render_usage()
        self._poke()

    def _render_state(self, detail: str) -> None:
        colour = _COLOURS.get(self.state, "#8a8a8a")
        extra = (
            f' <span style="color:#c0392b">{html.escape(scrub_secrets(detail))}</span>'
            if detail
            else ""
        )
        self._badge.value = (
            f'<span class="nbtk-state" style="background:{colour};color:white;border-radius:9px;'
            f'padding:2px 10px;font-weight:600;font-size:12px">{self.state}</span>{extra}'
        )

    def _entries(self) -> list[LedgerEntry]:
        return self._bridge.ledger.entries[self._ledger_start :]

    def _render_usage(self) -> None:
        entries = self._entries()
        summary = LedgerSummary.of(entries)
        usage = summary.usage
        offline = bool(entries) and all(e.offline for e in entries)
        cost = pricing.OFFLINE_LABEL if offline else summary.cost_label()
        self._usage_line.value = (
            f'<span class="nbtk-usage" style="color:#555;font-size:12px;margin-left:10px">'
            f"{summary.calls} call(s) · in {usage.input_tokens} tokens "
            f"(audio {usage.input_audio}) · out {usage.output_tokens} tokens "
            f"(audio {usage.output_audio}) · cost {html.escape(cost)}</span>"
        )

    def _render_transcript(self) -> None:
        rows: list[str] = []
        for turn in self.turns:
            status = "" if turn.status == "completed" else f" <i>[{html.escape(turn.status)}]</i>"
            rows.append(_row("you", turn.heard or "(audio)", "#2e8b3d"))
            rows.append(_row("assistant", turn.text, "#2a7ab9", status))
        if self._live_heard or self._live_text:
            rows.append(_row("you", self._live_heard or "…", "#2e8b3d"))
            rows.append(_row("assistant", self._live_text + " …", "#2a7ab9"))
        body = "".join(rows) or '<div style="color:#888">(nothing said yet)</div>'
        self._transcript.value = (
            f'<div class="nbtk-transcript" style="max-height:240px;overflow-y:auto;'
            f'font-size:13px;border-top:1px solid #ddd;padding-top:4px">{body}</div>'
        )


def _row(who: str, text: str, colour: str, suffix: str = "") -> str:
    return (
        f'<div><b style="color:{colour}">{who}:</b> '
        f"{html.escape(scrub_secrets(text))}{suffix}</div>"
    )


# ---------------------------------------------------------------------- bridges
class _Bridge:
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


def _bridge_for(chat: VoiceChat, backend: Any, tts: bool) -> _Bridge:
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


class _OmniBridge(_Bridge):
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
        self.collector = TurnCollector()
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
            chat.player.finish()
            chat._add_turn(self.rt.make_turn(c, chat._new_turn_timeline()))
            self.collector = TurnCollector()
            chat._set_state(LISTENING)


class _TakeBridge(_Bridge):
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
                # one failed take (too short, refused, timed out) need not end the conversation
                chat.failures.append(exc)
                partial = getattr(exc, "partial", None)
                if isinstance(partial, Turn):
                    chat._add_turn(partial)
                chat._set_state(LISTENING, str(exc))
                continue
            chat.player.finish()
            chat._add_turn(turn)
            chat._set_state(LISTENING)

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


class _DialogBridge(_TakeBridge):
    """push2talk: each take is one ``Dialog.say``; a picture is one ``ask_about_image``."""

    def __init__(self, chat: VoiceChat, dialog: Dialog) -> None:
        super().__init__(chat)
        self.dialog = dialog
        self.view = _DialogView(chat, dialog)
        self.opened = False
        self.notice = (
            "Dialog · push to talk: your recording is the whole question; "
            "record over an answer to interrupt it"
        )

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


class _DialogStreamBridge(_Bridge):
    """duplex / tap2talk: one :class:`DialogStream` for the session. Chunks (and SendSpeech, the
    end-of-take check, pictures) go out in order from one sender task; finished turns come back
    from the stream's thread."""

    def __init__(self, chat: VoiceChat, dialog: Dialog) -> None:
        super().__init__(chat)
        self.dialog = dialog
        self.view = _DialogView(chat, dialog)
        self.opened = False
        self.stream: DialogStream | None = None
        self.outbox: asyncio.Queue[Callable[[DialogStream], None]] = asyncio.Queue()
        self.notice = (
            "Dialog · duplex: the server hears where each question ends; "
            "speak over an answer to interrupt it"
            if dialog.mode == "duplex"
            else "Dialog · tap to talk: record, and the server hears where your question ends; "
            "record over an answer to interrupt it"
        )

    @property
    def ledger(self) -> Ledger:
        ledger: Ledger = self.dialog.ledger
        return ledger

    async def open(self) -> None:
        self.view.install()
        if self.dialog.state == "Idle":  # not opened yet
            await asyncio.to_thread(self.dialog.open)
            self.opened = True
        self.stream = await asyncio.to_thread(self.dialog.stream)

    async def close(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            await asyncio.to_thread(stream.close)
        self.view.restore()
        if self.opened:
            self.opened = False
            await asyncio.to_thread(self.dialog.close)

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
                    # one failed turn (no speech heard, an Error event) need not end it
                    chat.failures.append(exc)
                    partial = getattr(exc, "partial", None)
                    if isinstance(partial, Turn):
                        chat._add_turn(partial)
                    chat._set_state(LISTENING, str(exc))
                    continue
                chat.player.finish()
                chat._new_turn_timeline()
                chat._add_turn(turn)
                chat._set_state(LISTENING)
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
