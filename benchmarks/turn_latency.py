"""Offline turn latency: from the end of the user's speech to the first audio of the answer.

OmniRealtime talks to the local server (offline engine) with server VAD, the way a microphone
would: 100 ms chunks, each sent when its last sample has been "spoken", and silence after the
question until the answer has started. The end of speech is the last 10 ms frame of the question
within 40 dB of its loudest, in the client's clock; the answer's first audio is the client
timeline's first ``response.audio.delta`` mark. The baseline is the VAD silence window itself: the
server cannot know the user has finished before that much silence has gone by.
Goal: median latency ≤ window + 200 ms. Breakdown rows (median, then each turn) are the steps
between the same Timeline's marks.
Run: ``.venv/bin/python benchmarks/turn_latency.py [--turns 4] [--windows 800 500]``.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from dataclasses import dataclass
from statistics import median

import numpy as np
from _common import Row, print_table

from nbtoolkit.audio import Clip
from nbtoolkit.backends.omni import CHUNK_MS, OmniRealtime
from nbtoolkit.ledger import Ledger
from nbtoolkit.local import LocalServer, start
from nbtoolkit.protocols.realtime import AudioTranscriptDelta, ResponseDone

RATE = 16000
MARGIN_MS = 200
QUESTIONS = [
    ("what is three plus four", "seven"),
    ("what is two plus two", "four"),
    ("what is five plus one", "six"),
    ("what is six plus three", "nine"),
]


@dataclass(frozen=True)
class TurnTimes:
    """Seconds from the end of speech to each step of one turn, on the client's clock."""

    vad_stopped: float
    transcribed: float
    first_audio: float
    answer: str


def speech_end(pcm: np.ndarray) -> float:
    """Seconds into ``pcm`` where speech ends: the last 10 ms frame within 40 dB of the loudest."""
    n = RATE // 100
    frames = pcm[: len(pcm) // n * n].reshape(-1, n).astype(np.float64)
    rms = np.sqrt((frames * frames).mean(axis=1))
    return float(np.flatnonzero(rms >= rms.max() * 10 ** (-40 / 20))[-1] + 1) * n / RATE


async def one_turn(rt: OmniRealtime, speech: Clip, timeout: float = 30.0) -> TurnTimes:
    """Say ``speech`` at real-time pace, then silence until the answer is done."""
    step = RATE * CHUNK_MS // 1000
    pcm = speech.to_pcm()
    # a microphone's chunks are all full: the speech's last one is completed by the silence after it
    pcm += bytes(-len(pcm) % (step * 2))
    silence = bytes(step * 2)
    answer: list[str] = []
    done = asyncio.Event()

    async def listen() -> None:
        async for event in rt:
            if isinstance(event, AudioTranscriptDelta):
                answer.append(event.delta)
            elif isinstance(event, ResponseDone):
                done.set()
                return

    listener = asyncio.create_task(listen())
    marks_before = len(rt.timeline.events)
    t0 = time.monotonic()
    end = t0 + speech_end(speech.samples)
    i = 0
    while not done.is_set():
        if time.monotonic() - t0 > timeout:
            listener.cancel()
            raise TimeoutError(f"no answer within {timeout:.0f} s")
        # a microphone hands over a chunk once its last sample has been spoken
        await asyncio.sleep(max(0.0, t0 + (i + 1) * CHUNK_MS / 1000 - time.monotonic()))
        chunk = pcm[i * step * 2 : (i + 1) * step * 2]
        await rt.send_audio(chunk or silence)
        i += 1
    await listener

    def after(name: str) -> float:
        mark = next(e for e in rt.timeline.events[marks_before:] if e.name == name)
        return rt.timeline.t0 + mark.t - end

    return TurnTimes(
        vad_stopped=after("speech_stopped"),
        transcribed=after("conversation.item.input_audio_transcription.completed"),
        first_audio=after("response.audio.delta"),
        answer="".join(answer),
    )


async def session(server: LocalServer, window_ms: int, speeches: list[Clip]) -> list[TurnTimes]:
    """One realtime session with ``window_ms`` of VAD silence; one turn per speech."""
    rt = OmniRealtime(
        server.endpoints, ledger=Ledger(), vad={"silence_duration_ms": window_ms}, voice="Chelsie"
    )
    async with rt:
        return [await one_turn(rt, speech) for speech in speeches]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--windows", type=int, nargs="+", default=[800, 500])
    args = parser.parse_args()

    server = start()
    try:
        lead = Clip.silence(0.3, RATE)
        questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.turns)]
        speeches = [
            lead + Clip.from_array(server.engine.synthesize(q, rate=RATE), RATE)
            for q, _ in questions
        ]
        asyncio.run(session(server, 800, speeches[:1]))  # warm-up: the engine loads its models
        rows: list[Row] = []
        for window in args.windows:
            turns = asyncio.run(session(server, window, speeches))
            for (q, expected), turn in zip(questions, turns, strict=True):
                if expected not in re.findall(r"[a-z]+", turn.answer.lower()):
                    raise AssertionError(f"asked {q!r}, the answer was {turn.answer!r}")
            w = window / 1000
            first = [t.first_audio for t in turns]
            goal = w + MARGIN_MS / 1000

            def step(what: str, values: list[float]) -> Row:
                each = ", ".join(f"{v * 1e3:.0f}" for v in values)
                return Row(f"  {what}", f"{median(values) * 1e3:.0f} ms ({each})", "", "", "", None)

            rows += [
                Row(
                    f"window {window} ms: speech end → first audio delta",
                    f"{median(first) * 1e3:.0f} ms (max {max(first) * 1e3:.0f})",
                    f"window {window} ms",
                    f"{median(first) / w:.2f}× (+{(median(first) - w) * 1e3:.0f} ms)",
                    f"≤ window + {MARGIN_MS} ms",
                    median(first) <= goal,
                ),
                step("VAD: speech end → speech_stopped", [t.vad_stopped for t in turns]),
                step(
                    "ASR: speech_stopped → transcription.completed",
                    [t.transcribed - t.vad_stopped for t in turns],
                ),
                step(
                    "answer + TTS: transcription → first audio delta",
                    [t.first_audio - t.transcribed for t in turns],
                ),
            ]
    finally:
        server.stop()
    print_table(
        f"offline turn latency, server_vad, median of {args.turns} turns (answers checked)", rows
    )


if __name__ == "__main__":
    main()
