"""CPU time spent loading models, so that admission does not take it for the cost of a session.

Models load on first use (a notebook's server starts at once), so the first sessions of a server
pay for them: 1–3 CPU-seconds (pocketsphinx's grammar decoders, Whisper's weights), worth several
sessions' demand when it is averaged over a minute. :func:`nbtoolkit.local.admission.Capacity`
subtracts :func:`load_cpu_seconds` from the process's CPU time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["load_cpu_seconds", "loading"]

_lock = threading.Lock()
_seconds = 0.0


@contextmanager
def loading() -> Iterator[None]:
    """Count the calling thread's CPU time inside the block as model loading (loads measured here
    run on the calling thread: its CPU time matched the process's to 0.01 s)."""
    global _seconds
    start = time.thread_time()
    try:
        yield
    finally:
        spent = time.thread_time() - start
        with _lock:
            _seconds += spent


def load_cpu_seconds() -> float:
    """CPU seconds this process has spent loading models so far."""
    with _lock:
        return _seconds
