"""The distributed executor: the same items run on ``dask.distributed`` workers.

* **Cluster.** ``scheduler=None`` starts a ``LocalCluster`` (processes, 2 workers, 1 thread each) for
  the run and closes it afterwards; a scheduler address (``"tcp://host:8786"``) or a ``Client`` uses
  that cluster and leaves it running.
* **Backends on workers.** The backend travels with cloudpickle. A client object that holds
  endpoints cannot (its key is a :class:`~nbtoolkit.config.Secret`, which refuses to be pickled):
  pass a factory such as ``QwenAudio``. Each worker thread then builds its own client on the worker,
  so the key is read from the worker's own ``DASHSCOPE_API_KEY``; without one, ``QwenAudio()`` calls
  ``nbtoolkit.connect()``, whose process-wide server starts an offline engine in each worker process,
  so offline transcription scales with the workers.
* **Concurrency** is bounded on the client: at most ``concurrency`` tasks are submitted and not yet
  finished; the Dask scheduler places them on workers.
* **Rate limit.** Each worker process gets its own token bucket with ``rate / n_workers`` (``n_workers``
  counted when the run starts), so together they stay within ``rate`` with no round trip to the
  scheduler per request. The cost of that choice: a worker that is idle or gone leaves its share
  unused (the batch runs slower than the limit, never faster). Workers added during a run would
  exceed it.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from itertools import islice
from typing import Any

from nbtoolkit.batch.items import BatchItem
from nbtoolkit.batch.outcome import Backend, ItemResult, failure, run_item
from nbtoolkit.batch.ratelimit import TokenBucket
from nbtoolkit.errors import ConfigError

__all__ = ["run_dask"]

#: LocalCluster settings when no scheduler is given.
LOCAL_CLUSTER = {"n_workers": 2, "threads_per_worker": 1, "processes": True}


@dataclass(frozen=True)
class _Task:
    """What every task of one run shares; ``token`` names the run's state on each worker."""

    token: str
    backend: Backend
    question: str | None
    rate: float | None  # per worker
    burst: int


# Per worker process: run token -> (clients per thread, token bucket). A module global because a
# task is a plain function call on the worker; forgotten at the end of the run.
_RUNS: dict[str, tuple[threading.local, TokenBucket | None]] = {}
_RUNS_LOCK = threading.Lock()


def _run_on_worker(task: _Task, item: BatchItem) -> ItemResult:
    with _RUNS_LOCK:
        state = _RUNS.get(task.token)
        if state is None:
            bucket = TokenBucket(task.rate, task.burst) if task.rate else None
            state = _RUNS[task.token] = (threading.local(), bucket)
    built, bucket = state
    return run_item(task.backend, built, item, task.question, bucket)


def _forget(token: str) -> None:
    with _RUNS_LOCK:
        _RUNS.pop(token, None)


def _check_picklable(backend: Backend) -> None:
    import cloudpickle

    try:
        cloudpickle.dumps(backend)
    except Exception as exc:
        raise ConfigError(
            f"The backend cannot be sent to Dask workers ({type(exc).__name__}; a client holding "
            "an API key never travels)",
            "pass a factory instead, e.g. run_batch(items, QwenAudio, executor='dask') or "
            "lambda: QwenAudio(model=…): each worker builds its own client from its own "
            "DASHSCOPE_API_KEY, or starts its own offline engine",
        ) from None


@contextmanager
def _client(scheduler: Any) -> Iterator[Any]:
    """A Client for ``scheduler``; what this opens (a LocalCluster, a connection) it also closes."""
    from distributed import Client, LocalCluster

    if isinstance(scheduler, Client):
        yield scheduler
    elif scheduler is None:
        with (
            LocalCluster(dashboard_address=":0", **LOCAL_CLUSTER) as cluster,  # any free port
            Client(cluster, set_as_default=False) as client,
        ):
            yield client
    else:
        with Client(scheduler, set_as_default=False) as client:
            yield client


def _outcome(future: Any, item: BatchItem) -> ItemResult:
    """The task's result; a task that failed outside the backend call (e.g. its worker died,
    ``KilledWorker``) is recorded as that item's failure, like any other error."""
    try:
        result: ItemResult = future.result()
    except Exception as exc:
        return failure(item, exc)
    return result


def run_dask(
    backend: Backend,
    items: Sequence[BatchItem],
    question: str | None,
    concurrency: int,
    bucket: TokenBucket | None,
    scheduler: Any = None,
) -> Generator[ItemResult, None, None]:
    """Yield each item's result as it finishes on the cluster (see the module doc)."""
    from distributed import as_completed

    _check_picklable(backend)
    if not items:  # everything resumed: no cluster to start
        return
    with _client(scheduler) as client:
        n_workers = max(1, len(client.scheduler_info()["workers"]))
        share = bucket.split(n_workers) if bucket is not None else None
        task = _Task(
            uuid.uuid4().hex,
            backend,
            question,
            share.rate if share else None,
            share.burst if share else 1,
        )
        [shared] = client.scatter([task], broadcast=True, hash=False)
        queue = iter(items)

        pending: dict[Any, BatchItem] = {}

        def submit(item: BatchItem) -> Any:
            future = client.submit(_run_on_worker, shared, item, pure=False)
            pending[future] = item
            return future

        first = [submit(item) for item in islice(queue, concurrency)]
        running = as_completed(first, loop=client.loop, raise_errors=False)
        try:
            for future in running:
                yield _outcome(future, pending.pop(future))
                following = next(queue, None)
                if following is not None:
                    running.add(submit(following))
        finally:
            client.cancel(list(pending))
            with suppress(Exception):  # tidying the workers must not hide why the run ended
                client.run(_forget, task.token)
