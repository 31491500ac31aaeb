"""Retry policy shared by every client: which failures to retry, and how long to wait.

Pure functions, no I/O: the clients do the sleeping. Retries happen only *before* an answer has
started streaming; once a stream has begun, a failure is reported with what had arrived.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

__all__ = ["RETRYABLE_STATUSES", "RetryPolicy", "parse_retry_after"]

RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    """``max_retries`` extra attempts with jittered exponential backoff from ``initial`` to ``maximum``
    seconds; a server's Retry-After is honoured up to ``retry_after_cap`` seconds."""

    max_retries: int = 2
    initial: float = 0.5
    maximum: float = 8.0
    retry_after_cap: float = 120.0
    statuses: frozenset[int] = field(default=RETRYABLE_STATUSES)

    def retryable(self, status: int | None) -> bool:
        """True for connect errors (``status is None``) and the retryable HTTP statuses."""
        return status is None or status in self.statuses

    def delay(
        self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        if retry_after is not None:
            return min(retry_after, self.retry_after_cap)
        base = min(self.maximum, self.initial * (2**attempt))
        return base * (0.75 + 0.5 * (rng or random).random())  # ±25 % jitter

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        for attempt in range(self.max_retries):
            yield self.delay(attempt, rng=rng)


NO_RETRY = RetryPolicy(max_retries=0)
