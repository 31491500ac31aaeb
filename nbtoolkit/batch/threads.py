"""The in-process executor: a thread pool with at most ``concurrency`` items in flight."""

from __future__ import annotations

import threading
from collections.abc import Generator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from itertools import islice

from nbtoolkit.batch.items import BatchItem
from nbtoolkit.batch.outcome import Backend, ItemResult, run_item
from nbtoolkit.batch.ratelimit import TokenBucket

__all__ = ["run_threads"]


def run_threads(
    backend: Backend,
    items: Sequence[BatchItem],
    question: str | None,
    concurrency: int,
    bucket: TokenBucket | None,
) -> Generator[ItemResult, None, None]:
    """Yield each item's result as it finishes. Items are submitted as others finish, so no more
    than ``concurrency`` are ever queued or running. A ``BaseException`` from the backend (e.g.
    KeyboardInterrupt) is re-raised here; queued items are then cancelled, and calls already in
    flight finish in the background with their results dropped (they run again on resume)."""
    built = threading.local()  # a factory's client, one per pool thread
    queue = iter(items)
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="nbtoolkit-batch")

    def submit(item: BatchItem) -> Future[ItemResult]:
        return pool.submit(run_item, backend, built, item, question, bucket)

    try:
        pending = {submit(item) for item in islice(queue, concurrency)}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
                following = next(queue, None)
                if following is not None:
                    pending.add(submit(following))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
