"""How fast is plot_waveform on an hour of 16 kHz audio?

Measured in one run against two baselines: (a) a naive ``plt.plot`` of every sample and (b) one
numpy pass over the samples (``np.abs(x).max()``). Goals: ≥ 50× faster than (a), ≤ 3× (b).
(a) is compared with both figures drawn (``canvas.draw()``, what a user waits for); (b) with
plot_waveform's own work, since drawing even an empty figure costs matplotlib a fixed time that the
table shows as the floor.
Run: ``.venv/bin/python benchmarks/waveform.py [--minutes 60]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from nbtoolkit.audio import Clip
from nbtoolkit.audio.features import envelope
from nbtoolkit.display import plot_waveform

RATE = 16000


def make_clip(minutes: float) -> Clip:
    """Speech-like test signal: a 150 Hz buzz, amplitude-modulated at syllable rate, over noise."""
    n = int(minutes * 60 * RATE)
    rng = np.random.default_rng(0)
    t = np.arange(n, dtype=np.float32) / RATE
    buzz = np.sin(2 * np.pi * 150 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) ** 2
    noise = rng.standard_normal(n, dtype=np.float32) * 0.02
    return Clip.from_array((0.5 * buzz + noise).astype(np.float32), RATE)


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    """Fastest of ``repeats`` runs, in seconds (the least disturbed by other work on the machine)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def figure_then(draw: Callable[[plt.Axes], object]) -> Callable[[], None]:
    """A timed step: new figure, ``draw(ax)``, render with Agg, close."""

    def step() -> None:
        fig, ax = plt.subplots(figsize=(10, 2.2))
        draw(ax)
        fig.canvas.draw()
        plt.close(fig)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    clip = make_clip(args.minutes)
    x = clip.samples
    figure_then(lambda ax: ax.plot([0, 1]))()  # warm-up: matplotlib's first figure loads fonts

    def naive(ax: plt.Axes) -> None:
        ax.plot(np.arange(x.size) / RATE, x / 32768.0, linewidth=0.5)

    rows = [
        ("numpy pass: np.abs(x).max()  (b)", best_of(args.repeats, lambda: np.abs(x).max())),
        ("envelope only (1000 columns)", best_of(args.repeats, lambda: envelope(clip, 1000))),
        (
            "plot_waveform, new figure, no draw",
            best_of(args.repeats, lambda: plt.close(plot_waveform(clip).figure)),
        ),
        (
            "plot_waveform + figure + draw",
            best_of(args.repeats, figure_then(lambda ax: plot_waveform(clip, ax))),
        ),
        ("empty figure + draw (floor)", best_of(args.repeats, figure_then(lambda ax: None))),
        ("naive plt.plot + draw  (a)", best_of(1, figure_then(naive))),
    ]
    times = dict(rows)
    numpy_pass = times["numpy pass: np.abs(x).max()  (b)"]
    drawn = times["plot_waveform + figure + draw"]
    call = times["plot_waveform, new figure, no draw"]
    floor = times["empty figure + draw (floor)"]

    print(f"clip: {clip.duration / 60:.0f} min at {RATE} Hz = {x.size:,} samples\n")
    print(f"{'step':<36} {'time':>10}")
    for name, seconds in rows:
        print(f"{name:<36} {seconds * 1e3:>8.1f} ms")
    print()
    # (a) compares what the user waits for (both drawn); (b) compares plot_waveform's own work.
    # Rendering an empty figure is matplotlib's fixed cost, whatever the data: shown as the floor.
    ratios = [
        (
            "(a) naive plt.plot+draw / plot_waveform+draw",
            times["naive plt.plot + draw  (a)"] / drawn,
            "≥ 50×",
        ),
        ("(b) plot_waveform (not drawn) / numpy pass", call / numpy_pass, "≤ 3×"),
        ("    plot_waveform+draw / numpy pass", drawn / numpy_pass, ""),
        ("    floor: empty figure+draw / numpy pass", floor / numpy_pass, ""),
        ("    envelope / numpy pass", times["envelope only (1000 columns)"] / numpy_pass, ""),
    ]
    print(f"{'ratio':<46} {'value':>8}  goal")
    for name, value, goal in ratios:
        print(f"{name:<46} {value:>7.1f}×  {goal}")


if __name__ == "__main__":
    main()
