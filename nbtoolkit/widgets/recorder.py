"""The Recorder widget: streams microphone PCM (16 kHz int16) from the browser to the kernel.

The browser half (``recorder.js``) captures with an AudioWorklet, downsamples to 16 kHz and sends
~100 ms chunks as binary custom messages. This half writes every chunk to a WAV file on disk as it
arrives (so a page reload or kernel restart loses nothing already captured), keeps the finished
takes as Clips, and tells its consumers in one ordered channel: :meth:`Recorder.events` yields
:class:`TakeStarted`, then each :class:`Chunk`, then :class:`TakeEnded` carrying the whole take
(``stream()`` and ``on_chunk`` callbacks are views of that channel). A chunk never comes before
the start of its take: the take starts when the view says so or with its first chunk, whichever
comes first.

Only small state is synced (status, level, elapsed, error, options, the file path): saved widget
state ends up in the notebook file, so audio never goes into a trait.

With ``camera=True`` the view also has a Snapshot button: the browser grabs a camera frame as JPEG
and sends it as a custom message (``await rec.snapshot()`` asks for one from the kernel); headless,
the frames come from a given list of images.

Widget messages may be handled on a thread other than the kernel's: JupyterLab ≥ 4.4 with
ipykernel ≥ 7 sends comm messages over a kernel subshell (its own thread and event loop) by
default. So this half never touches an asyncio object from a message handler directly: take events
reach ``events()`` feeds, snapshot futures and the simulated source's task through
``call_soon_threadsafe`` on the loop that owns them.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import logging
import os
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import anywidget
import numpy as np
import traitlets

from nbtoolkit.audio import Clip
from nbtoolkit.errors import AudioError, ImageError
from nbtoolkit.widgets.recordings import prune

__all__ = [
    "RATE",
    "Chunk",
    "Recorder",
    "RecorderEvent",
    "TakeEnded",
    "TakeEvents",
    "TakeStarted",
    "is_headless",
]

log = logging.getLogger(__name__)

#: The rate of every chunk and recording, in Hz (what speech backends expect).
RATE = 16000
_HERE = Path(__file__).parent
_DEFAULT_DIR = Path("~/.cache/nbtoolkit/recordings")
_WAV_HEADER_BYTES = 44

ChunkCallback = Callable[[bytes], Any]
FrameCallback = Callable[[bytes], Any]
_JPEG = b"\xff\xd8\xff"


def is_headless() -> bool:
    """True when no browser is attached (nbmake/CI): widgets should use a simulated source.

    ``NBTOOLKIT_HEADLESS=1`` (set by the Makefile) decides; otherwise a kernel started by pytest
    without a Jupyter session is taken as headless.
    """
    flag = os.environ.get("NBTOOLKIT_HEADLESS")
    if flag is not None:
        return flag.strip().lower() not in ("", "0", "false", "no")
    return "PYTEST_CURRENT_TEST" in os.environ and "JPY_SESSION_NAME" not in os.environ


@dataclass(frozen=True)
class TakeStarted:
    """A take began; its audio is written to ``path`` as it arrives."""

    path: str
    type: Literal["take.started"] = "take.started"


@dataclass(frozen=True)
class Chunk:
    """The next piece of the open take: 16 kHz mono PCM16 (about ``chunk_ms`` long)."""

    pcm: bytes = field(repr=False)
    type: Literal["take.chunk"] = "take.chunk"


@dataclass(frozen=True)
class TakeEnded:
    """The take is over: ``clip`` is all of it (also the last of ``Recorder.clips``), or ``None``
    when no audio arrived (then nothing was kept on disk and ``path`` is "")."""

    clip: Clip | None
    path: str
    type: Literal["take.ended"] = "take.ended"


#: What :meth:`Recorder.events` yields, in this order for each take.
RecorderEvent = TakeStarted | Chunk | TakeEnded


class TakeEvents:
    """A Recorder's take events, in order, on the event loop that asked for them.

    Made by :meth:`Recorder.events` (subscribed from that moment, so nothing after it is missed);
    ``async for event in feed`` waits for the next one; :meth:`close` (or leaving a ``with``
    block) unsubscribes and ends the iteration. Events may be produced on any thread (widget
    messages can arrive on a kernel subshell): they hop to this loop with
    ``call_soon_threadsafe``, which keeps their order.
    """

    def __init__(self, recorder: Recorder) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[RecorderEvent | None] = asyncio.Queue()
        self._recorder = recorder
        recorder._feeds.append(self)

    def __aiter__(self) -> TakeEvents:
        return self

    async def __anext__(self) -> RecorderEvent:
        event = await self._queue.get()
        if event is None:
            raise StopAsyncIteration
        return event

    def __enter__(self) -> TakeEvents:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Unsubscribe; the iteration ends after the events already delivered."""
        if self in self._recorder._feeds:
            self._recorder._feeds.remove(self)
            self._put(None)

    def _put(self, event: RecorderEvent | None) -> None:
        # from any thread; a feed whose loop has ended just stops receiving
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)


class _WavLog:
    """A PCM16 mono WAV file that is valid after every append (its header is rewritten each time)."""

    def __init__(self, path: Path, rate: int) -> None:
        self.path = path
        self.rate = rate
        self.data_bytes = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("w+b")
        self._fh.write(_wav_header(rate, 0))
        self._fh.flush()

    def append(self, pcm: bytes) -> None:
        self._fh.seek(0, os.SEEK_END)
        self._fh.write(pcm)
        self.data_bytes += len(pcm)
        self._fh.seek(0)
        self._fh.write(_wav_header(self.rate, self.data_bytes))
        # flushed to the OS on every chunk: a killed kernel leaves a complete, readable file
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def _wav_header(rate: int, data_bytes: int) -> bytes:
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


class Recorder(anywidget.AnyWidget):
    """Record from the browser's microphone, streaming 16 kHz PCM16 chunks to the kernel.

    Parameters
    ----------
    source:
        A Clip to play through the same chunk path instead of a microphone (headless runs, demos).
        ``start()`` (or the Record button) feeds it; see :meth:`simulate`.
    realtime:
        Feed ``source`` at real-time pace (True) or as fast as possible (False).
    save_dir:
        Where recordings are written as they arrive (default ``~/.cache/nbtoolkit/recordings``).
        Older takes there are deleted beyond a count and size (see :mod:`nbtoolkit.widgets.recordings`).
    camera:
        Show a Snapshot button that grabs a JPEG from the browser's camera (see :meth:`snapshot`).
    frames:
        Images (JPEG/PNG bytes, paths or PIL images) that stand in for the camera: each
        :meth:`snapshot` takes the next, and the last one repeats (headless runs, demos).

    ``async for event in rec.events()`` gives each take as :class:`TakeStarted`, its
    :class:`Chunk` s and :class:`TakeEnded` (with the whole take); ``rec.on_chunk(callback)`` and
    ``async for pcm in rec.stream()`` give just the chunks. ``rec.clip`` is the last finished
    recording and ``rec.clips`` all of them.
    """

    _esm = _HERE / "recorder.js"
    _css = _HERE / "recorder.css"

    status = traitlets.Unicode("idle").tag(sync=True)  # idle | recording | stopped | error
    level = traitlets.Float(0.0).tag(sync=True)  # RMS of the latest audio, 0…1
    elapsed = traitlets.Float(0.0).tag(sync=True)  # seconds in the current take
    error = traitlets.Unicode("").tag(sync=True)
    path = traitlets.Unicode("").tag(sync=True)  # the file the current/last take is written to
    simulated = traitlets.Bool(False).tag(sync=True)  # Record plays `source` instead of a mic
    chunk_ms = traitlets.Int(100).tag(sync=True)
    echo_cancellation = traitlets.Bool(False).tag(sync=True)
    noise_suppression = traitlets.Bool(False).tag(sync=True)
    auto_gain_control = traitlets.Bool(False).tag(sync=True)
    camera = traitlets.Bool(False).tag(sync=True)

    def __init__(
        self,
        source: Clip | None = None,
        *,
        realtime: bool = True,
        save_dir: str | Path | None = None,
        frames: Iterable[Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if source is not None and not isinstance(source, Clip):
            source = Clip.load(source)  # a path or encoded bytes; anything else: AudioError
        super().__init__(simulated=source is not None, **kwargs)
        self.source = source
        self.realtime = realtime
        self.save_dir = Path(save_dir or _DEFAULT_DIR).expanduser()
        # the kernel's loop when made in a cell: the Record button's simulation runs there, not on
        # the subshell thread that may handle the button's message
        try:
            self._home: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._home = None
        #: Finished recordings, oldest first.
        self.clips: list[Clip] = []
        #: Browser→kernel delay of each chunk of the current take (ms, same machine clock).
        self.chunk_latencies_ms: list[float] = []
        #: Chunks of the current take that never arrived (sequence gaps).
        self.missing_chunks = 0
        self._callbacks: list[ChunkCallback] = []
        self._feeds: list[TakeEvents] = []
        self._wav: _WavLog | None = None
        self._pcm = bytearray()
        self._last_seq = -1
        self._views_ready = 0
        self._sim_task: asyncio.Task[Clip | None] | None = None
        self.frames: list[bytes] | None = None
        if frames is not None:
            self.frames = [_jpeg(image) for image in frames]
            if not self.frames:
                raise ImageError("frames= is empty", "pass at least one image, or leave it out")
        self._frame_index = 0
        self._frame_callbacks: list[FrameCallback] = []
        self._frame_ids = itertools.count(1)
        self._frame_waiters: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future[bytes]]] = {}
        self.on_msg(self._on_custom_msg)
        self.observe(self._on_error, names="error")

    # ----------------------------------------------------------------- public API
    @property
    def clip(self) -> Clip | None:
        """The last finished recording at 16 kHz (None before the first one)."""
        return self.clips[-1] if self.clips else None

    @property
    def recording(self) -> bool:
        """True while a take is open (chunks are arriving)."""
        return self._wav is not None

    def events(self) -> TakeEvents:
        """The take events from now on, in order, on the running event loop:
        ``async for event in rec.events()`` (see :class:`TakeEvents`)."""
        return TakeEvents(self)

    def on_chunk(self, callback: ChunkCallback, remove: bool = False) -> None:
        """Call ``callback(pcm16_bytes)`` for every :class:`Chunk` as it arrives (16 kHz mono), on
        the thread that handles the widget's messages."""
        if remove:
            self._callbacks.remove(callback)
        else:
            self._callbacks.append(callback)

    async def stream(self) -> AsyncIterator[bytes]:
        """Yield the PCM16 chunks of the current (or next) take until it ends."""
        with self.events() as feed:
            async for event in feed:
                if isinstance(event, Chunk):
                    yield event.pcm
                elif isinstance(event, TakeEnded):
                    return

    def on_snapshot(self, callback: FrameCallback, remove: bool = False) -> None:
        """Call ``callback(jpeg_bytes)`` for each frame of the view's Snapshot button (frames
        asked for with :meth:`snapshot` go to the caller instead)."""
        if remove:
            self._frame_callbacks.remove(callback)
        else:
            self._frame_callbacks.append(callback)

    async def snapshot(self, timeout: float = 10.0) -> bytes:
        """One camera frame as JPEG bytes: the next of ``frames`` if given, else grabbed by the
        browser view (``camera=True``; the camera opens on the first snapshot). Await it from a
        background task or a cell: the view answers through a widget message."""
        if self.frames is not None:
            jpeg = self.frames[min(self._frame_index, len(self.frames) - 1)]
            self._frame_index += 1
            return jpeg
        if not self.camera or not self._views_ready:
            raise ImageError(
                "There is no camera to take a snapshot from",
                "create the Recorder with camera=True and display it, or pass frames=[images]",
            )
        loop = asyncio.get_running_loop()
        ident = next(self._frame_ids)
        future: asyncio.Future[bytes] = loop.create_future()
        self._frame_waiters[ident] = (loop, future)
        self.send({"type": "snapshot", "id": ident})
        try:
            return await asyncio.wait_for(future, timeout)
        except (TimeoutError, asyncio.TimeoutError):
            raise ImageError(
                f"The browser sent no camera frame within {timeout:g} s",
                "allow the camera for this page, or pass frames=[images] to Recorder",
            ) from None
        finally:
            self._frame_waiters.pop(ident, None)

    def start(self) -> asyncio.Task[Clip | None] | Clip | None:
        """Start recording: plays ``source`` if one was given, else asks the browser view to record.

        With a source this returns what :meth:`simulate` returns.
        """
        if self.source is not None:
            return self.simulate(self.source, realtime=self.realtime)
        if not self._views_ready:
            raise AudioError(
                "The Recorder is not displayed in a browser, so there is no microphone",
                "display it (end a cell with `rec`) and press Record, or pass source=Clip",
            )
        self.send({"type": "start"})
        return None

    def stop(self) -> None:
        """Stop recording (the browser sends what it holds, then the take is finished)."""
        self._cancel_simulation()
        self.send({"type": "stop"})

    def simulate(
        self, clip: Clip, *, realtime: bool = False, chunk_ms: int | None = None
    ) -> asyncio.Task[Clip | None] | Clip | None:
        """Feed ``clip`` through the same chunk path as the microphone.

        ``realtime=False`` runs to the end now and returns the finished Clip. ``realtime=True``
        paces chunks like a live microphone: inside a running event loop (a Jupyter kernel) it
        starts a background task and returns it, so the cell returns at once and widget messages
        keep flowing; without a loop it blocks until done.
        """
        if realtime:
            coro = self.asimulate(clip, realtime=True, chunk_ms=chunk_ms)
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return asyncio.run(coro)
            self._sim_task = loop.create_task(coro)
            return self._sim_task
        self._simulated_start()
        for seq, pcm in enumerate(self._source_chunks(clip, chunk_ms)):
            self._simulated_chunk(seq, pcm)
        return self._simulated_stop()

    async def asimulate(
        self, clip: Clip, *, realtime: bool = True, chunk_ms: int | None = None
    ) -> Clip | None:
        """Coroutine form of :meth:`simulate`; returns the finished Clip."""
        ms = chunk_ms or self.chunk_ms
        self._simulated_start()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            for seq, pcm in enumerate(self._source_chunks(clip, ms)):
                if realtime:
                    # pace against the start time so scheduling delays do not accumulate
                    await asyncio.sleep(max(0.0, t0 + (seq + 1) * ms / 1000 - loop.time()))
                else:
                    await asyncio.sleep(0)
                self._simulated_chunk(seq, pcm)
        finally:
            clip_out = self._simulated_stop()
        return clip_out

    @staticmethod
    def recover(path: str | Path) -> Clip:
        """Read a recording left on disk (also one cut short by a reload, crash or kernel restart)."""
        p = Path(path).expanduser()
        raw = p.read_bytes()
        if len(raw) < _WAV_HEADER_BYTES or raw[:4] != b"RIFF" or raw[36:40] != b"data":
            # not one of ours: let the general decoder try
            return Clip.load(p)
        rate = struct.unpack("<I", raw[24:28])[0]
        # trust the file length over the header: the last append may have outrun its header
        body = raw[_WAV_HEADER_BYTES:]
        body = body[: len(body) - len(body) % 2]
        if not body:
            raise AudioError(f"{p} holds no audio yet", "record for longer before recovering")
        return Clip.from_pcm(body, rate)

    @classmethod
    def from_ipywebrtc(cls, audio_recorder: Any, **kwargs: Any) -> Recorder:
        """A Recorder fed by an ipywebrtc ``AudioRecorder``: each finished WebM becomes a take.

        ipywebrtc only delivers a whole recording after it stops (no live chunks), so the take
        arrives at once through the normal chunk path (callbacks, ``clips``, the file on disk).
        """
        rec = cls(**kwargs)

        def on_value(change: dict[str, Any]) -> None:
            if change["new"]:
                rec.simulate(Clip.from_ipywebrtc(audio_recorder), realtime=False)

        audio_recorder.audio.observe(on_value, names="value")
        return rec

    # ----------------------------------------------------------------- the chunk path
    def _on_custom_msg(self, _widget: Any, content: dict[str, Any], buffers: list[Any]) -> None:
        kind = content.get("type")
        if kind == "ready":
            self._views_ready += 1
            if self._running_simulation() is None:
                # a new view means the earlier one is gone (reload): its take can never finish
                self._finish_take()
        elif kind == "start":
            self._finish_take()
            self._begin_take()
        elif kind == "chunk" and buffers:
            seq = content.get("seq", self._last_seq + 1)
            if isinstance(seq, int) and not isinstance(seq, bool):  # a malformed chunk is ignored
                self._add_chunk(seq, content.get("t"), buffers[0])
        elif kind == "stop":
            if not self._cancel_simulation():  # else its cleanup finishes the take
                self._finish_take()
        elif kind == "record":
            self._on_record_pressed()
        elif kind == "frame":
            self._on_frame(content, buffers)
        else:
            log.debug("Recorder ignored message %r", kind)

    def _on_frame(self, content: dict[str, Any], buffers: list[Any]) -> None:
        waiter = self._frame_waiters.get(int(content.get("id") or 0))
        jpeg = bytes(buffers[0]) if buffers else b""
        if not jpeg.startswith(_JPEG):
            problem = str(content.get("error") or "the browser sent no JPEG")
            error = ImageError(f"The camera snapshot failed: {problem}", "allow the camera")
            if waiter is not None:
                waiter[0].call_soon_threadsafe(_settle, waiter[1], None, error)
            else:
                self.error = str(error)
            return
        if waiter is not None:
            waiter[0].call_soon_threadsafe(_settle, waiter[1], jpeg, None)
        else:  # the view's own Snapshot button: nobody asked, the callbacks get it
            self._deliver_frame(jpeg)

    def _deliver_frame(self, jpeg: bytes) -> None:
        for callback in list(self._frame_callbacks):
            try:
                callback(jpeg)
            except Exception:
                log.exception("Recorder on_snapshot callback %r failed", callback)

    def _begin_take(self) -> None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        self._wav = _WavLog(self.save_dir / f"rec-{stamp}.wav", RATE)
        prune(self.save_dir, current=self._wav.path)  # older takes, within the folder's bound
        self._pcm = bytearray()
        self._last_seq = -1
        self.missing_chunks = 0
        self.chunk_latencies_ms = []
        self.error = ""
        self.path = str(self._wav.path)
        self._emit(TakeStarted(self.path))

    def _add_chunk(self, seq: int, t_ms: Any, buffer: Any) -> None:
        pcm = bytes(buffer)
        if seq <= self._last_seq or not pcm:
            return  # a duplicate (re-sent) or empty chunk
        if self._wav is None:
            self._begin_take()
        assert self._wav is not None
        if len(pcm) % 2:
            pcm = pcm[:-1]
        self.missing_chunks += seq - self._last_seq - 1
        self._last_seq = seq
        if isinstance(t_ms, (int, float)):
            self.chunk_latencies_ms.append(time.time() * 1000 - float(t_ms))
        self._wav.append(pcm)
        self._pcm += pcm
        for callback in list(self._callbacks):
            try:
                callback(pcm)
            except Exception:
                # one failing consumer must not stop the recording or the others
                log.exception("Recorder on_chunk callback %r failed", callback)
        self._emit(Chunk(pcm))

    def _finish_take(self) -> Clip | None:
        if self._wav is None:
            return None
        wav, self._wav = self._wav, None
        wav.close()
        clip = None
        if self._pcm:
            clip = Clip.from_pcm(bytes(self._pcm), RATE)
            self._pcm = bytearray()
            self.clips.append(clip)
        else:
            wav.path.unlink(missing_ok=True)
            self.path = ""
        self._emit(TakeEnded(clip, self.path))
        return clip

    def _emit(self, event: RecorderEvent) -> None:
        for feed in list(self._feeds):
            feed._put(event)

    def _on_error(self, change: dict[str, Any]) -> None:
        if change["new"]:
            self._finish_take()

    # ----------------------------------------------------------------- simulated source
    def _source_chunks(self, clip: Clip, chunk_ms: int | None) -> list[bytes]:
        return list(clip.resample(RATE).chunks(chunk_ms or self.chunk_ms))

    def _simulated_start(self) -> None:
        self._on_custom_msg(self, {"type": "start"}, [])
        self.status = "recording"

    def _simulated_chunk(self, seq: int, pcm: bytes) -> None:
        self._on_custom_msg(self, {"type": "chunk", "seq": seq, "t": time.time() * 1000}, [pcm])
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768.0
        self.level = float(np.sqrt(np.mean(samples * samples))) if samples.size else 0.0
        self.elapsed = len(self._pcm) / 2 / RATE

    def _simulated_stop(self) -> Clip | None:
        # not via a "stop" message: from the view that means "cancel the simulation"
        self._finish_take()
        self.status = "stopped"
        self.level = 0.0
        return self.clip

    def _running_simulation(self) -> asyncio.Task[Clip | None] | None:
        task = self._sim_task
        return task if task is not None and not task.done() else None

    def _cancel_simulation(self) -> bool:
        """Cancel a running simulated take from any thread; False if none runs."""
        task = self._running_simulation()
        if task is None:
            return False
        task.get_loop().call_soon_threadsafe(task.cancel)
        return True

    def _on_record_pressed(self) -> None:
        # the Record button of a simulated Recorder plays the source in the background
        if self.source is None or self._running_simulation() is not None:
            return
        home = self._home
        if home is not None and home.is_running() and not home.is_closed():
            home.call_soon_threadsafe(self._play_source, home)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.simulate(self.source, realtime=False)
            return
        self._play_source(loop)

    def _play_source(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.source is None or self._running_simulation() is not None:
            return  # pressed twice before the first press was carried out
        self._sim_task = loop.create_task(self.asimulate(self.source, realtime=self.realtime))


def _settle(future: asyncio.Future[bytes], jpeg: bytes | None, error: Exception | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        assert jpeg is not None
        future.set_result(jpeg)


def _jpeg(image: Any) -> bytes:
    """JPEG bytes of a stand-in camera frame (JPEG/PNG bytes, a path or a PIL image)."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, (str, Path)):
        image = Path(image).expanduser().read_bytes()
    if isinstance(image, (bytes, bytearray, memoryview)):
        raw = bytes(image)
        if raw.startswith(_JPEG):
            return raw
        try:
            image = Image.open(io.BytesIO(raw))
        except (UnidentifiedImageError, OSError) as exc:
            raise ImageError(
                "A frame is not an image", "pass JPEG/PNG bytes or PIL images"
            ) from exc
    if not isinstance(image, Image.Image):
        raise ImageError(
            f"A {type(image).__name__} is not an image", "pass JPEG/PNG bytes or PIL images"
        )
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=85)
    return buf.getvalue()
