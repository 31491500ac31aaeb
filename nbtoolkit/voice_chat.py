"""``VoiceChat``: Recorder + a speech backend + Player + live transcript + dialog state + usage.

The one bridge between :mod:`nbtoolkit.widgets` and :mod:`nbtoolkit.backends`: this module holds
the widget, and its private helper :mod:`nbtoolkit._voice_chat_bridges` the backend adapters.

Data flows one way: the Recorder's take events (:meth:`Recorder.events
<nbtoolkit.widgets.Recorder.events>`: take started, chunks, take ended with the whole take) →
the chat → its bridge → the backend → the bridge → :mod:`nbtoolkit.voice_chat_events` (state,
heard, said, audio, flush, turn, failed, timeline marks) → :meth:`VoiceChat.apply`, which renders
each on the badge, transcript, player and timeline. The bridge never touches the chat.

Unless comms go over a kernel subshell, ipykernel handles no widget message while a cell runs, so
:meth:`VoiceChat.start` runs the session as a background task on the kernel's event loop and
returns at once; take events and backend events all meet on that loop before anything touches a
widget. What comes from other threads (a Dialog's events, read from the SDK's threads, and widget
handlers, which JupyterLab ≥ 4.4 with ipykernel 7 runs on a subshell thread) hops there with
``loop.call_soon_threadsafe``.

One bridge class per backend family (in :mod:`nbtoolkit._voice_chat_bridges`) turns recorder
takes/chunks into backend calls and backend events into player audio, turns and dialog states:

* :class:`~nbtoolkit.backends.omni.OmniRealtime` — chunks stream as they arrive. With server VAD the
  server finds the turns; speech over an answer cancels it and flushes the player. Without VAD
  (push-to-talk) the end of a take commits and asks for the answer; a new take cancels one playing.
* :class:`~nbtoolkit.backends.dialog.Dialog` in duplex or tap2talk — one
  :class:`~nbtoolkit.backends.dialog_live.DialogLive` (``Dialog.live()``) for the session: chunks
  stream as they arrive (zero frames while the microphone is off), the server's VAD finds the
  turns, and speech over an answer (duplex) or a new take (tap2talk) cancels it and flushes the
  player. A take in which the server heard no speech is reported as a failure.
* :class:`~nbtoolkit.backends.dialog.Dialog` in push2talk — each take is one ``stream(take)``
  (the events of ``ask(take)``) bracketed by SendSpeech/StopSpeech; a take started while the
  answer plays interrupts it (RequestToSpeak) and flushes the player.
* :class:`~nbtoolkit.backends.qwen_audio.QwenAudio` — each take is one ``ask(audio=…)``; the answer
  is text. ``tts=True`` reads it aloud with the offline engine's eSpeak voice (and the UI says so).

Camera frames (:meth:`VoiceChat.send_frame`, :meth:`VoiceChat.snapshot`, the Recorder's Snapshot
button with ``camera=True``): OmniRealtime appends them to the speech being heard, a
``Dialog(video=True)`` takes them as live video frames, and any other Dialog is asked about the
picture at once. At most 2 frames a second are sent; sooner ones are dropped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import html
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import ipywidgets
import traitlets

from nbtoolkit import pricing
from nbtoolkit._voice_chat_bridges import FRAME_INTERVAL, Backend, bridge_for
from nbtoolkit.audio.clip import Clip
from nbtoolkit.config import scrub_secrets
from nbtoolkit.errors import AudioError, ConfigError, ConnectionLost, NbToolkitError
from nbtoolkit.ledger import LedgerEntry, LedgerSummary
from nbtoolkit.results import Reply, Timeline
from nbtoolkit.voice_chat_events import (
    ERROR,
    IDLE,
    LISTENING,
    RESPONDING,
    STOPPED,
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
from nbtoolkit.widgets.player import Player
from nbtoolkit.widgets.recorder import Chunk, Recorder, TakeEvents, TakeStarted, is_headless

__all__ = ["IDLE", "LISTENING", "RESPONDING", "STOPPED", "THINKING", "VoiceChat"]

log = logging.getLogger("nbtoolkit.voice_chat")

_COLOURS = {
    IDLE: "#8a8a8a",
    LISTENING: "#2e8b3d",
    THINKING: "#c98a00",
    RESPONDING: "#2a7ab9",
    STOPPED: "#8a8a8a",
    ERROR: "#c0392b",
}


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
        self.turns: list[Reply] = []
        #: Everything the chat saw and did: VAD, answers, barge-ins, player flushes.
        self.timeline = Timeline()
        #: Why the session ended, if it failed.
        self.error: BaseException | None = None
        #: Turns that failed without ending the session (shown on the badge), oldest first.
        self.failures: list[BaseException] = []
        self._bridge = bridge_for(backend, tts, self.apply)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed: asyncio.Event | None = None
        self._flushed_answer: str | None = None  # the answer the player was last flushed for
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

    async def wait_turns(self, n: int = 1, timeout: float = 60.0) -> list[Reply]:
        """Wait until ``n`` turns have finished and the browser has played their answers out
        (at most ``timeout`` seconds for the turns); returns them.

        Raises what went wrong if the session fails or a take fails meanwhile, and
        :class:`~nbtoolkit.errors.ConnectionLost` when the time is up.
        """
        await self._wait(lambda: len(self.turns) >= n, timeout, f"{n} turn(s)")
        # An answer arrives faster than it plays: whoever speaks next (a person, or a cell
        # after this one) would talk over its tail, a barge-in that flushes it.
        await self.player.played_out()
        return self.turns[:n]

    async def wait_state(self, state: str, timeout: float = 60.0) -> None:
        """Wait until the dialog state is ``state`` (at most ``timeout`` seconds)."""
        await self._wait(lambda: self.state == state, timeout, f"state {state}")

    def apply(self, event: ChatEvent) -> None:
        """Render one event from the bridge on the badge, transcript, player and timeline.

        Call it on the session's event loop (the bridges do); see :mod:`nbtoolkit.voice_chat_events`.
        """
        if isinstance(event, Mark):
            self._mark(event.lane, event.name, **event.detail)
        elif isinstance(event, State):
            self._set_state(event.state, event.detail)
        elif isinstance(event, Heard):
            self._live_heard = event.text
            self._render_transcript()
        elif isinstance(event, Said):
            self._live_text = event.text
            self._render_transcript()
        elif isinstance(event, Audio):
            if event.answer == self._flushed_answer:
                return  # a late piece of the answer that was just flushed
            if self.state != RESPONDING:
                self._mark("audio-out", "first_audio")
                self._set_state(RESPONDING)
            self.player.feed(event.pcm, event.rate)
        elif isinstance(event, Flush):
            self._flush(event)
        elif isinstance(event, TurnDone):
            self.player.finish()  # the answer is complete: the player may run dry now
            marks, self._turn_tl = self._turn_tl, Timeline()
            turn = event.turn
            if not len(turn.timeline):
                turn = dataclasses.replace(turn, timeline=marks)
            self._add_turn(turn)
            self._set_state(LISTENING)
        elif isinstance(event, Failed):
            # keep what arrived, say why on the badge, and listen again
            self.failures.append(event.error)
            partial = getattr(event.error, "partial", None)
            if isinstance(partial, Reply):
                self._add_turn(partial)
            self._set_state(LISTENING, str(event.error))

    # ------------------------------------------------------------------ the session task
    async def _run(self) -> None:
        feed = self.recorder.events()  # from now: the first take cannot start before this
        try:
            await self._bridge.open()
            self._set_state(LISTENING)
            if self.recorder.source is not None:
                self.recorder.start()
            await self._serve(feed)
        except asyncio.CancelledError:
            self._set_state(STOPPED)
            raise
        except Exception as exc:
            log.warning("VoiceChat session failed: %s", exc)
            self.error = exc
            self._set_state(ERROR, str(exc))
        finally:
            feed.close()
            try:
                await self._bridge.close()
            except Exception as exc:  # closing a broken session: nothing left to save
                log.debug("VoiceChat close failed: %s", exc)
            self._poke()

    async def _serve(self, feed: TakeEvents) -> None:
        """Pump the takes into the bridge while it serves the backend; the first to fail ends
        the session."""
        pump = asyncio.create_task(self._pump(feed), name="voice-chat-takes")
        serve = asyncio.create_task(self._bridge.run(), name="voice-chat-bridge")
        try:
            done, _ = await asyncio.wait([pump, serve], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, serve):
                task.cancel()
            await asyncio.wait([pump, serve])
        for task in done:
            if (exc := task.exception()) is not None:
                raise exc

    async def _pump(self, feed: TakeEvents) -> None:
        """Recorder → bridge: each take's start, chunks and end (with the whole take), in order."""
        async for event in feed:
            if isinstance(event, TakeStarted):
                self._bridge.take_started()
            elif isinstance(event, Chunk):
                self._bridge.chunk(event.pcm)
            elif event.clip is not None:
                self._bridge.take_ended(event.clip)

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

    # ------------------------------------------------------------------ camera → bridge
    def _on_snapshot(self, jpeg: bytes) -> None:
        # a widget handler, maybe on a subshell thread: hop to the session's loop, if one runs
        loop = self._loop
        if loop is not None and self.running and not loop.is_closed():
            loop.call_soon_threadsafe(self._snapshot_pressed, jpeg)

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

    # ------------------------------------------------------------------ rendering
    def _mark(self, lane: str, name: str, **detail: Any) -> None:
        self.timeline.mark(lane, name, **detail)
        self._turn_tl.mark(lane, name, **detail)

    def _set_state(self, state: str, detail: str = "") -> None:
        if state != self.state:
            self._mark("state", state)
        self.state = state
        self._render_state(detail)
        self._poke()

    def _flush(self, event: Flush) -> None:
        if event.answer == self._flushed_answer:
            return  # one barge-in, one flush: this answer is gone already
        # the browser still plays (or holds) answer audio? headless players never do
        if event.if_audible and not self.player.audible:
            return
        self._flushed_answer = event.answer
        if event.by:
            self._mark("state", "barge_in", by=event.by)
        self._mark("client", "player.flush", reason=event.reason)
        self.player.flush()
        self._poke()

    def _add_turn(self, turn: Reply) -> None:
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
