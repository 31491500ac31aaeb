"""How fast does a browser recording decode? 60 s of WebM/Opus to 16 kHz PCM, against its duration.

The input is what a browser's MediaRecorder (and ipywebrtc) hands over: WebM/Opus, 48 kHz, no
duration in the header (``encode(clip, "webm", live=True)``), here of 60 s of eSpeak speech.
Goal: ``Clip.load(data).resample(16000)`` runs ≥ 200× faster than real time.

Breakdown rows show where the time goes: PyAV demux + Opus decode alone (the floor nbtoolkit
cannot go under without another decoder), ``decode`` at the file's rate, and the soxr resample.
Run: ``.venv/bin/python benchmarks/decode.py [--seconds 60]``.
"""

from __future__ import annotations

import argparse
import io

from _common import Row, best_of_each, print_table

from nbtoolkit.audio import Clip
from nbtoolkit.audio.decode import decode
from nbtoolkit.audio.encode import encode
from nbtoolkit.local.engine import Engine

GOAL = 200.0
TEXT = (
    "the birch canoe slid on the smooth planks. glue the sheet to the dark blue background. "
    "it is easy to tell the depth of a well. these days a chicken leg is a rare dish. "
)


def browser_recording(seconds: float) -> bytes:
    """``seconds`` of speech as a browser's MediaRecorder writes it (WebM/Opus, 48 kHz, live)."""
    speech = Clip.from_array(Engine().synthesize(TEXT, rate=48000), 48000)
    clip = speech
    while clip.duration < seconds:
        clip = clip + speech
    return encode(clip[:seconds], "webm", live=True)


def pyav_decode_only(data: bytes) -> int:
    """Demux and decode every Opus packet, converting nothing: the floor under any PyAV decode."""
    import av

    samples = 0
    with av.open(io.BytesIO(data), mode="r") as container:
        for frame in container.decode(audio=0):
            samples += frame.samples
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()

    data = browser_recording(args.seconds)
    pcm16k = Clip.load(data).resample(16000)
    duration = pcm16k.duration
    native = decode(data)

    times = best_of_each(
        args.repeats,
        {
            "full": lambda: Clip.load(data).resample(16000),
            "floor": lambda: pyav_decode_only(data),
            "decode": lambda: decode(data),
            "resample": lambda: native.resample(16000),
        },
    )
    full, floor, decode_t, resample_t = (times[k] for k in ("full", "floor", "decode", "resample"))

    def row(what: str, seconds: float, goal: str = "", ok: bool | None = None) -> Row:
        return Row(
            what,
            f"{seconds * 1e3:.0f} ms",
            f"{duration:.1f} s of audio",
            f"{duration / seconds:.0f}× realtime",
            goal,
            ok,
        )

    print(
        f"input: {len(data) / 1024:.0f} KiB WebM/Opus, {native.rate} Hz, {duration:.1f} s "
        f"→ {len(pcm16k):,} samples at 16 kHz; best of {args.repeats}"
    )
    print_table(
        "decode: WebM/Opus → 16 kHz PCM",
        [
            row(
                "Clip.load(bytes).resample(16000)",
                full,
                f"≥ {GOAL:.0f}× realtime",
                duration / full >= GOAL,
            ),
            row("  decode(bytes) at 48 kHz", decode_t),
            row("  Clip.resample 48 k → 16 k (soxr HQ)", resample_t),
            row("  floor: PyAV demux + Opus decode only", floor),
        ],
    )


if __name__ == "__main__":
    main()
