"""``Dialog``: spoken turns over DashScope's MultiModalDialog, on the official SDK.

The SDK runs the WebSocket in its own thread and reports through callbacks; those only put events
on a queue (and call the user's ``on_audio``/``on_state``/``on_text`` hooks, in the SDK's thread, so
keep them quick). Each call here then reads that queue in the caller's thread with a bounded wait and
folds it into a :class:`~nbtoolkit.results.Turn` with
:class:`~nbtoolkit.protocols.dialog.TurnCollector`.

Mode semantics (``upstream.mode``):

* ``push2talk`` — :meth:`Dialog.say` sends SendSpeech, the audio, then StopSpeech;
* ``tap2talk`` — SendSpeech and the audio, then silence until the server's VAD sends SpeechEnded;
* ``duplex`` — the audio and then silence; the server's VAD finds the turns, and speech while it
  answers interrupts it (barge-in).

Audio is sent in 100 ms frames of 16 kHz PCM16, as fast as the socket takes them unless
``say(..., pace=True)`` (real time, as a microphone would).

For a live microphone, :meth:`Dialog.stream` opens a :class:`DialogStream`: audio goes out as it
comes (``send_audio``), zero frames fill the gaps while nothing is sent (the server's VAD needs a
running clock to hear the end of speech, as in the official demos), and each turn is reported as
it finishes (``next_turn()`` / ``turns()`` and the ``on_turn`` hook), barge-ins included: speech
over an answer makes the server stop it, the turn is reported "cancelled" and ``on_flush`` is
called so a player drops what it still holds.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dashscope.multimodal.multimodal_dialog import MultiModalCallback, MultiModalDialog
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
from nbtoolkit.backends._sdk import CONNECT_FAILED, TIMED_OUT
from nbtoolkit.config import Endpoints
from nbtoolkit.errors import (
    AudioError,
    AuthError,
    BackendError,
    ConfigError,
    ConnectionLost,
    ImageError,
    NbToolkitError,
    ProtocolError,
    ServerError,
)
from nbtoolkit.protocols.dialog import (
    INPUT_RATE,
    MAX_IMAGE_BYTES,
    MODES,
    error_class,
)
from nbtoolkit.protocols.dialog import DialogTurnCollector as TurnCollector
from nbtoolkit.results import Timeline, Turn, Usage

__all__ = ["FRAME_INTERVAL", "Dialog", "DialogStream", "to_jpeg"]

log = logging.getLogger("nbtoolkit.dialog")

#: Minimum seconds between two video frames (LiveAI takes at most 2 frames per second).
FRAME_INTERVAL = 0.5
#: Silence sent after the speech in tap2talk/duplex, at most, for the server's VAD to end the turn.
MAX_TRAILING_SILENCE = 3.0
_FRAME_MS = 100

_KNOWN_EVENTS = {
    "Started",
    "Stopped",
    "DialogStateChanged",
    "RequestAccepted",
    "SpeechStarted",
    "SpeechEnded",
    "SpeechContent",
    "RespondingStarted",
    "RespondingEnded",
    "RespondingContent",
    "Error",
    "HeartBeat",
}

AudioHook = Callable[[Clip], None]
StateHook = Callable[[str], None]
TextHook = Callable[[str, str, bool], None]
TurnHook = Callable[[Turn], None]
SignalHook = Callable[[], None]


# --------------------------------------------------------------------------- images
def to_jpeg(image: Any, limit: int = MAX_IMAGE_BYTES) -> bytes:
    """JPEG bytes of ``image`` (bytes, path or PIL image) no larger than ``limit``.

    A JPEG already under the limit is sent unchanged; anything else is re-encoded with Pillow at
    falling quality, then at smaller sizes, until it fits.
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        img = image
    else:
        if isinstance(image, (str, Path)):
            try:
                raw = Path(image).read_bytes()
            except OSError as exc:
                raise ImageError(
                    f"Cannot read the image {str(image)!r}: {exc}", "check the path"
                ) from exc
        elif isinstance(image, (bytes, bytearray, memoryview)):
            raw = bytes(image)
        else:
            raise ImageError(
                f"A {type(image).__name__} is not an image",
                "pass JPEG/PNG bytes, a path or a PIL image",
            )
        if raw[:3] == b"\xff\xd8\xff" and len(raw) <= limit:
            return raw
        try:
            img = Image.open(io.BytesIO(raw))
            img.load()
        except (UnidentifiedImageError, OSError) as exc:
            raise ImageError(
                "The data is not an image Pillow can read", "pass a JPEG or PNG"
            ) from exc
    img = img.convert("RGB")
    for scale in (1.0, 0.75, 0.5, 0.35, 0.25, 0.15):
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        scaled = img if scale == 1.0 else img.resize(size, Image.Resampling.LANCZOS)
        for quality in (85, 70, 55, 40):
            buf = io.BytesIO()
            scaled.save(buf, "JPEG", quality=quality, optimize=True)
            if buf.tell() <= limit:
                return buf.getvalue()
    raise ImageError(
        f"The image does not fit in {limit // 1024} KB even at 15 % size",
        "crop it or send a simpler picture",
    )


def _image_param(jpeg: bytes) -> dict[str, str]:
    return {"type": "base64", "value": base64.b64encode(jpeg).decode("ascii")}


# --------------------------------------------------------------------------- SDK glue
class _Inbox:
    """What the SDK's thread reports: ``(kind, *data)`` tuples on a queue."""

    def __init__(self) -> None:
        self.items: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.closed = threading.Event()

    def put(self, *item: Any) -> None:
        self.items.put(item)


def _call_hook(fn: Callable[..., None] | None, *args: Any) -> None:
    if fn is None:
        return
    try:
        fn(*args)
    except Exception:  # a user's hook must not kill the SDK's thread
        log.exception("Dialog hook %r failed", fn)


class _Callback(MultiModalCallback):
    """SDK callbacks → the dialog's inbox (and the user's hooks)."""

    def __init__(self, dialog: Dialog) -> None:
        self.dialog = dialog
        self.inbox = dialog._inbox

    def on_started(self, dialog_id: str) -> None:
        self.dialog.dialog_id = dialog_id
        self.inbox.put("event", "Started", {"dialog_id": dialog_id})

    def on_state_changed(self, state: Any) -> None:
        self.dialog.state = state.value
        self.inbox.put("event", "DialogStateChanged", {"state": state.value})
        _call_hook(self.dialog.on_state, state.value)

    def on_speech_started(self) -> None:
        self.inbox.put("event", "SpeechStarted", {})
        _call_hook(self.dialog.on_speech_started)

    def on_speech_ended(self) -> None:
        self.inbox.put("event", "SpeechEnded", {})

    def on_speech_content(self, payload: Any) -> None:
        out = (payload or {}).get("output") or {}
        self.inbox.put("event", "SpeechContent", out)
        _call_hook(
            self.dialog.on_text, "user", str(out.get("text") or ""), bool(out.get("finished"))
        )

    def on_responding_started(self) -> None:
        self.inbox.put("event", "RespondingStarted", {})

    def on_responding_content(self, payload: Any) -> None:
        out = (payload or {}).get("output") or {}
        self.inbox.put("event", "RespondingContent", out)
        text, final = str(out.get("text") or ""), bool(out.get("finished"))
        _call_hook(self.dialog.on_text, "assistant", text, final)

    def on_responding_ended(self, payload: Any) -> None:
        payload = payload or {}
        self.inbox.put("event", "RespondingEnded", {**(payload.get("output") or {}), **payload})

    def on_request_accepted(self) -> None:
        self.inbox.put("event", "RequestAccepted", {})

    def on_speech_audio_data(self, data: bytes) -> None:
        self.inbox.put("audio", bytes(data))
        # a frame of an answer the server has just abandoned (barge-in) must not reach a player
        responding = self.dialog.state == "Responding"
        if self.dialog.on_audio is not None and len(data) >= 2 and responding:
            clip = Clip.from_pcm(data[: len(data) // 2 * 2], self.dialog.sample_rate)
            _call_hook(self.dialog.on_audio, clip)

    def on_stopped(self) -> None:
        self.inbox.put("event", "Stopped", {})

    def on_error(self, error: Any) -> None:
        self.inbox.put("error", error)

    def on_close(self, close_status_code: int, close_msg: str) -> None:
        self.inbox.closed.set()
        self.inbox.put("close", close_status_code, close_msg)


class _ObservedDialog(MultiModalDialog):
    """The SDK's dialog, reporting what its parser drops silently (bad JSON, unknown events,
    HeartBeat) so a Turn's timeline shows it."""

    def __init__(self, inbox: _Inbox, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._inbox = inbox

    def _wait_for_connection(self) -> None:
        # The SDK polls 5 s even when the handshake was refused; stop at the refusal.
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            sock = getattr(self.ws, "sock", None)
            if (sock is not None and sock.connected) or self._inbox.closed.wait(0.02):
                return

    def request_to_respond_prompt(self, text: str) -> None:
        """Ask in text (the SDK declares this but leaves it abstract)."""
        self.request_to_respond("prompt", text)

    def _on_message(self, ws: Any, message: Any) -> None:
        if isinstance(message, str):
            try:
                doc = json.loads(message)
                event = ((doc.get("payload") or {}).get("output") or {}).get("event")
            except (ValueError, AttributeError):
                self._inbox.put("warning", "malformed_frame", {"size": len(message)})
                return
            if event == "HeartBeat":
                self._inbox.put("event", "HeartBeat", {})
            elif event is not None and event not in _KNOWN_EVENTS:
                self._inbox.put("warning", "unknown_event", {"event": str(event)[:64]})
        super()._on_message(ws, message)


def _error_from(error: Any, partial: Turn | None) -> BackendError:
    """Our exception for what the SDK passed to ``on_error``: a JSON string (Error event or
    task-failed) or a transport exception."""
    if isinstance(error, str):
        try:
            doc = json.loads(error)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            header = doc.get("header") or {}
            output = (doc.get("payload") or {}).get("output") or {}
            code = output.get("error_code") or header.get("error_code")
            message = output.get("error_message") or header.get("error_message") or code
            status = header.get("status_code")
            cls = error_class(code, status)
            return cls(
                f"The dialog server refused: {message}",
                _fix_for(cls),
                status=status,
                code=code,
                request_id=header.get("task_id"),
                partial=partial,
            )
    # websocket-client puts the HTTP status of a refused handshake, or the close code, here
    status = getattr(error, "status_code", None)
    cls = error_class(None, status) if isinstance(status, int) else ConnectionLost
    if cls is ProtocolError:
        cls = ConnectionLost
    if cls is AuthError:
        problem = f"The dialog server refused the connection (HTTP/close status {status})"
    else:
        problem = f"The dialog connection failed: {type(error).__name__}: {error}"
    return cls(
        problem,
        _fix_for(cls),
        status=status,
        partial=partial,
    )


def _fix_for(cls: type[BackendError]) -> str:
    return {
        AuthError: "check DASHSCOPE_API_KEY (or use nbtoolkit.connect() for the local server)",
        ServerError: "the service failed; try again in a moment",
        ConnectionLost: "check the network and open a new Dialog; the partial turn is in err.partial",
    }.get(cls, "check the request (see err.code)")


# --------------------------------------------------------------------------- the client
class Dialog:
    """A MultiModalDialog session: ``with Dialog() as d: turn = d.say(clip)``.

    ``on_audio(clip)`` gets each TTS chunk, ``on_state(state)`` each dialog state,
    ``on_text(role, text, final)`` the growing transcripts (role "user" or "assistant") and
    ``on_speech_started()`` the moment the server hears the user begin; all are called in the SDK's
    thread. While a :meth:`stream` runs, ``on_turn(turn)`` gets each finished turn and
    ``on_flush()`` is called when the server cancels an answer, both in the stream's thread.
    """

    def __init__(
        self,
        endpoints: Endpoints | None = None,
        *,
        mode: str = "push2talk",
        voice: str = "longxiaochun_v2",
        sample_rate: int = 24000,
        video: bool = False,
        ledger: Any = None,
        on_audio: AudioHook | None = None,
        on_state: StateHook | None = None,
        on_text: TextHook | None = None,
        on_turn: TurnHook | None = None,
        on_flush: SignalHook | None = None,
        on_speech_started: SignalHook | None = None,
        app_id: str = "",
        workspace_id: str = "",
        model: str = "multimodal-dialog",
        timeout: float = 30.0,
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"Unknown dialog mode {mode!r}", f"use one of {', '.join(MODES)}")
        if endpoints is None:
            from nbtoolkit.connection import connect

            endpoints = connect(quiet=True)
        if ledger is None:
            from nbtoolkit.ledger import session_ledger

            ledger = session_ledger()
        self.endpoints = endpoints
        self.mode = mode
        self.voice = voice
        self.sample_rate = int(sample_rate)
        self.video = video
        self.ledger = ledger
        self.on_audio, self.on_state, self.on_text = on_audio, on_state, on_text
        self.on_turn, self.on_flush = on_turn, on_flush
        self.on_speech_started = on_speech_started
        self.app_id, self.workspace_id, self.model = app_id, workspace_id, model
        self.timeout = timeout
        self.state = "Idle"
        self.dialog_id: str | None = None
        self.task_id: str | None = None
        self._inbox = _Inbox()
        self._sdk: Any = None
        self._lock = threading.RLock()  # one reader of the inbox at a time
        self._timeline: Timeline | None = None
        self._stopping = False
        self._last_frame = float("-inf")
        self._clock = time.monotonic
        self._live: DialogStream | None = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Dialog:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Connect, send Start, and wait until the server is Listening."""
        if self._sdk is not None:
            return
        self._inbox, self._stopping, self.state = _Inbox(), False, "Idle"
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
        self._sdk = _ObservedDialog(
            self._inbox,
            app_id=self.app_id,
            request_params=params,
            multimodal_callback=_Callback(self),
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
        collector = TurnCollector()
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
                    return _error_from(item[1], None)
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

    def _require_no_stream(self) -> None:
        if self._live is not None:
            raise ConfigError(
                "A stream is reading this dialog's answers",
                "use the stream's own send_audio/ask/speak, or close it first",
            )

    def _handle(self, item: tuple[Any, ...], collector: TurnCollector, timeline: Timeline) -> None:
        kind = item[0]
        if kind == "event":
            name, output = item[1], item[2]
            if name == "DialogStateChanged":
                timeline.mark("state", output.get("state", ""))
            else:
                detail = {k: output[k] for k in ("text", "finished") if k in output}
                timeline.mark("server", name, **detail)
            collector.event(name, output)
        elif kind == "audio":
            if not collector.audio:
                timeline.mark("audio-out", "first_audio")
            collector.audio += item[1]
        elif kind == "warning":
            timeline.mark("client", item[1], **item[2])
            log.warning("dialog: %s %s", item[1], item[2])
        elif kind == "error" and not self._stopping:
            raise _error_from(item[1], self._partial(collector, timeline, "failed"))
        elif kind == "close" and not self._stopping:
            code, msg = item[1], item[2]
            timeline.mark("server", "close", code=code)
            cls = error_class(None, code)  # 1008 policy (auth), 1011 server error
            if cls is ProtocolError:
                cls = ConnectionLost
            raise cls(
                f"The dialog server closed the connection (code {code}: {msg})",
                _fix_for(cls),
                status=code,
                partial=self._partial(collector, timeline, "failed"),
            )

    def _pump(
        self,
        collector: TurnCollector,
        timeline: Timeline,
        *,
        until: Callable[[], bool] | None = None,
        block: bool = True,
    ) -> None:
        """Handle inbox items until ``until()`` (default: the turn is done), or only what is
        waiting when ``block`` is false. Raises ConnectionLost after ``timeout`` seconds."""
        done = until or (lambda: collector.done)
        deadline = time.monotonic() + self.timeout
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
    def _partial(self, c: TurnCollector, timeline: Timeline, status: str) -> Turn:
        audio = (
            Clip.from_pcm(c.audio[: len(c.audio) // 2 * 2], self.sample_rate)
            if len(c.audio) >= 2
            else None
        )
        return Turn(
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

    def _usage(self, c: TurnCollector) -> Usage:
        """The server's usage; without one (the service does not report it), counted here by the
        offline engine's documented rule, so the ledger still shows the turn's size."""
        local = self.endpoints.local
        if c.usage is not None:
            return Usage.from_dashscope(c.usage, model=self.model, local=local)
        from nbtoolkit.local.engine.usage import audio_tokens, text_tokens

        return Usage(
            model=self.model,
            input_text=0 if c.sent_seconds else text_tokens(c.heard),
            input_audio=audio_tokens(c.sent_seconds) if c.sent_seconds else 0,
            output_text=text_tokens(c.text),
            output_audio=audio_tokens(len(c.audio) / 2 / self.sample_rate) if c.audio else 0,
            local=local,
        )

    def _ready(self, timeline: Timeline) -> tuple[Any, TurnCollector]:
        """Handle what arrived since the last turn and wait until the server listens."""
        sdk = self._require_open()
        collector = TurnCollector()
        self._pump(collector, timeline, until=lambda: False, block=False)
        if self.state != "Listening":
            self._pump(collector, timeline, until=lambda: self.state == "Listening")
        return sdk, TurnCollector()

    def _exchange(
        self, send: Callable[[Any], None], timeline: Timeline, name: str
    ) -> TurnCollector:
        """Run one round: wait for Listening, ``send(sdk)``, collect until Listening again."""
        sdk, collector = self._ready(timeline)
        timeline.mark("client", name)
        send(sdk)
        self._pump(collector, timeline)
        return collector

    def _turn(self, run: Callable[[Timeline], list[TurnCollector]]) -> Turn:
        """Run the rounds of one turn; the last round is the answer, usage covers them all."""
        with self._lock:
            self._require_no_stream()
            self.ledger.check(local=self.endpoints.local)
            timeline = self._timeline = Timeline()
            t0 = time.monotonic()
            try:
                rounds = run(timeline)
            except BackendError as exc:
                if isinstance(exc.partial, Turn):  # what arrived was produced, so it counts
                    self._record(exc.partial.usage, t0)
                raise
            finally:
                self._timeline = None
            turn = self._partial(rounds[-1], timeline, rounds[-1].status)
            for earlier in rounds[:-1]:
                turn.usage = self._usage(earlier) + turn.usage
            self._record(turn.usage, t0)
            return turn

    def _record(self, usage: Usage, t0: float) -> None:
        self.ledger.record(
            usage,
            backend="dialog",
            kind="turn",
            request_id=self.task_id,
            latency=time.monotonic() - t0,
        )

    def say(self, clip: Any, *, pace: bool = False) -> Turn:
        """Speak ``clip`` (a Clip, path or encoded bytes) and return the answer."""
        audio = Clip.load(clip).resample(INPUT_RATE)
        frames = list(audio.chunks(_FRAME_MS))

        def run(timeline: Timeline) -> list[TurnCollector]:
            sdk, collector = self._ready(timeline)
            collector.sent_seconds = audio.duration
            if self.mode != "duplex":
                timeline.mark("client", "SendSpeech")
                sdk.start_speech()
            timeline.mark("audio-in", "speech", seconds=round(audio.duration, 3))
            self._stream(sdk, frames, collector, timeline, pace=pace)
            if self.mode == "push2talk":
                timeline.mark("client", "StopSpeech")
                sdk.stop_speech()
            else:
                silence = Clip.silence(MAX_TRAILING_SILENCE, INPUT_RATE).chunks(_FRAME_MS)
                timeline.mark("audio-in", "silence")
                self._stream(
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
                            "The server's voice detector heard no speech in the clip",
                            "speak louder or closer, or use mode='push2talk'",
                        )
            self._pump(collector, timeline)
            return [collector]

        return self._turn(run)

    def _stream(
        self,
        sdk: Any,
        frames: list[bytes],
        collector: TurnCollector,
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
                due = t0 + i * _FRAME_MS / 1000
                while (left := due - time.monotonic()) > 0:
                    try:
                        self._handle(self._inbox.items.get(timeout=left), collector, timeline)
                    except queue.Empty:
                        break
            sdk.send_audio_data(frame)

    def ask(self, text: str) -> Turn:
        """Ask in text (RequestToRespond "prompt"); the answer comes as text and speech."""
        return self._turn(
            lambda tl: [self._exchange(lambda s: s.request_to_respond("prompt", text), tl, "ask")]
        )

    def speak(self, text: str) -> Turn:
        """Have the server say ``text`` (RequestToRespond "transcript": TTS only, no LLM)."""
        return self._turn(
            lambda tl: [
                self._exchange(lambda s: s.request_to_respond("transcript", text), tl, "speak")
            ]
        )

    def ask_about_image(self, image: Any, question: str = "What is in front of me?") -> Turn:
        """Visual Q&A. The question goes first; when the server answers with the ``visual_qa``
        command (it wants a photo) the image follows with the question. If it answers without the
        command, the question is asked again with the image attached (S000's direct form). The
        Turn is the image answer; its usage covers both rounds and its timeline shows both."""
        jpeg = to_jpeg(image)
        params = RequestToRespondParameters(images=[_image_param(jpeg)])

        def run(timeline: Timeline) -> list[TurnCollector]:
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

        return self._turn(run)

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
        self._require_open().update_info(RequestToRespondParameters(images=[_image_param(jpeg)]))
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
            self._require_no_stream()
            sdk = self._require_open()
            seen = TurnCollector()
            sdk.send_heart_beat()
            self._pump(seen, Timeline(), until=lambda: seen.heartbeats > 0)

    def stream(self, *, fill_silence: bool | None = None) -> DialogStream:
        """Start streaming (the dialog must be open): ``with d.stream() as s: s.send_audio(pcm)``.

        ``fill_silence`` (default: on in tap2talk and duplex) sends zero frames, 10 a second,
        once no audio was sent for :data:`FILL_AFTER` seconds, so the server's VAD hears the end of speech while the microphone is
        quiet or stopped. Only one stream at a time; say/ask/speak wait until it is closed.
        """
        with self._lock:
            self._require_open()
            self._require_no_stream()
            self.ledger.check(local=self.endpoints.local)
            fill = self.mode != "push2talk" if fill_silence is None else fill_silence
            self._live = DialogStream(self, fill_silence=fill)
            return self._live

    def __repr__(self) -> str:
        where = "local" if self.endpoints.local else self.endpoints.region
        return f"Dialog(mode={self.mode!r}, state={self.state!r}, {where})"


# --------------------------------------------------------------------------- streaming
_END = object()
_SILENT_FRAME = bytes(INPUT_RATE * 2 * _FRAME_MS // 1000)
#: Zero frames start after this long without audio: a microphone's chunks arrive with some jitter,
#: and a zero frame slipped between two of them would cut a word in half.
FILL_AFTER = 0.3


def _is_error_event(error: Any) -> bool:
    """True for an ``Error`` event (the session goes on), False for task-failed or a transport
    failure (the session is over)."""
    if not isinstance(error, str):
        return False
    try:
        doc = json.loads(error)
    except ValueError:
        return False
    output = (doc.get("payload") or {}).get("output") if isinstance(doc, dict) else None
    return isinstance(output, dict) and output.get("event") == "Error"


class DialogStream:
    """Continuous audio in, finished turns out; made by :meth:`Dialog.stream`.

    Mode semantics: in duplex just :meth:`send_audio`; in tap2talk call :meth:`start_speech`
    before each utterance (the server's VAD ends it); in push2talk bracket it with
    :meth:`start_speech` / :meth:`stop_speech`. A thread of the stream reads the server's events:
    each finished turn is recorded in the dialog's ledger, passed to ``Dialog.on_turn`` and queued
    for :meth:`next_turn` / :meth:`turns`. A turn that fails (an ``Error`` event, or the server
    heard no speech — see :meth:`end_of_input`) is raised by :meth:`next_turn` and the stream goes
    on; a lost connection ends it (the exception's ``partial`` is the turn so far).
    """

    def __init__(self, dialog: Dialog, *, fill_silence: bool) -> None:
        self.dialog = dialog
        self.fill_silence = fill_silence
        #: Turns finished so far, oldest first (what next_turn() returned or will return).
        self.turns_done: list[Turn] = []
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
        self._new_turn()
        self._thread = threading.Thread(target=self._run, name="nbtoolkit-dialog-stream")
        self._thread.daemon = True
        self._thread.start()

    def __enter__(self) -> DialogStream:
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
            if pace and (ahead := t0 + i / step * _FRAME_MS / 1000 - time.monotonic()) > 0:
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
        params = (
            RequestToRespondParameters(images=[_image_param(to_jpeg(image))]) if image else None
        )
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
            raise ConnectionLost("The dialog stream is closed", "open a new one with d.stream()")
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
    def next_turn(self, timeout: float | None = None) -> Turn:
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
                "The dialog stream is closed", "open a new one with d.stream()"
            )
        if isinstance(item, BaseException):
            raise item
        turn: Turn = item
        return turn

    def turns(self, timeout: float | None = None) -> Iterator[Turn]:
        """Finished turns as they come, until the stream is closed (see :meth:`next_turn`)."""
        while True:
            try:
                yield self.next_turn(timeout)
            except ConnectionLost:
                if self._fatal is None and self._stop.is_set():
                    return
                raise

    def close(self) -> None:
        """Stop the stream's thread (the dialog stays open for say/ask or a new stream)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        self._results.put(_END)
        if self.dialog._live is self:
            self.dialog._live = None

    # ------------------------------------------------------------------ the stream's thread
    def _new_turn(self) -> None:
        self._collector = TurnCollector()
        self._timeline = Timeline()
        self._t0: float | None = None

    def _run(self) -> None:
        inbox = self.dialog._inbox.items
        try:
            while not self._stop.is_set():
                wait = 0.2
                if self.fill_silence:
                    gap = _FRAME_MS / 1000 if self._filling else FILL_AFTER
                    wait = max(0.0, self._last_audio + gap - time.monotonic())
                try:
                    item = inbox.get(timeout=wait) if wait > 0 else inbox.get_nowait()
                except queue.Empty:
                    item = None
                if item is not None:
                    self._fold(item)
                gap = _FRAME_MS / 1000 if self._filling else FILL_AFTER
                if self.fill_silence and time.monotonic() - self._last_audio >= gap:
                    self._send(_SILENT_FRAME, user=False)
        except NbToolkitError as exc:  # the session is over (or the budget spent): keep the turn
            self._fail(exc)
        finally:
            self._stop.set()
            self._results.put(_END)

    def _fold(self, item: tuple[Any, ...]) -> None:
        d, c = self.dialog, self._collector
        kind = item[0]
        if kind == "audio" and not c.responding:
            return  # a frame of an answer abandoned by a barge-in, arriving late
        if kind == "error" and not d._stopping and _is_error_event(item[1]):
            exc = _error_from(item[1], d._partial(c, self._timeline, "failed"))
            self._end_turn(exc.partial if c.begun else None)
            self._results.put(exc)
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
                self._results.put(
                    AudioError(
                        "The server's voice detector heard no speech in the recording",
                        "speak louder or closer, or use mode='push2talk'",
                    )
                )
        if c.done:
            turn = d._partial(c, self._timeline, c.status)
            self._end_turn(turn)
            if turn.status == "cancelled":
                _call_hook(d.on_flush)
            _call_hook(d.on_turn, turn)
            self.turns_done.append(turn)
            self._results.put(turn)
            d.ledger.check(local=d.endpoints.local)

    def _end_turn(self, turn: Turn | None) -> None:
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
        partial = partial if isinstance(partial, Turn) else None
        self._end_turn(partial if self._collector.begun else None)
        self._fatal = exc
        self._results.put(exc)
