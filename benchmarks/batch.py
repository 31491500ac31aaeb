"""Batch throughput on the offline engine: items per second by concurrency, and Dask vs in-process.

Measured in one run: the in-process (threads) executor at concurrency 1, 2, 4 and 8, printed as
ratios to concurrency 1; then a LocalCluster with 2 worker processes (each with its own local server
and engine) against the in-process executor at the same concurrency. Both sides are warmed up first
(server start and model loading are not counted), and each figure is the best of ``--repeats`` runs
(the least disturbed by other work on a shared machine). The clips are short English phrases
synthesised by the engine's TTS and saved as WAV files, transcribed by Qwen-Audio's protocol on the
local server.

Run: ``.venv/bin/python benchmarks/batch.py [--items 16] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from nbtoolkit.audio import Clip
from nbtoolkit.backends.qwen_audio import QwenAudio
from nbtoolkit.batch import run_batch
from nbtoolkit.connection import local_server

PHRASES = [
    "open the door",
    "turn on the light",
    "what time is it",
    "play some music",
    "the weather is nice today",
    "call my mother",
    "stop the timer",
    "read the news",
]
QUESTION = "What is said in the audio?"


def offline_client() -> QwenAudio:
    """A factory for the Dask workers: each worker process starts its own local server."""
    return QwenAudio(local_server().endpoints)


def make_items(n: int, folder: Path) -> list[str]:
    engine = local_server().engine
    paths = []
    for i in range(n):
        clip = Clip.from_array(engine.synthesize(PHRASES[i % len(PHRASES)], rate=16000), 16000)
        paths.append(str(clip.save(folder / f"clip-{i:03d}.wav")))
    return paths


def items_per_second(items: list[str], backend: Any, repeats: int, **options: Any) -> float:
    """Best of ``repeats`` runs of the whole batch, in items per second."""
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        result = run_batch(items, backend, QUESTION, progress=False, **options)
        elapsed = time.perf_counter() - start
        failed = result.summary().failed
        if failed:
            raise SystemExit(f"benchmark items failed: {failed}")
        best = max(best, len(items) / elapsed)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="nbtoolkit-bench-") as tmp:
        items = make_items(args.items, Path(tmp))
        client = offline_client()
        run_batch(items[:4], client, QUESTION, progress=False)  # warm up engine and server

        print(f"in-process executor, {len(items)} clips, offline engine, best of {args.repeats}")
        n = args.repeats
        rates = {c: items_per_second(items, client, n, concurrency=c) for c in (1, 2, 4, 8)}
        for c, rate in rates.items():
            print(f"  concurrency {c}: {rate:6.2f} items/s  ({rate / rates[1]:.2f}× concurrency 1)")

        from distributed import Client, LocalCluster

        with (
            LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
            Client(cluster) as dask_client,
        ):
            dask_options = {"executor": "dask", "scheduler": dask_client, "concurrency": 4}
            # warm up: every worker starts its own server and loads the engine once
            run_batch(items[:8], offline_client, QUESTION, progress=False, **dask_options)
            dask_rate = items_per_second(items, offline_client, n, **dask_options)
        threads_rate = items_per_second(items, client, n, concurrency=4)
        print(
            "LocalCluster (2 worker processes, 1 thread each) vs in-process threads, concurrency 4"
        )
        print(f"  dask: {dask_rate:6.2f} items/s, threads: {threads_rate:6.2f} items/s")
        print(f"  ratio dask / threads: {dask_rate / threads_rate:.2f}×")


if __name__ == "__main__":
    main()
