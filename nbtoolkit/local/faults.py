"""Switchable fault injection for the local server, shared by every protocol route.

Tests (and teachers showing failure modes) set ``server.faults = Faults(...)``; each route consults
it at the points named below. ``Faults()`` (the default) injects nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

__all__ = ["Faults", "abort_connection"]


@dataclass
class Faults:
    """What to break. Counters are per connection/request unless said otherwise."""

    #: Refuse the next ``fail_times`` requests/connections with this HTTP status (429, 500, 503…).
    #: WebSocket routes answer with the protocol's own error event carrying the same meaning.
    status: int | None = None
    fail_times: int = 1
    #: With ``status=429``: the Retry-After header value in seconds.
    retry_after: float | None = None
    #: Drop the connection after this many answer frames / SSE chunks have been sent.
    drop_after: int | None = None
    #: With ``drop_after`` on WebSockets: close with this code (1011, 1001); None = abrupt TCP close.
    close_code: int | None = None
    #: Send one malformed (non-JSON) frame after this many answer frames.
    malformed_after: int | None = None
    #: Send one event of an unknown type after this many answer frames.
    unknown_event_after: int | None = None
    #: Send one frame larger than the protocol allows after this many answer frames.
    oversized_after: int | None = None
    #: Seconds to wait before every answer frame (a slow server).
    delay: float = 0.0
    #: Accept the request and then never answer.
    never_answer: bool = False

    def take_status(self) -> int | None:
        """The status to fail this request with, consuming one of ``fail_times`` (None = no fault)."""
        if self.status is None or self.fail_times <= 0:
            return None
        self.fail_times -= 1
        return self.status

    async def pace(self) -> None:
        """Await before sending an answer frame (slow server / never answer)."""
        if self.never_answer:
            await asyncio.Event().wait()
        if self.delay:
            await asyncio.sleep(self.delay)


def abort_connection(ws: Any) -> bool:
    """Cut a WebSocket's TCP connection with no close frame, as a crashed server or a lost network does.

    ASGI hides the transport; ``ws._receive`` is (a wrapper, with ``__wrapped__``, of) a bound method
    of uvicorn's protocol object, which holds it. Returns False when the transport cannot be reached (the caller then closes with 1011).
    """
    receive: Any = getattr(ws, "_receive", None)
    while hasattr(receive, "__wrapped__"):  # middleware (admission) wraps uvicorn's receive
        receive = receive.__wrapped__
    protocol = getattr(receive, "__self__", None)
    transport = getattr(protocol, "transport", None)
    if transport is None:
        return False
    transport.abort()
    return True
