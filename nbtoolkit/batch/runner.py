"""``run_batch``: one question over many clips, resumable, in process or on Dask."""

from __future__ import annotations

import time
from contextlib import closing
from pathlib import Path
from typing import Any, Literal

from nbtoolkit.batch.items import to_items
from nbtoolkit.batch.outcome import Backend, ItemResult
from nbtoolkit.batch.ratelimit import TokenBucket
from nbtoolkit.batch.result import BatchResult
from nbtoolkit.batch.store import open_store
from nbtoolkit.errors import ConfigError

__all__ = ["run_batch"]


def _bucket(rate_limit: float | TokenBucket | None) -> TokenBucket | None:
    if rate_limit is None or isinstance(rate_limit, TokenBucket):
        return rate_limit
    return TokenBucket(rate_limit)


def run_batch(
    items: Any,
    backend: Any,
    question: str | None = None,
    *,
    concurrency: int = 4,
    rate_limit: float | TokenBucket | None = None,
    output: str | Path | None = None,
    executor: Literal["threads", "dask"] = "threads",
    scheduler: Any = None,
    progress: bool = True,
    retry_failed: bool = False,
) -> BatchResult:
    """Ask ``question`` about every item and collect the answers.

    ``items``: Clips, paths, or a pandas DataFrame with a ``path`` column and optional
    ``reference`` (expected text, for WER) and ``id`` columns. Ids default to the path, or the position
    of a Clip.

    ``backend``: a client with ``ask(audio=, text=) -> Reply`` (e.g. ``QwenAudio()``), a factory that
    returns one (e.g. ``QwenAudio``; needed for ``executor="dask"``), or a function
    ``(clip_or_path, question) -> str | Reply``.

    At most ``concurrency`` calls are in flight; ``rate_limit`` caps starts per second (a number, or a
    :class:`~nbtoolkit.batch.TokenBucket` for a burst or a test clock). Retries are the client's own.
    An item that fails is recorded with its error type and message and the batch goes on.

    ``output`` (``.jsonl`` or ``.parquet``) receives each result as it finishes, durably; running again
    with the same output skips the ids already there (and, with ``retry_failed``, runs the failed ones
    again). ``executor="dask"`` runs on ``dask.distributed`` (``scheduler``: an address or Client;
    None starts a 2-worker LocalCluster); see :mod:`nbtoolkit.batch.cluster` for how workers get their
    backend and share the rate limit. ``progress`` shows a tqdm bar.
    """
    if concurrency < 1:
        raise ConfigError(f"concurrency={concurrency!r} must be at least 1", "use e.g. 4")
    if executor not in ("threads", "dask"):
        raise ConfigError(f"executor={executor!r} is not known", 'use "threads" or "dask"')
    batch = to_items(items)
    spec = Backend.of(backend)
    bucket = _bucket(rate_limit)
    started = time.monotonic()
    store = open_store(output) if output is not None else None
    try:
        stored = store.load() if store is not None else {}
        finished: dict[str, ItemResult] = {
            item.id: stored[item.id]
            for item in batch
            if item.id in stored and (stored[item.id].ok or not retry_failed)
        }
        resumed = len(finished)
        todo = [item for item in batch if item.id not in finished]
        if executor == "dask":
            from nbtoolkit.batch.cluster import run_dask

            outcomes = run_dask(spec, todo, question, concurrency, bucket, scheduler)
        else:
            from nbtoolkit.batch.threads import run_threads

            outcomes = run_threads(spec, todo, question, concurrency, bucket)
        from tqdm.auto import tqdm

        failures = 0
        with (
            closing(outcomes),  # stops the executor even when this loop is what gets interrupted
            tqdm(
                total=len(batch), initial=resumed, disable=not progress, desc="batch", unit="item"
            ) as bar,
        ):
            for result in outcomes:
                if store is not None:
                    store.append(result)
                finished[result.id] = result
                failures += not result.ok
                bar.update(1)
                if failures:
                    bar.set_postfix(failed=failures, refresh=False)
    finally:
        if store is not None:
            store.close()
    return BatchResult(
        [finished[item.id] for item in batch],
        output=None if store is None else store.path,
        resumed=resumed,
        elapsed=time.monotonic() - started,
    )
