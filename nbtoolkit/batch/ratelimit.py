"""A requests-per-second limit: a token bucket kept as one number (GCRA, "virtual scheduling").

:meth:`TokenBucket.reserve` is pure bookkeeping on a time you pass in, so it is tested without
clocks; :meth:`TokenBucket.acquire` reads the clock, reserves under a lock and sleeps for the wait.
Reservations are made in arrival order, so concurrent callers are spaced ``1 / rate`` apart instead
of all waking at once when a token frees up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from nbtoolkit.errors import ConfigError

__all__ = ["TokenBucket"]


class TokenBucket:
    """At most ``rate`` requests per second on average, with up to ``burst`` at once after a pause.

    ``clock`` and ``sleep`` default to :func:`time.monotonic` and :func:`time.sleep`; tests pass fakes.
    """

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if not rate > 0:
            raise ConfigError(
                f"rate_limit={rate!r} is not a positive number of requests per second",
                "pass e.g. rate_limit=5, or rate_limit=None for no limit",
            )
        if burst < 1:
            raise ConfigError(f"burst={burst!r} must be at least 1", "use burst=1 for even spacing")
        self.rate = float(rate)
        self.burst = int(burst)
        self.clock = clock
        self.sleep = sleep
        self._interval = 1.0 / self.rate
        self._tolerance = (self.burst - 1) * self._interval
        self._tat = float("-inf")  # theoretical arrival time of the next request
        self._lock = threading.Lock()

    def reserve(self, now: float) -> float:
        """Take the next slot for a request arriving at ``now``; return the seconds to wait for it."""
        tat = max(self._tat, now)
        self._tat = tat + self._interval
        return max(0.0, tat - self._tolerance - now)

    def acquire(self) -> float:
        """Wait (sleeping) until a request may start; returns the seconds waited."""
        with self._lock:
            wait = self.reserve(self.clock())
        if wait > 0:
            self.sleep(wait)  # pacing requests is the point here, not waiting for an event
        return wait

    def split(self, parts: int) -> TokenBucket:
        """A fresh bucket with ``1 / parts`` of this rate (one per Dask worker), real clock."""
        return TokenBucket(self.rate / max(1, parts), max(1, self.burst // max(1, parts)))

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate:g}/s, burst={self.burst})"
