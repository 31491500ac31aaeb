"""The Player widget: gapless playback of streamed PCM16, with flush for barge-in.

Audio goes to the browser as binary custom messages (never in a synced trait). The view answers
with a "ready" handshake; until then messages are queued here (bounded), because custom messages
sent before a view renders are lost. The view reports its state back through a few small traits
about ten times a second: ``buffered_ms``, ``position_ms``, ``underruns``, ``playing``.

With no view at all (nbmake, CI) the Player still accounts what was fed, so a notebook can assert
on ``played_clip``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from nbtoolkit.audio import Clip
from nbtoolkit.errors import AudioError

__all__ = ["MAX_MESSAGE_BYTES", "Player"]

_HERE = Path(__file__).parent
#: The largest audio payload of one message to the browser.
MAX_MESSAGE_BYTES = 256 * 1024
#: How long a report of the view counts (s): it reports ten times a second while audio plays.
REPORT_FRESH_S = 0.5
#: The traits the view reports.
_REPORTED = ("buffered_ms", "position_ms", "playing")

_CSS = """
.nbtk-player { display: flex; align-items: center; gap: 10px; font-size: 13px; padding: 2px 0;
  font-family: var(--jp-ui-font-family, sans-serif); }
.nbtk-player .nbtk-state { min-width: 64px; font-weight: 600; color: #2a7ab9; }
.nbtk-player .nbtk-buffer { width: 90px; height: 8px; background: #e4e4e4; border-radius: 4px; overflow: hidden; }
.nbtk-player .nbtk-buffer-fill { height: 100%; width: 0; background: #2a7ab9; }
.nbtk-player .nbtk-stats { color: #666; font-variant-numeric: tabular-nums; }
.nbtk-player button { padding: 2px 8px; }
"""


class Player(anywidget.AnyWidget):
    """Play streamed PCM16 gaplessly in the browser.

    ``feed(pcm, rate)`` as audio arrives, ``finish()`` when an answer is complete (running dry
    after that is not an underrun), ``flush()`` to stop everything at once (barge-in).

    Parameters
    ----------
    rate:
        The sample rate of fed PCM when ``feed`` is not told otherwise (24 kHz: Omni's output).
    max_pending_bytes:
        How much audio to hold while no view is ready; the oldest is dropped beyond it.
    """

    _esm = _HERE / "player.js"
    _css = _CSS

    rate = traitlets.Int(24000).tag(sync=True)
    prebuffer_ms = traitlets.Int(150).tag(sync=True)  # lead before the first sound of a stream
    # reported by the view:
    buffered_ms = traitlets.Float(0.0).tag(sync=True)
    position_ms = traitlets.Float(0.0).tag(sync=True)  # played since the last flush
    underruns = traitlets.Int(0).tag(sync=True)  # times the stream ran dry while still open
    playing = traitlets.Bool(False).tag(sync=True)
    flushed = traitlets.Int(0).tag(sync=True)  # number of flushes the view has carried out

    def __init__(self, *, max_pending_bytes: int = 10 * 2**20, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_pending_bytes = max_pending_bytes
        #: Audio dropped from the queue while no view was ready (bytes).
        self.dropped_bytes = 0
        #: How much had played when the last flush stopped playback (ms), as the view reported.
        self.interrupted_at_ms: float | None = None
        self._lock = threading.Lock()
        self._pending: deque[tuple[dict[str, Any], list[bytes]]] = deque()
        self._pending_bytes = 0
        self._views_ready = 0
        self._flushes = 0
        self._fed: list[Clip] = []
        self._played_out_at = 0.0  # see played_out_at
        self._reported_at = 0.0  # when a report of the view was last applied (monotonic)
        self.observe(self._on_report, names=list(_REPORTED))
        self.on_msg(self._on_custom_msg)

    # ----------------------------------------------------------------- public API
    @property
    def ready(self) -> bool:
        """True once a browser view has rendered and said it can play."""
        return self._views_ready > 0

    @property
    def played_clip(self) -> Clip | None:
        """Everything fed since the last flush, as one Clip at the first part's rate."""
        with self._lock:
            parts = list(self._fed)
        if not parts:
            return None
        clip = parts[0]
        for part in parts[1:]:
            clip = clip + part
        return clip

    @property
    def played_out_at(self) -> float:
        """When the audio sent to the browser will have played out, on :func:`time.monotonic`'s
        clock: the kernel's own schedule of what it sent (about as the view schedules it: back to
        back, after the lead-in), so it does not wait for the view's next report. 0.0 before a
        view is ready and after a flush."""
        return self._played_out_at

    @property
    def audible(self) -> bool:
        """True while the browser plays or holds audio: until :attr:`played_out_at`, or while the
        view's reports say so and keep coming. A report older than :data:`REPORT_FRESH_S` does not
        count: while audio plays the view reports ten times a second, and a kernel busy running
        cells (Run All) may apply none of them for seconds, so the last one applied can be stale.
        Never without a view."""
        return time.monotonic() < self._audible_until()

    def _audible_until(self) -> float:
        reported = self.playing or self.buffered_ms > 0
        return max(self._played_out_at, self._reported_at + REPORT_FRESH_S if reported else 0.0)

    async def played_out(self, slack: float = 2.0) -> None:
        """Return once the audio sent so far has played out in the browser (:attr:`audible` is
        False), at most ``slack`` seconds after :attr:`played_out_at`. At once without a view."""
        loop = asyncio.get_running_loop()
        reported = asyncio.Event()

        def on_report(_change: Any = None) -> None:
            # the view's reports may be applied on another thread (a kernel subshell)
            loop.call_soon_threadsafe(reported.set)

        deadline = max(self._played_out_at, time.monotonic()) + slack
        self.observe(on_report, names=list(_REPORTED))
        try:
            # until the schedule ends and the reports stop saying "playing" (or go stale)
            while (left := min(self._audible_until(), deadline) - time.monotonic()) > 0:
                reported.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(reported.wait(), left)
        finally:
            self.unobserve(on_report, names=list(_REPORTED))

    @property
    def fed_ms(self) -> float:
        """Milliseconds of audio fed since the last flush."""
        with self._lock:
            return sum(c.duration for c in self._fed) * 1000

    def feed(self, pcm: bytes | bytearray | memoryview, rate: int | None = None) -> None:
        """Queue PCM16 mono little-endian audio for gapless playback after what is queued."""
        data = bytes(pcm)
        if not data:
            return
        rate = int(rate or self.rate)
        if len(data) % 2:
            raise AudioError(
                f"PCM16 needs an even number of bytes (got {len(data)})",
                "feed whole 16-bit samples; keep an odd trailing byte for the next feed",
            )
        clip = Clip.from_pcm(data, rate)  # validates the rate too
        with self._lock:
            self._fed.append(clip)
        for i in range(0, len(data), MAX_MESSAGE_BYTES):
            self._post({"type": "pcm", "rate": rate}, [data[i : i + MAX_MESSAGE_BYTES]])

    def feed_clip(self, clip: Clip) -> None:
        """Play a whole Clip (then mark the end of the stream)."""
        self.feed(clip.to_pcm(), clip.rate)
        self.finish()

    def finish(self) -> None:
        """Mark the end of the current answer: when it has played out, that is not an underrun."""
        self._post({"type": "end"}, [])

    def flush(self) -> None:
        """Stop everything queued or playing now (barge-in) and forget what was fed."""
        with self._lock:
            self._fed.clear()
            self._flushes += 1
            epoch = self._flushes
            self._pending_bytes = 0
            self._pending.clear()
            self._played_out_at = 0.0
        self._post({"type": "flush", "epoch": epoch}, [])

    # ----------------------------------------------------------------- messages
    def _post(self, content: dict[str, Any], buffers: list[bytes]) -> None:
        # under the lock so queued and direct messages keep their order across threads
        with self._lock:
            if self._views_ready:
                self._send_to_view(content, buffers)
            else:
                self._queue(content, buffers)

    def _send_to_view(self, content: dict[str, Any], buffers: list[bytes]) -> None:
        if content["type"] == "pcm":  # schedule it as player.js does
            lead = time.monotonic() + self.prebuffer_ms / 1000
            seconds = sum(len(b) for b in buffers) / 2 / content["rate"]
            self._played_out_at = max(self._played_out_at, lead) + seconds
        self.send(content, buffers)

    def _on_report(self, _change: Any) -> None:
        self._reported_at = time.monotonic()

    def _queue(self, content: dict[str, Any], buffers: list[bytes]) -> None:
        if content["type"] == "flush":
            return  # the queue was just emptied; nothing plays yet
        self._pending.append((content, buffers))
        self._pending_bytes += sum(len(b) for b in buffers)
        while self._pending_bytes > self.max_pending_bytes and self._pending:
            _, old = self._pending.popleft()
            size = sum(len(b) for b in old)
            self._pending_bytes -= size
            self.dropped_bytes += size

    def _on_custom_msg(self, _widget: Any, content: dict[str, Any], _buffers: list[Any]) -> None:
        kind = content.get("type")
        if kind == "ready":
            with self._lock:
                self._views_ready += 1
                while self._pending:
                    queued, buffers = self._pending.popleft()
                    self._send_to_view(queued, buffers)
                self._pending_bytes = 0
        elif kind == "flushed":
            played = content.get("played_ms")
            self.interrupted_at_ms = float(played) if isinstance(played, (int, float)) else None
