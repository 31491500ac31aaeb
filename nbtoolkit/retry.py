"""Retry policy shared by every client: which failures to retry, and how long to wait.

:class:`RetryPolicy` decides (no I/O); :func:`retrying` and :func:`retrying_async` run an attempt
under a policy, sleeping between attempts. Retries happen only *before* an answer has started
streaming; once a stream has begun, a failure is reported with what had arrived.

Each retry is logged on the ``nbtoolkit.retry`` logger, as a warning when the wait is
:data:`NOTICEABLE_WAIT_S` or longer (a full local server's 10 s ``Retry-After``, say), so a notebook
cell that waits shows what it waits for. A server that asks for a longer wait (``Retry-After``)
than the policy's ``retry_after_cap`` is not waited for: the :class:`~nbtoolkit.errors.RateLimited` it caused is raised at once, with
``retry_after`` set, instead of blocking for the cap and being refused again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import TypeVar

from nbtoolkit.errors import BackendError, ConnectionLost, RateLimited, ServerError

__all__ = [
    "NOTICEABLE_WAIT_S",
    "NO_RETRY",
    "RETRYABLE_STATUSES",
    "RetryPolicy",
    "parse_retry_after",
    "retrying",
    "retrying_async",
]

log = logging.getLogger("nbtoolkit.retry")
T = TypeVar("T")

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
    seconds; a server's Retry-After is waited for when it is at most ``retry_after_cap`` seconds,
    and a longer one ends the retries at once (:meth:`next_wait`)."""

    max_retries: int = 2
    initial: float = 0.5
    maximum: float = 8.0
    retry_after_cap: float = 120.0
    statuses: frozenset[int] = field(default=RETRYABLE_STATUSES)

    def retryable(self, status: int | None) -> bool:
        """True for connect errors (``status is None``) and the retryable HTTP statuses."""
        return status is None or status in self.statuses

    def retryable_error(self, error: BackendError) -> bool:
        """True for an error worth another attempt: an HTTP status in :attr:`statuses`; without
        one (a failed connect, a WebSocket close code), a rate limit, server error or lost
        connection. Refusals (auth, invalid requests) are never retried."""
        if error.status is not None and 100 <= error.status < 600:
            return error.status in self.statuses
        return isinstance(error, (RateLimited, ServerError, ConnectionLost))

    def gives_up(self, retry_after: float | None) -> bool:
        """True when the server asked for a longer wait than :attr:`retry_after_cap`: retrying
        sooner would be refused again, so the caller should raise at once."""
        return retry_after is not None and retry_after > self.retry_after_cap

    def next_wait(
        self,
        attempt: int,
        error: BackendError,
        *,
        retryable: bool | None = None,
        rng: random.Random | None = None,
    ) -> float | None:
        """Seconds to wait before retry number ``attempt`` (0-based) after ``error``, or ``None``
        to give up now: the retries are spent, the error is not retryable (``retryable``
        overrides :meth:`retryable_error`), or its ``retry_after`` is beyond the cap."""
        if attempt >= self.max_retries:
            return None
        if not (self.retryable_error(error) if retryable is None else retryable):
            return None
        retry_after = getattr(error, "retry_after", None)
        if self.gives_up(retry_after):
            return None
        return self.delay(attempt, retry_after, rng)

    def delay(
        self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        if retry_after is not None:
            return min(retry_after, self.retry_after_cap)
        base = min(self.maximum, self.initial * (2**attempt))
        return base * (0.75 + 0.5 * (rng or random).random())  # ±25 % jitter


#: A policy that never retries.
NO_RETRY = RetryPolicy(max_retries=0)


#: Waits at least this long are logged as warnings: a notebook shows them (Python's last-resort
#: handler prints warnings when logging is not set up), so a cell that waits says why.
NOTICEABLE_WAIT_S = 2.0


def _log_retry(error: BackendError, attempt: int, policy: RetryPolicy, wait: float) -> None:
    level = logging.WARNING if wait >= NOTICEABLE_WAIT_S else logging.INFO
    log.log(
        level, "%s — retry %d of %d in %.2f s", error.problem, attempt, policy.max_retries, wait
    )


def retrying(
    attempt: Callable[[], T],
    policy: RetryPolicy,
    *,
    retryable: Callable[[BackendError], bool] | None = None,
) -> T:
    """``attempt()``, retried under ``policy`` while it raises a retryable
    :class:`~nbtoolkit.errors.BackendError` (``retryable`` replaces
    :meth:`RetryPolicy.retryable_error`); the last error is raised when the policy gives up."""
    n = 0
    while True:
        try:
            return attempt()
        except BackendError as error:
            wait = policy.next_wait(
                n, error, retryable=None if retryable is None else retryable(error)
            )
            if wait is None:
                raise
            n += 1
            _log_retry(error, n, policy, wait)
            time.sleep(wait)  # backoff between attempts, not a wait for an event


async def retrying_async(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    retryable: Callable[[BackendError], bool] | None = None,
) -> T:
    """:func:`retrying` for a coroutine: ``await attempt()``, sleeping without blocking the loop."""
    n = 0
    while True:
        try:
            return await attempt()
        except BackendError as error:
            wait = policy.next_wait(
                n, error, retryable=None if retryable is None else retryable(error)
            )
            if wait is None:
                raise
            n += 1
            _log_retry(error, n, policy, wait)
            await asyncio.sleep(wait)  # backoff between attempts, not a wait for an event
