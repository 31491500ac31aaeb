"""One error hierarchy for nbtoolkit. Every message says what went wrong *and* what to do.

    NbToolkitError
    ├── ConfigError          bad or missing configuration (key, region, endpoint)
    ├── AudioError           audio that cannot be used (empty, corrupt, NaN, odd rate, too large…)
    ├── ImageError           images that cannot be sent (not JPEG, too large after re-encoding…)
    ├── BudgetExceeded       the session ledger's budget is spent
    └── BackendError         anything a backend (cloud or local) answered or failed to answer
        ├── AuthError        401/403, wrong or missing key
        ├── RateLimited      429 (``retry_after`` seconds, when the server said)
        ├── ServerError      5xx
        ├── ProtocolError    a message we could not understand, or a request the server refused
        └── ConnectionLost   the connection dropped or timed out mid-answer

Errors raised mid-answer carry what had arrived so far in ``partial`` so nothing received is lost.
Any registered secret (see :class:`nbtoolkit.config.Secret`) is scrubbed from messages.
"""

from __future__ import annotations

from typing import Any

from nbtoolkit._scrub import scrub_secrets

__all__ = [
    "AudioError",
    "AuthError",
    "BackendError",
    "BudgetExceeded",
    "ConfigError",
    "ConnectionLost",
    "ImageError",
    "NbToolkitError",
    "ProtocolError",
    "RateLimited",
    "ServerError",
]


class NbToolkitError(Exception):
    """Base class. ``str(err)`` is "<problem> — <fix>"; secrets never appear in it."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = scrub_secrets(problem)
        self.fix = scrub_secrets(fix) if fix else None
        super().__init__(self.problem if not self.fix else f"{self.problem} — {self.fix}")


class ConfigError(NbToolkitError):
    """Configuration is missing or invalid."""


class AudioError(NbToolkitError):
    """Audio input cannot be used as given."""


class ImageError(NbToolkitError):
    """An image cannot be sent as given."""


class BudgetExceeded(NbToolkitError):
    """The usage ledger's budget has been spent; further calls are refused."""


class BackendError(NbToolkitError):
    """A backend failed. ``partial`` holds what was received before the failure (text, audio…)."""

    def __init__(
        self,
        problem: str,
        fix: str | None = None,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        partial: Any = None,
    ) -> None:
        super().__init__(problem, fix)
        self.status = status
        self.code = code
        self.request_id = request_id
        self.partial = partial


class AuthError(BackendError):
    """The key was missing, wrong, or not allowed to use this model."""


class RateLimited(BackendError):
    """HTTP 429 / throttling. ``retry_after`` is the server's hint in seconds, if any."""

    def __init__(
        self, problem: str, fix: str | None = None, *, retry_after: float | None = None, **kw: Any
    ) -> None:
        super().__init__(problem, fix, **kw)
        self.retry_after = retry_after


class ServerError(BackendError):
    """The service failed (5xx)."""


class ProtocolError(BackendError):
    """A message broke the protocol, or the server refused a request as invalid."""


class ConnectionLost(BackendError):
    """The connection dropped, closed abnormally, or timed out before the answer was complete."""
