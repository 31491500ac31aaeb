"""What every route shares: engine work runs on the app's bounded engine pool, never inline.

:func:`create_app <nbtoolkit.local.server.create_app>` gives each app its pool
(``app.state.engine_pool``, :func:`engine_pool`); routes await :func:`run_engine`. The pool is
bounded to the cores, so under load work queues instead of taking CPU from the event loop, and no
loop that reads a socket awaits it (see :mod:`.realtime` and :mod:`.dialog`): every connection keeps
reading its frames — WebSocket pings are answered — and its VAD, which runs inline, keeps detecting
speech. (This lives here, not in ``server``, because ``server`` imports a route module.)
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from starlette.applications import Starlette

__all__ = ["ENGINE_WORKERS", "engine_pool", "run_engine"]

#: Threads for engine work (ASR, TTS, answers, media decoding): one per core. The work is CPU-bound
#: and releases the GIL (pocketsphinx and eSpeak through ctypes), so more threads would only contend
#: for the same cores and take CPU from the event loop (the recognizer keeps one decoder per core).
ENGINE_WORKERS = os.cpu_count() or 2

_P = ParamSpec("_P")
_T = TypeVar("_T")


def engine_pool() -> ThreadPoolExecutor:
    """A new engine pool (its threads start on first use, so an idle app costs nothing)."""
    return ThreadPoolExecutor(ENGINE_WORKERS, thread_name_prefix="nbtoolkit-engine")


async def run_engine(
    app: Starlette, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
) -> _T:
    """``fn(*args, **kwargs)`` on ``app``'s engine pool, awaited without blocking the event loop.

    Cancelling the awaiting task (a barge-in, a client that left) drops the job if it has not
    started yet. An app not made by ``create_app`` (another module's app around
    :func:`~nbtoolkit.local.routes.audio_modalities.build_router`) has no pool: asyncio's default
    executor runs the work there.
    """
    pool: ThreadPoolExecutor | None = getattr(app.state, "engine_pool", None)
    call = functools.partial(fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(pool, call)
