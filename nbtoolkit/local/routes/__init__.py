"""What every route shares: engine work runs on the app's bounded engine pool, never inline.

:func:`create_app <nbtoolkit.local.server.create_app>` gives each app its pool
(``app.state.engine_pool``, :func:`engine_pool`); routes await :func:`run_engine`. The pool is
bounded to the cores, so under load work queues instead of taking CPU from the event loop, and no
loop that reads a socket awaits it (see :mod:`.realtime` and :mod:`.dialog`): every connection keeps
reading its frames — WebSocket pings are answered — and its VAD, which runs inline, keeps detecting
speech. (This lives here, not in ``server``, because ``server`` imports a route module.)

Every job is submitted on behalf of a :class:`Lane` — one per WebSocket session or HTTP request,
made current by :mod:`nbtoolkit.local.admission` — so that when the client goes, its queued jobs are
cancelled and nothing it would have asked for next (a follow-up TTS clause, the next speculative
transcript) starts. A job already running cannot be interrupted (pocketsphinx and eSpeak decode in
one C call); it finishes and its result is dropped. The pool counts queued and running jobs and the
seconds its threads were busy.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from starlette.applications import Starlette

__all__ = ["ENGINE_WORKERS", "EnginePool", "Lane", "current_lane", "engine_pool", "run_engine"]

#: Threads for engine work (ASR, TTS, answers, media decoding): one per core. The work is CPU-bound
#: and releases the GIL (pocketsphinx and eSpeak through ctypes), so more threads would only contend
#: for the same cores and take CPU from the event loop (the recognizer keeps one decoder per core).
ENGINE_WORKERS = os.cpu_count() or 2

_P = ParamSpec("_P")
_T = TypeVar("_T")


class Lane:
    """The engine work of one client (a session or a request): what it has queued or running, and
    how many seconds of engine threads its finished jobs took. :meth:`close` when the client goes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._futures: set[Future[Any]] = set()
        self.busy = 0.0
        self.closed = False

    def _track(self, future: Future[Any]) -> bool:
        with self._lock:
            if self.closed:
                return False
            self._futures.add(future)
        future.add_done_callback(self._untrack)
        return True

    def _untrack(self, future: Future[Any]) -> None:
        with self._lock:
            self._futures.discard(future)

    def _add_busy(self, seconds: float) -> None:
        with self._lock:
            self.busy += seconds

    def close(self) -> int:
        """Cancel every job of this lane that has not started, and refuse new ones. Returns how
        many were cancelled. Idempotent."""
        with self._lock:
            self.closed = True
            pending = list(self._futures)
        return sum(f.cancel() for f in pending)


#: The lane engine work is submitted for; set by the admission middleware for each connection and
#: inherited by the tasks its route starts.
current_lane: contextvars.ContextVar[Lane | None] = contextvars.ContextVar(
    "nbtoolkit_engine_lane", default=None
)


class EnginePool(ThreadPoolExecutor):
    """A thread pool that counts its work: ``queued`` and ``active`` jobs, and ``busy`` seconds.

    :meth:`submit` files the job under the :data:`current_lane`; a closed lane gets an already
    cancelled future back, so a client that has gone starts no new work.
    """

    def __init__(self, workers: int = ENGINE_WORKERS) -> None:
        super().__init__(workers, thread_name_prefix="nbtoolkit-engine")
        self.workers = workers
        self._count_lock = threading.Condition()
        self.queued = 0
        self.active = 0
        self.busy = 0.0

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        lane = current_lane.get()
        if lane is not None and lane.closed:
            return _cancelled()
        with self._count_lock:
            self.queued += 1
            self._count_lock.notify_all()
        future = super().submit(self._run, lane, fn, args, kwargs)
        future.add_done_callback(self._dropped)
        if lane is not None and not lane._track(future):
            future.cancel()  # the lane closed between the check and now
        return future

    def _run(self, lane: Lane | None, fn: Callable[..., _T], args: Any, kwargs: Any) -> _T:
        with self._count_lock:
            self.queued -= 1
            self.active += 1
            self._count_lock.notify_all()
        start = time.monotonic()
        try:
            return fn(*args, **kwargs)
        finally:
            took = time.monotonic() - start
            with self._count_lock:
                self.active -= 1
                self.busy += took
                self._count_lock.notify_all()
            if lane is not None:
                lane._add_busy(took)

    def _dropped(self, future: Future[Any]) -> None:
        if future.cancelled():  # it never ran, so _run did not take it off the queue
            with self._count_lock:
                self.queued -= 1
                self._count_lock.notify_all()

    def wait_for(self, predicate: Callable[[EnginePool], bool], timeout: float) -> bool:
        """Block until ``predicate(self)`` holds (True) or ``timeout`` seconds pass (False); it is
        checked whenever a job is submitted, starts, finishes or is cancelled."""
        with self._count_lock:
            return self._count_lock.wait_for(lambda: predicate(self), timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Block until no job is queued or running (True), or ``timeout`` seconds pass (False)."""
        return self.wait_for(lambda pool: pool.queued == 0 and pool.active == 0, timeout)


def _cancelled() -> Future[Any]:
    future: Future[Any] = Future()
    future.cancel()
    return future


def engine_pool(workers: int = ENGINE_WORKERS) -> EnginePool:
    """A new engine pool (its threads start on first use, so an idle app costs nothing)."""
    return EnginePool(workers)


async def run_engine(
    app: Starlette, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
) -> _T:
    """``fn(*args, **kwargs)`` on ``app``'s engine pool, awaited without blocking the event loop.

    Cancelling the awaiting task (a barge-in, a client that left) drops the job if it has not
    started yet; so does the client's lane closing (see :class:`Lane`). An app not made by
    ``create_app`` (another module's app around
    :func:`~nbtoolkit.local.routes.audio_modalities.build_router`) has no pool: asyncio's default
    executor runs the work there.
    """
    pool: ThreadPoolExecutor | None = getattr(app.state, "engine_pool", None)
    call = functools.partial(fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(pool, call)
