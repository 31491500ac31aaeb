"""``Dialog``: spoken turns over DashScope's MultiModalDialog, on the official SDK.

    with Dialog(mode="push2talk") as d:
        reply = d.ask(clip)                              # speech
        reply = d.ask(text="你好")                        # a text prompt
        reply = d.ask(text="What is in front of me?", images=[photo])   # visual Q&A
        reply = d.speak("Hello")                         # TTS only

The SDK runs the WebSocket in its own thread and reports through callbacks (:mod:`._dialog_sdk`);
those only put events on an inbox (and call the user's ``on_audio``/``on_state``/``on_text`` hooks,
in the SDK's thread, so keep them quick). Each call reads that inbox in the caller's thread with a
bounded wait and folds it into a :class:`~nbtoolkit.results.Reply` with
:class:`~nbtoolkit.protocols.dialog.DialogTurnCollector`.

Mode semantics (``upstream.mode``):

* ``push2talk`` — ``ask(clip)`` sends SendSpeech, the audio, then StopSpeech;
* ``tap2talk`` — SendSpeech and the audio, then silence until the server's VAD sends SpeechEnded;
* ``duplex`` — the audio and then silence; the server's VAD finds the turns, and speech while it
  answers interrupts it (barge-in).

Audio is sent in 100 ms frames of 16 kHz PCM16, as fast as the socket takes them unless
``ask(clip, pace=True)`` (real time, as a microphone would). For a live microphone, :meth:`Dialog.live`
opens a :class:`~nbtoolkit.backends.dialog_live.DialogLive`.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from dashscope.multimodal.multimodal_request_params import (
    BizParams,
    ClientInfo,
    Device,
    Downstream,
    RequestParameters,
    RequestToRespondParameters,
    Upstream,
    get_random_uuid,
)

from nbtoolkit.audio.clip import Clip
from nbtoolkit.audio.features import is_silent
from nbtoolkit.backends._base import Client, Emit, Question
from nbtoolkit.backends._dialog_sdk import (
    Callback,
    Inbox,
    ObservedDialog,
    closed_error,
    error_from,
    image_param,
    to_jpeg,
)
from nbtoolkit.backends._sdk import CONNECT_FAILED, TIMED_OUT
from nbtoolkit.backends.dialog_live import FRAME_MS, DialogLive
from nbtoolkit.config import Endpoints, Secret
from nbtoolkit.errors import (
    AudioError,
    BackendError,
    ConfigError,
    ConnectionLost,
)
from nbtoolkit.events import (
    AudioDelta,
    Heard,
    SpeechStarted,
    SpeechStopped,
    StateChanged,
    TextDelta,
)
from nbtoolkit.ledger import Ledger
from nbtoolkit.protocols.dialog import INPUT_RATE, MODES, DialogTurnCollector
from nbtoolkit.protocols.params import MAX_UTTERANCE_SECONDS, dialog_start_problem
from nbtoolkit.protocols.tokens import audio_tokens, text_tokens
from nbtoolkit.results import Reply, Timeline, Usage
from nbtoolkit.retry import RetryPolicy, retrying

__all__ = ["FRAME_INTERVAL", "Dialog", "DialogLive", "to_jpeg"]

log = logging.getLogger("nbtoolkit.dialog")

#: Minimum seconds between two video frames (LiveAI takes at most 2 frames per second).
FRAME_INTERVAL = 0.5
#: Silence sent after the speech in tap2talk/duplex, at most, for the server's VAD to end the turn.
MAX_TRAILING_SILENCE = 3.0
#: The question asked with images when none is given.
DEFAULT_IMAGE_QUESTION = "What is in front of me?"

AudioHook = Callable[[Clip], None]
StateHook = Callable[[str], None]
TextHook = Callable[[str, str, bool], None]
TurnHook = Callable[[Reply], None]
SignalHook = Callable[[], None]


class Dialog(Client):
    """A MultiModalDialog session: ``with Dialog() as d: reply = d.ask(clip)``.

    It connects on first use (or on ``with``/:meth:`open`) and stays connected until
    :meth:`close`. ``ask`` takes ``pace=True`` (send speech at real time) as an option.

    ``on_audio(clip)`` gets each TTS chunk, ``on_state(state)`` each dialog state,
    ``on_text(role, text, final)`` the growing transcripts (role "user" or "assistant") and
    ``on_speech_started()`` the moment the server hears the user begin; all are called in the SDK's
    thread. While a :meth:`live` session runs, ``on_turn(reply)`` gets each finished turn and
    ``on_flush()`` is called when the server cancels an answer, both in its thread.
    """

    options = frozenset({"pace"})

    def __init__(
        self,
        endpoints: Endpoints | None = None,
        *,
        model: str = "multimodal-dialog",
        api_key: str | Secret | None = None,
        mode: str = "push2talk",
        voice: str = "longxiaochun_v2",
        sample_rate: int = 24000,
        video: bool = False,
        ledger: Ledger | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
        on_audio: AudioHook | None = None,
        on_state: StateHook | None = None,
        on_text: TextHook | None = None,
        on_turn: TurnHook | None = None,
        on_flush: SignalHook | None = None,
        on_speech_started: SignalHook | None = None,
        app_id: str = "",
        workspace_id: str = "",
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"Unknown dialog mode {mode!r}", f"use one of {', '.join(MODES)}")
        problem = dialog_start_problem(
            {"upstream": {"mode": mode}, "downstream": {"sample_rate": sample_rate, "voice": voice}}
        )
        if problem is not None:
            raise problem.error(problem.param.rsplit(".", 1)[-1] + "=")
        if not isinstance(video, bool):
            raise ConfigError(f"video= must be True or False, not {video!r}", "e.g. video=True")
        super().__init__(
            endpoints, model=model, api_key=api_key, ledger=ledger, retry=retry, timeout=timeout
        )
        self.mode = mode
        self.voice = voice
        self.sample_rate = int(sample_rate)
        self.video = video
        self.on_audio, self.on_state, self.on_text = on_audio, on_state, on_text
        self.on_turn, self.on_flush = on_turn, on_flush
        self.on_speech_started = on_speech_started
        self.app_id, self.workspace_id = app_id, workspace_id
        self.state = "Idle"
        self.dialog_id: str | None = None
        self.task_id: str | None = None
        self._inbox = Inbox()
        self._sdk: Any = None
        self._lock = threading.RLock()  # one reader of the inbox at a time
        self._timeline: Timeline | None = None
        self._stopping = False
        self._last_frame = float("-inf")
        self._clock = time.monotonic
        self._live: DialogLive | None = None
        self._emit: Emit | None = None  # where a stream's events go, while one runs
        self._call_deadline: float | None = None  # when the running call must be over

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Dialog:
        self.open()
        return self

    async def __aenter__(self) -> Dialog:
        await asyncio.to_thread(self.open)
        return self

    def open(self) -> None:
        """Connect, send Start, and wait until the server is Listening; a failed connect or a
        refused Start (429, 5xx) is retried per :attr:`retry`."""
        if self._sdk is not None:
            return
        retrying(self._open_once, self.retry)

    def _open_once(self) -> None:
        self._inbox, self._stopping, self.state = Inbox(), False, "Idle"
        params = RequestParameters(
            upstream=Upstream(
                type="AudioAndVideo" if self.video else "AudioOnly",
                mode=self.mode,
                audio_format="pcm",
                sample_rate=INPUT_RATE,
            ),
            downstream=Downstream(voice=self.voice, sample_rate=self.sample_rate),
            client_info=ClientInfo(user_id="nbtoolkit", device=Device(uuid="nbtoolkit")),
        )
        self.task_id = get_random_uuid()
        self._sdk = ObservedDialog(
            self._inbox,
            app_id=self.app_id,
            request_params=params,
            multimodal_callback=Callback(self),
            workspace_id=self.workspace_id or None,
            url=self.endpoints.websocket_base,
            api_key=self.endpoints.api_key.reveal(),
            model=self.model,
        )
        timeline = Timeline()
        timeline.mark("client", "connect")
        try:
            self._sdk.start("", task_id=self.task_id)
        except Exception as exc:  # the socket did not open: the reason is on the inbox
            self._abandon()
            raise self._failure_from_inbox(exc) from exc
        collector = DialogTurnCollector()
        try:
            self._pump(collector, timeline, until=lambda: self.state == "Listening")
        except BackendError:
            self._abandon()
            raise

    def close(self) -> None:
        """Send Stop and wait (bounded) for the server to close."""
        if self._sdk is None:
            return
        if self._live is not None:
            self._live.close()
        self._stopping = True
        try:
            if not self._inbox.closed.is_set():
                self._sdk.stop()
                self._inbox.closed.wait(min(self.timeout, 5.0))
        except Exception as exc:  # closing a broken socket: nothing left to save
            log.debug("Dialog stop failed: %s", exc)
        finally:
            self._abandon()

    def _abandon(self) -> None:
        sdk, self._sdk = self._sdk, None
        if sdk is not None:
            sdk.close()

    def _failure_from_inbox(self, exc: Exception) -> BackendError:
        try:
            while True:
                item = self._inbox.items.get(timeout=1.0)
                if item[0] == "error":
                    return error_from(item[1], None, local=self.endpoints.local)
        except queue.Empty:
            return ConnectionLost(
                f"Cannot open the dialog WebSocket at {self.endpoints.websocket_base}: {exc}",
                "check the endpoint (nbtoolkit.connect()) and the network",
                code=CONNECT_FAILED,
            )

    # ------------------------------------------------------------------ the inbox
    def _require_open(self) -> Any:
        if self._sdk is None or self._inbox.closed.is_set():
            raise ConnectionLost(
                "The dialog is not connected", "use `with Dialog(...) as d:` or call d.open()"
            )
        return self._sdk

    def _require_no_live(self) -> None:
        if self._live is not None:
            raise ConfigError(
                "A live session is reading this dialog's answers",
                "use the live session's own send_audio/ask/speak, or close it first",
            )

    def _handle(
        self, item: tuple[Any, ...], collector: DialogTurnCollector, timeline: Timeline
    ) -> None:
        kind = item[0]
        if kind == "event":
            name, output = item[1], item[2]
            if name == "DialogStateChanged":
                timeline.mark("state", output.get("state", ""))
            else:
                detail = {k: output[k] for k in ("text", "finished") if k in output}
                timeline.mark("server", name, **detail)
            said = collector.text
            collector.event(name, output)
            if self._emit is not None:
                self._emit_event(name, output, said, collector.text)
        elif kind == "audio":
            if not collector.audio:
                timeline.mark("audio-out", "first_audio")
            collector.audio += item[1]
            if self._emit is not None and len(item[1]) >= 2:
                pcm = item[1][: len(item[1]) // 2 * 2]
                self._emit(AudioDelta(Clip.from_pcm(pcm, self.sample_rate)))
        elif kind == "warning":
            timeline.mark("client", item[1], **item[2])
            log.warning("dialog: %s %s", item[1], item[2])
        elif kind == "error" and not self._stopping:
            partial = self._partial(collector, timeline, "failed")
            raise error_from(item[1], partial, local=self.endpoints.local)
        elif kind == "close" and not self._stopping:
            code, msg = item[1], item[2]
            timeline.mark("server", "close", code=code)
            partial = self._partial(collector, timeline, "failed")
            raise closed_error(code, msg, partial, local=self.endpoints.local)

    def _emit_event(self, name: str, output: Mapping[str, Any], before: str, after: str) -> None:
        """The stream event for a server event of the running call (``before``/``after``: the
        answer's text around it, for the delta)."""
        assert self._emit is not None
        if name == "DialogStateChanged":
            self._emit(StateChanged(str(output.get("state", ""))))
        elif name == "SpeechStarted":
            self._emit(SpeechStarted())
        elif name == "SpeechEnded":
            self._emit(SpeechStopped())
        elif name == "SpeechContent":
            self._emit(Heard(str(output.get("text") or ""), bool(output.get("finished"))))
        elif name == "RespondingContent" and after.startswith(before) and after != before:
            self._emit(TextDelta(after[len(before) :]))

    def _pump(
        self,
        collector: DialogTurnCollector,
        timeline: Timeline,
        *,
        until: Callable[[], bool] | None = None,
        block: bool = True,
    ) -> None:
        """Handle inbox items until ``until()`` (default: the turn is done), or only what is
        waiting when ``block`` is false. Raises ConnectionLost after ``timeout`` seconds."""
        done = until or (lambda: collector.done)
        deadline = time.monotonic() + self.timeout
        if self._call_deadline is not None:  # a call's bound covers all its waits together
            deadline = min(deadline, self._call_deadline)
        while not done():
            wait = deadline - time.monotonic()
            if not block:
                wait = 0
            elif wait <= 0:
                raise ConnectionLost(
                    f"No answer from the dialog server within {self.timeout:.0f} s",
                    "the server may be overloaded; raise Dialog(timeout=…) or try again",
                    code=TIMED_OUT,
                    partial=self._partial(collector, timeline, "failed"),
                )
            try:
                item = (
                    self._inbox.items.get(timeout=wait)
                    if wait > 0
                    else self._inbox.items.get_nowait()
                )
            except queue.Empty:
                if not block:
                    return
                continue
            self._handle(item, collector, timeline)

    # ------------------------------------------------------------------ turns
    def _partial(self, c: DialogTurnCollector, timeline: Timeline, status: str) -> Reply:
        audio = (
            Clip.from_pcm(c.audio[: len(c.audio) // 2 * 2], self.sample_rate)
            if len(c.audio) >= 2
            else None
        )
        return Reply(
            heard=c.heard,
            text=c.text,
            audio=audio,
            usage=self._usage(c),
            timeline=timeline,
            status=status,
            request_id=self.task_id,
            model=self.model,
            local=self.endpoints.local,
        )

    def _usage(self, c: DialogTurnCollector) -> Usage:
        """The server's usage; without one (the service does not report it), counted here by the
        offline engine's documented rule, so the ledger still shows the turn's size."""
        local = self.endpoints.local
        if c.usage is not None:
            return Usage.from_dashscope(c.usage, model=self.model, local=local)
        return Usage(
            model=self.model,
            input_text=0 if c.sent_seconds else text_tokens(c.heard),
            input_audio=audio_tokens(c.sent_seconds) if c.sent_seconds else 0,
            output_text=text_tokens(c.text),
            output_audio=audio_tokens(len(c.audio) / 2 / self.sample_rate) if c.audio else 0,
            local=local,
        )

    def _ready(self, timeline: Timeline) -> tuple[Any, DialogTurnCollector]:
        """Handle what arrived since the last turn and wait until the server listens."""
        sdk = self._require_open()
        collector = DialogTurnCollector()
        self._pump(collector, timeline, until=lambda: False, block=False)
        if self.state != "Listening":
            self._pump(collector, timeline, until=lambda: self.state == "Listening")
        return sdk, DialogTurnCollector()

    def _exchange(
        self, send: Callable[[Any], None], timeline: Timeline, name: str
    ) -> DialogTurnCollector:
        """Run one round: wait for Listening, ``send(sdk)``, collect until Listening again."""
        sdk, collector = self._ready(timeline)
        timeline.mark("client", name)
        send(sdk)
        self._pump(collector, timeline)
        return collector

    def _turn(
        self,
        run: Callable[[Timeline], list[DialogTurnCollector]],
        emit: Emit | None = None,
        budget: float = 0.0,
    ) -> Reply:
        """Run the rounds of one turn; the last round is the answer, usage covers them all. The
        whole turn is bounded by ``timeout`` plus ``budget`` (the time its audio takes to send)."""
        with self._lock:
            self._require_no_live()
            self.ledger.check(local=self.endpoints.local)
            if self._sdk is None:
                self.open()
            timeline = self._timeline = Timeline()
            self._emit = emit
            t0 = time.monotonic()
            self._call_deadline = t0 + self.timeout + budget
            try:
                rounds = run(timeline)
            except BackendError as exc:
                if isinstance(exc.partial, Reply):  # what arrived was produced, so it counts
                    self._record(exc.partial.usage, t0)
                raise
            finally:
                self._timeline = None
                self._emit = None
                self._call_deadline = None
            reply = self._partial(rounds[-1], timeline, rounds[-1].status)
            for earlier in rounds[:-1]:
                reply.usage = self._usage(earlier) + reply.usage
            reply.latency = time.monotonic() - t0
            self._record(reply.usage, t0)
            return reply

    def _record(self, usage: Usage, t0: float) -> None:
        self.ledger.record(
            usage,
            backend="dialog",
            kind="turn",
            request_id=self.task_id,
            latency=time.monotonic() - t0,
        )

    def _answer(self, question: Question, options: Mapping[str, Any], emit: Emit | None) -> Reply:
        pace = options.get("pace", False)
        if not isinstance(pace, bool):
            raise ConfigError(f"pace= must be True or False, not {pace!r}", "e.g. pace=True")
        if question.audio is not None:
            if question.text or question.images:
                raise ConfigError(
                    "A dialog turn is either speech or a text prompt, not both",
                    "ask(clip) for speech, or ask(text=…, images=[…]) for a prompt",
                )
            return self._say(question.audio, pace, emit)
        text = question.text or ""
        if question.images:
            return self._ask_about_images(question.images, text or DEFAULT_IMAGE_QUESTION, emit)
        return self._turn(
            lambda tl: [self._exchange(lambda s: s.request_to_respond("prompt", text), tl, "ask")],
            emit,
        )

    def _say(self, clip: Any, pace: bool, emit: Emit | None) -> Reply:
        """Speak ``clip`` (a Clip, path or encoded bytes) and return the answer."""
        audio = Clip.load(clip).resample(INPUT_RATE)
        if audio.duration > MAX_UTTERANCE_SECONDS:
            raise AudioError(
                f"The question is {audio.duration:.0f} s long; ask() sends at most "
                f"{MAX_UTTERANCE_SECONDS:.0f} s",
                "cut it (clip[:30]) or stream a long recording in a live session (d.live())",
            )
        if is_silent(audio):
            raise AudioError(
                f"No speech was heard in the {audio.duration:.1f} s sent: the clip is silent",
                "check the microphone (or the file) and record the question again",
            )
        frames = list(audio.chunks(FRAME_MS))

        def run(timeline: Timeline) -> list[DialogTurnCollector]:
            sdk, collector = self._ready(timeline)
            collector.sent_seconds = audio.duration
            if self.mode != "duplex":
                timeline.mark("client", "SendSpeech")
                sdk.start_speech()
            timeline.mark("audio-in", "speech", seconds=round(audio.duration, 3))
            self._send_frames(sdk, frames, collector, timeline, pace=pace)
            if self.mode == "push2talk":
                timeline.mark("client", "StopSpeech")
                sdk.stop_speech()
                # The transcript comes before SpeechEnded; a server that heard no words starts no
                # round after it, which a HeartBeat sent after SpeechEnded shows (frames in order).
                self._pump(
                    collector, timeline, until=lambda: collector.speech_ended or collector.done
                )
                if not collector.done and not collector.heard.strip():
                    beats = collector.heartbeats
                    sdk.send_heart_beat()
                    self._pump(
                        collector,
                        timeline,
                        until=lambda: collector.heartbeats > beats or collector.responding,
                    )
                    if not collector.heard.strip() and not collector.responding:
                        raise AudioError(
                            f"No speech was heard in the {audio.duration:.1f} s sent (the server "
                            "recognised no words)",
                            "speak louder or closer, or check the microphone and record again",
                        )
            else:
                silence = Clip.silence(MAX_TRAILING_SILENCE, INPUT_RATE).chunks(FRAME_MS)
                timeline.mark("audio-in", "silence")
                self._send_frames(
                    sdk,
                    list(silence),
                    collector,
                    timeline,
                    pace=pace,
                    stop=lambda: collector.speech_ended or collector.done,
                )
                if not collector.speech_started:
                    # The server handles frames in order: once it answers a HeartBeat sent after
                    # the audio, its VAD has seen all of it.
                    sdk.send_heart_beat()
                    self._pump(
                        collector,
                        timeline,
                        until=lambda: collector.speech_started or collector.heartbeats > 0,
                    )
                    if not collector.speech_started:
                        raise AudioError(
                            f"No speech was heard in the {audio.duration:.1f} s sent (the "
                            "server's voice detector found none)",
                            "speak louder or closer, or use mode='push2talk'",
                        )
            self._pump(collector, timeline)
            return [collector]

        sending = (audio.duration if pace else 0.0) + MAX_TRAILING_SILENCE
        return self._turn(run, emit, budget=sending)

    def _send_frames(
        self,
        sdk: Any,
        frames: list[bytes],
        collector: DialogTurnCollector,
        timeline: Timeline,
        *,
        pace: bool,
        stop: Callable[[], bool] = lambda: False,
    ) -> None:
        t0 = time.monotonic()
        for i, frame in enumerate(frames):
            self._pump(collector, timeline, until=lambda: False, block=False)
            if stop():
                return
            if pace:  # real time: handle server events while waiting for the frame's moment
                due = t0 + i * FRAME_MS / 1000
                while (left := due - time.monotonic()) > 0:
                    try:
                        self._handle(self._inbox.items.get(timeout=left), collector, timeline)
                    except queue.Empty:
                        break
            sdk.send_audio_data(frame)

    def speak(self, text: str) -> Reply:
        """Have the server say ``text`` (RequestToRespond "transcript": TTS only, no LLM)."""
        return self._turn(
            lambda tl: [
                self._exchange(lambda s: s.request_to_respond("transcript", text), tl, "speak")
            ]
        )

    def _ask_about_images(self, images: tuple[Any, ...], question: str, emit: Emit | None) -> Reply:
        """Visual Q&A. The question goes first; when the server answers with the ``visual_qa``
        command (it wants a photo) the images follow with the question. If it answers without the
        command, the question is asked again with the images attached (the official sample's
        direct form). The Reply is the image answer; its usage covers both rounds and its timeline
        shows both."""
        params = RequestToRespondParameters(images=[image_param(to_jpeg(i)) for i in images])

        def run(timeline: Timeline) -> list[DialogTurnCollector]:
            first = self._exchange(
                lambda s: s.request_to_respond("prompt", question), timeline, "ask"
            )
            timeline.mark("client", "visual_qa" if first.command("visual_qa") else "no_visual_qa")
            second = self._exchange(
                lambda s: s.request_to_respond("prompt", question, parameters=params),
                timeline,
                "send_image",
            )
            second.heard = question
            return [first, second]

        return self._turn(run, emit)

    # ------------------------------------------------------------------ video, control
    def connect_video(self) -> None:
        """Open the LiveAI video channel (needs ``Dialog(video=True)``); then :meth:`send_frame`."""
        if not self.video:
            raise ConfigError(
                "This Dialog was opened without video", "create it with Dialog(..., video=True)"
            )
        videos = [{"action": "connect", "type": "voicechat_video_channel"}]
        params = RequestToRespondParameters(biz_params=BizParams(videos=videos))
        self._require_open().request_to_respond("prompt", "", parameters=params)

    def send_frame(self, image: Any) -> bool:
        """Send one video frame (UpdateInfo). At most 2 frames per second are sent: a frame that
        comes sooner than 0.5 s after the last one is dropped (returns False), since a live
        picture is only useful fresh."""
        now = self._clock()
        if now - self._last_frame < FRAME_INTERVAL:
            return False
        jpeg = to_jpeg(image)
        self._require_open().update_info(RequestToRespondParameters(images=[image_param(jpeg)]))
        self._last_frame = now
        return True

    def interrupt(self) -> None:
        """Ask to speak (RequestToSpeak): the server stops its answer and listens. Safe to call
        from another thread or a hook while a turn is running."""
        if self._timeline is not None:
            self._timeline.mark("client", "RequestToSpeak")
        self._require_open().interrupt()

    def heartbeat(self) -> None:
        """Send HeartBeat and wait (bounded) for the server's HeartBeat."""
        with self._lock:
            self._require_no_live()
            sdk = self._require_open()
            seen = DialogTurnCollector()
            sdk.send_heart_beat()
            self._pump(seen, Timeline(), until=lambda: seen.heartbeats > 0)

    def live(self, *, fill_silence: bool | None = None) -> DialogLive:
        """Start a live session (the dialog must be open): ``with d.live() as s: s.send_audio(pcm)``.

        ``fill_silence`` (default: on in tap2talk and duplex) sends zero frames, 10 a second,
        once no audio was sent for :data:`FILL_AFTER` seconds, so the server's VAD hears the end of speech while the microphone is
        quiet or stopped. Only one live session at a time; ask/speak wait until it is closed.
        Its turns come from ``next_turn()``, or as :mod:`nbtoolkit.events` with ``async for``.
        """
        with self._lock:
            self._require_open()
            self._require_no_live()
            self.ledger.check(local=self.endpoints.local)
            fill = self.mode != "push2talk" if fill_silence is None else fill_silence
            self._live = DialogLive(self, fill_silence=fill)
            return self._live

    def __repr__(self) -> str:
        where = "local" if self.endpoints.local else self.endpoints.region
        return f"Dialog(mode={self.mode!r}, state={self.state!r}, {where})"
