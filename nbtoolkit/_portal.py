"""Run a coroutine to completion from synchronous code, even inside a running Jupyter cell.

A Jupyter cell runs on the kernel's event loop, so ``asyncio.run`` is refused there and blocking that
loop on its own coroutine would deadlock. The portal is one daemon thread with its own loop that
runs such coroutines; the caller's thread waits on the result with a bound.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from nbtoolkit.errors import ConnectionLost

__all__ = ["portal_loop", "run_sync"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def portal_loop() -> asyncio.AbstractEventLoop:
    """The portal's event loop, started on first use."""
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="nbtoolkit-portal", daemon=True)
            thread.start()
            _loop = loop
        return _loop


def run_sync(coro: Coroutine[Any, Any, T], *, timeout: float, what: str) -> T:
    """Run ``coro`` on the portal and wait for it at most ``timeout`` seconds.

    ``coro`` carries its own bounds; ``timeout`` is the backstop for a bug, and names ``what`` when
    it fires.
    """
    future = asyncio.run_coroutine_threadsafe(coro, portal_loop())
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise ConnectionLost(
            f"{what} did not finish within {timeout:.0f} s", "try again; raise the client's timeout"
        ) from None


def in_running_loop() -> bool:
    """True when called from a thread whose event loop is running (e.g. a Jupyter cell)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
