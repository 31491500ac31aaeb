"""Streaming voice activity detection with webrtcvad, shaped like DashScope's ``server_vad``.

:class:`VadStream` takes PCM16 mono bytes at any rate in pieces of any size, resamples them to
16 kHz for webrtcvad (20 ms frames; partial frames are kept for the next call) and reports
:class:`VadEvent` s:

* ``speech_started`` — ``t_ms`` is where the speech starts in the stream (the first frame of the
  first run of :data:`START_FRAMES` speech frames), not when it was decided (80 ms later).
* ``speech_stopped`` — ``t_ms`` is where the speech **ends** in the stream: the end of the last
  speech frame minus :data:`HANGOVER_MS`. webrtcvad keeps calling frames speech for about 100 ms
  after the voice stops (measured: +85…+110 ms on clean speech, see
  docs/protocols.md#webrtcvad-measurements and ``benchmarks/engine.py``), so this
  compensation puts the reported end within a few tens of ms of the true end. The decision is
  made ``silence_duration_ms`` after that end (``decided_ms``), which is when the event is
  returned by :meth:`VadStream.feed`. ``audio`` is the utterance at the stream's own rate, from
  ``prefix_padding_ms`` before the start to :data:`TAIL_MS` after the end.
* ``speech_paused`` (only with ``pauses=True``) — a hint for speculative work: the speech has been
  silent for :data:`TAIL_MS`, so ``audio`` is already exactly what ``speech_stopped`` will carry if
  the speech does not resume (same bytes; ``t_ms`` the same end). If it resumes, a later pause or
  stop carries other audio. Given at most once per end of speech, and never when the stop comes at
  the same frame (a silence window of :data:`TAIL_MS` or less).

An utterance is at most :data:`~nbtoolkit.protocols.params.MAX_UTTERANCE_SECONDS` long, prefix padding
and tail included (the cloud's sentence recogniser takes no more; docs/bad-input.md): speech that
goes on that long is stopped there, as if the speaker had paused, and a new utterance starts with
the speech that follows. So the audio one open utterance holds is bounded (an hour of continuous
sound used to be kept whole until it ended).

``threshold`` (0…1, server_vad's knob: higher means less sensitive) maps to webrtcvad's
aggressiveness ``min(3, int(threshold * 4))``: 0–0.24 → 0, 0.25–0.49 → 1, 0.5–0.74 → 2 (the
default 0.5), 0.75–1 → 3. Modes 0 and 1 call steady noise speech (docs/protocols.md#webrtcvad-measurements), so 0.5 or more is
advised for anything but a quiet room.

An energy floor (:data:`FLOOR_DBFS`, frame RMS) keeps digital silence and very low noise from ever
counting as speech, whatever webrtcvad says, and the first :data:`WARMUP_FRAMES` frames (160 ms)
of a stream never count: webrtcvad flags the first 3–4 frames of *any* sound as speech before its
noise model adapts.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from nbtoolkit.protocols.params import MAX_UTTERANCE_SECONDS

__all__ = [
    "FLOOR_DBFS",
    "HANGOVER_MS",
    "START_FRAMES",
    "TAIL_MS",
    "TRAIL_DB",
    "WARMUP_FRAMES",
    "VadEvent",
    "VadStream",
    "aggressiveness",
]

VAD_RATE = 16000
#: 20 ms frames divide the usual 20/40/100 ms client chunks, so no frame straddles two chunks and
#: waits for the next one before the stop can be decided.
FRAME_MS = 20
FRAME = VAD_RATE * FRAME_MS // 1000  # 320 samples
#: Frames quieter than this (RMS, dBFS) are never speech.
FLOOR_DBFS = -50.0
#: webrtcvad calls the first 3–4 frames of any stream that starts with sound "speech" (its noise
#: model is not adapted yet; measured on white noise at −50…−30 dBFS), so they are ignored (160 ms).
WARMUP_FRAMES = 8
#: Consecutive speech frames needed to start an utterance (80 ms).
START_FRAMES = 4
#: At most this much of webrtcvad's hangover is removed from the end of an utterance.
HANGOVER_MS = 240
#: Speech-flagged frames this far below the utterance's loudest frame, at its end, are hangover.
TRAIL_DB = 30.0
#: Audio kept after the (compensated) end of speech in ``VadEvent.audio``; also how long the silence
#: lasts before ``speech_paused``. 150 ms covers the end estimate's error (−80…+20 ms in noise) and
#: recognises as well as 300 ms did (in-domain eSpeak 73–75/78 exact for 100/150/300 ms), while it
#: leaves more of the silence window for speculative recognition.
TAIL_MS = 150


@dataclass(frozen=True)
class VadEvent:
    """``kind`` is "speech_started", "speech_stopped" or "speech_paused" (a hint, see the module
    docstring); ``t_ms`` its position in the stream (ms)."""

    kind: str
    t_ms: int
    #: on speech_stopped / speech_paused: the utterance as PCM16 at the stream rate, prefix padding included
    audio: bytes | None = None
    #: position in the stream (ms) at which the event was decided
    decided_ms: int | None = None


def aggressiveness(threshold: float) -> int:
    """webrtcvad mode for a server_vad ``threshold`` in 0…1."""
    if not 0.0 <= threshold <= 1.0 or math.isnan(threshold):
        raise ValueError(f"VAD threshold must be between 0 and 1, not {threshold!r}")
    return min(3, int(threshold * 4))


class VadStream:
    """One audio stream's VAD state. ``feed`` and ``flush`` may be called from any thread."""

    def __init__(
        self,
        threshold: float = 0.5,
        prefix_padding_ms: int = 300,
        silence_duration_ms: int = 800,
        rate: int = 16000,
        *,
        pauses: bool = False,
    ) -> None:
        import webrtcvad

        if rate < 1000 or rate > 384_000:
            raise ValueError(f"VAD rate must be 1000…384000 Hz, not {rate!r}")
        if prefix_padding_ms < 0 or silence_duration_ms < 0:
            raise ValueError("prefix_padding_ms and silence_duration_ms must be >= 0")
        self.threshold = threshold
        self.prefix_padding_ms = int(prefix_padding_ms)
        self.silence_duration_ms = int(silence_duration_ms)
        self.rate = int(rate)
        self.pauses = pauses
        self._vad = webrtcvad.Vad(aggressiveness(threshold))
        self._lock = threading.Lock()
        self._floor = 32768.0 * 10 ** (FLOOR_DBFS / 20)
        self._resampler: Any = None
        if self.rate != VAD_RATE:
            import soxr

            self._resampler = soxr.ResampleStream(self.rate, VAD_RATE, 1, dtype="int16")
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget everything fed so far (stream positions restart at 0)."""
        with self._lock:
            self._odd = b""  # a dangling byte of an odd-length chunk
            self._pending = np.zeros(0, dtype=np.int16)  # 16 kHz samples not yet in a frame
            self._frames = 0  # frames analysed
            self._paused_end = -1  # end (ms) of the last speech_paused given
            self._run = 0  # consecutive speech frames
            self._in_speech = False
            self._start_frame = 0
            self._last_speech_frame = -1
            self._levels: list[float] = []  # frame RMS since the utterance's start frame
            self._recent: list[float] = []  # RMS of the last START_FRAMES frames
            self._audio = bytearray()  # stream-rate PCM kept (from _audio_start on)
            self._audio_start = 0  # stream sample index of _audio[0]
            self._samples = 0  # stream samples fed
            if self._resampler is not None:
                import soxr

                self._resampler = soxr.ResampleStream(self.rate, VAD_RATE, 1, dtype="int16")

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    @property
    def position_ms(self) -> int:
        """How much audio has been fed, in ms."""
        return self._samples * 1000 // self.rate

    # ------------------------------------------------------------------ feeding
    def feed(self, pcm16: bytes) -> list[VadEvent]:
        """Add PCM16 mono bytes at the stream rate; returns the events they complete."""
        with self._lock:
            data = self._odd + bytes(pcm16)
            cut = len(data) // 2 * 2
            self._odd = data[cut:]
            data = data[:cut]
            if not data:
                return []
            self._audio += data
            self._samples += len(data) // 2
            x = np.frombuffer(data, dtype="<i2").astype(np.int16)
            if self._resampler is not None:
                x = np.asarray(self._resampler.resample_chunk(x), dtype=np.int16)
            self._pending = np.concatenate([self._pending, x]) if self._pending.size else x
            events: list[VadEvent] = []
            n = self._pending.size // FRAME
            for k in range(n):
                events.extend(self._frame(self._pending[k * FRAME : (k + 1) * FRAME]))
            self._pending = self._pending[n * FRAME :].copy()
            self._trim()
            return events

    def flush(self) -> list[VadEvent]:
        """End the stream: an open utterance is closed at its (compensated) end of speech."""
        with self._lock:
            if not self._in_speech:
                return []
            return [self._stop(decided_ms=self._frames * FRAME_MS)]

    # ------------------------------------------------------------------ internals
    def _frame(self, f: np.ndarray) -> list[VadEvent]:
        idx = self._frames
        self._frames += 1
        level = float(np.sqrt(np.mean(f.astype(np.float64) ** 2)))
        # webrtcvad sees every frame (its noise model adapts), but its first decisions are unreliable
        vad_says = self._vad.is_speech(f.tobytes(), VAD_RATE)
        speech = vad_says and level >= self._floor and idx >= WARMUP_FRAMES
        self._recent = [*self._recent[-(START_FRAMES - 1) :], level]
        if self._in_speech:
            self._levels.append(level)
        if speech:
            self._run += 1
            self._last_speech_frame = idx
        else:
            self._run = 0
        if not self._in_speech:
            if self._run >= START_FRAMES:
                self._in_speech = True
                self._start_frame = idx - START_FRAMES + 1
                self._levels = list(self._recent)
                return [
                    VadEvent(
                        "speech_started",
                        self._start_frame * FRAME_MS,
                        decided_ms=(idx + 1) * FRAME_MS,
                    )
                ]
            return []
        now_ms = (idx + 1) * FRAME_MS
        if now_ms + TAIL_MS - (self._start_frame * FRAME_MS - self.prefix_padding_ms) >= (
            MAX_UTTERANCE_SECONDS * 1000 - FRAME_MS
        ):
            self._last_speech_frame = idx  # the cut is here, not at the last pause
            stop = self._stop(decided_ms=now_ms)
            # the speech goes on: the next frame of it starts a new utterance at once
            self._run = START_FRAMES - 1 if speech else 0
            return [stop]
        if speech:
            return []
        end_ms = self._end_ms()
        if now_ms - end_ms >= self.silence_duration_ms:
            return [self._stop(decided_ms=now_ms)]
        if self.pauses and now_ms - end_ms >= TAIL_MS and self._paused_end != end_ms:
            self._paused_end = end_ms
            return [VadEvent("speech_paused", end_ms, self._utterance(end_ms), decided_ms=now_ms)]
        return []

    def _end_ms(self) -> int:
        """End of speech (ms): the last speech frame, less webrtcvad's hangover, never before the start.

        Trailing speech-flagged frames more than :data:`TRAIL_DB` below the utterance's loudest
        frame are hangover (webrtcvad's smoothing), so they are dropped, up to :data:`HANGOVER_MS`.
        """
        last = self._last_speech_frame
        levels = self._levels
        first = self._start_frame
        if levels:
            quiet = max(levels) * 10 ** (-TRAIL_DB / 20)
            limit = last - HANGOVER_MS // FRAME_MS
            while (
                last > max(first, limit)
                and 0 <= last - first < len(levels)
                and levels[last - first] < quiet
            ):
                last -= 1
        return max(first + 1, last + 1) * FRAME_MS

    def _stop(self, decided_ms: int) -> VadEvent:
        end_ms = self._end_ms()
        audio = self._utterance(end_ms)
        self._in_speech = False
        self._run = 0
        self._levels = []
        self._paused_end = -1
        return VadEvent("speech_stopped", end_ms, audio=audio, decided_ms=decided_ms)

    def _utterance(self, end_ms: int) -> bytes:
        """The open utterance's audio, prefix padding to :data:`TAIL_MS` after ``end_ms``."""
        start_ms = self._start_frame * FRAME_MS
        a = self._ms_to_sample(max(0, start_ms - self.prefix_padding_ms))
        b = self._ms_to_sample(min(end_ms + TAIL_MS, self.position_ms))
        lo, hi = max(a, self._audio_start), max(a, b)
        return bytes(self._audio[(lo - self._audio_start) * 2 : (hi - self._audio_start) * 2])

    def _ms_to_sample(self, ms: int) -> int:
        return ms * self.rate // 1000

    def _trim(self) -> None:
        """Keep only the audio an utterance may still need (prefix padding, or the open utterance)."""
        if self._in_speech:
            keep_from = self._start_frame * FRAME_MS - self.prefix_padding_ms
        else:
            keep_from = self._frames * FRAME_MS - self.prefix_padding_ms - START_FRAMES * FRAME_MS
        first = max(0, self._ms_to_sample(keep_from - FRAME_MS))
        drop = first - self._audio_start
        if drop > 0:
            del self._audio[: drop * 2]
            self._audio_start = first
