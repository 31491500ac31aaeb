"""One table from what a service answered to the :mod:`nbtoolkit.errors` exception, sans-I/O.

Every client (Qwen-Audio over HTTP, the dialog WebSocket, the Omni realtime WebSocket, the
audio-modalities SSE client) and the realtime/dialog error events map failures through
:func:`error_for`, so a status or code means the same thing whichever backend said it.

A failure is looked up by, in order:

1. its **error code**: a DashScope code (``Throttling.RateQuota`` is looked up whole, then by its
   family ``Throttling``) or an OpenAI-style error type (``rate_limit_error``), because the code is
   the more specific (the DashScope SDK reports in-stream errors as status 400 whatever they were);
2. its **status**: an HTTP status, or a WebSocket close code (1008 policy, 1011 internal error,
   1013 try again later);
3. failing both, any other 5xx is a server failure, any other 4xx a refused request, and anything
   else a :class:`~nbtoolkit.errors.ProtocolError`.

Sources: DashScope's error codes (https://www.alibabacloud.com/help/en/model-studio/error-code),
OpenAI's error types (https://platform.openai.com/docs/guides/error-codes), WebSocket close codes
(https://www.iana.org/assignments/websocket/websocket.xhtml#close-code-number). The table is also
written out in ``docs/errors.md``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from nbtoolkit.errors import (
    AuthError,
    BackendError,
    ConnectionLost,
    ProtocolError,
    RateLimited,
    ServerError,
)

__all__ = [
    "CLOSE_CODES",
    "CODES",
    "STATUSES",
    "Row",
    "code_for_status",
    "error_class",
    "error_for",
    "error_for_close",
    "lookup",
    "status_for_code",
]


@dataclass(frozen=True)
class Row:
    """One kind of failure: its exception, its canonical code and HTTP status, what it means
    (completes "<where> …") and what to do. ``local_fix`` replaces ``fix`` for the local server.
    ``error_type`` and ``close`` are how a realtime server reports it: the ``error.type`` of its
    ``error`` event and the close code that follows when the session cannot go on."""

    error: type[BackendError]
    code: str
    status: int
    meaning: str
    fix: str
    local_fix: str | None = None
    error_type: str = "invalid_request_error"
    close: int = 1008


_KEY_FIX = (
    "set DASHSCOPE_API_KEY to a valid key for this region "
    "(or call nbtoolkit.connect(local=True) to use the offline engine)"
)
_LOCAL_KEY_FIX = (
    "use nbtoolkit.connect(), which passes the local server's own token "
    "(DASHSCOPE_API_KEY is for the cloud only)"
)

_INVALID = Row(
    ProtocolError,
    "InvalidParameter",
    400,
    "refused the request as invalid",
    "fix what the message names and call again",
)
_INSPECTION = Row(
    ProtocolError,
    "DataInspectionFailed",
    400,
    "refused the input on content inspection",
    "change the text, audio or image the message points at",
)
_BAD_KEY = Row(
    AuthError, "InvalidApiKey", 401, "did not accept the API key", _KEY_FIX, _LOCAL_KEY_FIX
)
_DENIED = Row(
    AuthError,
    "AccessDenied",
    403,
    "denied this key access",
    "check that the key's account has this model enabled in this region "
    "(AccessDenied.Unpurchased: activate the model in the console), or choose another model",
    _LOCAL_KEY_FIX,
)
_ARREARS = Row(
    AuthError,
    "Arrearage",
    403,
    "refused the call because the account is overdue",
    "top up the Alibaba Cloud account, then call again",
)
_NOT_FOUND = Row(
    ProtocolError,
    "Model.NotExist",
    404,
    "has no such model or endpoint",
    "check the model name and the URL (models differ between the cn and intl regions)",
)
_TIMEOUT = Row(
    ConnectionLost,
    "RequestTimeOut",
    408,
    "gave up waiting for the request",
    "try again; if it keeps happening, send shorter audio",
)
_THROTTLED = Row(
    RateLimited,
    "Throttling",
    429,
    "is rate limiting this key: it sent more requests or tokens per minute than its quota allows",
    # "{wait}" is filled in by error_for with the server's Retry-After, when it gave one
    "{wait} and call again; send fewer requests at once (run_batch(..., concurrency=1, "
    "rate_limit=…)) or ask for a higher quota",
    error_type="rate_limit_error",
    close=1013,
)
_INTERNAL = Row(
    ServerError,
    "InternalError",
    500,
    "failed with an internal error",
    "try again in a moment; if it persists, the service is having trouble (quote the request_id)",
    error_type="server_error",
    close=1011,
)
_UNAVAILABLE = Row(
    ServerError,
    "ServiceUnavailable",
    503,
    "is unavailable (overloaded or in maintenance)",
    "try again in a minute",
    error_type="server_error",
    close=1011,
)
_GATEWAY_TIMEOUT = Row(
    ServerError,
    "GatewayTimeout",
    504,
    "timed out behind its gateway",
    "try again; shorter audio is answered sooner",
    error_type="server_error",
    close=1011,
)
_POLICY_CLOSE = Row(
    AuthError,
    "InvalidApiKey",
    1008,
    "closed the connection for a policy violation (1008), which is how a key is refused",
    _KEY_FIX,
    _LOCAL_KEY_FIX,
)
_INTERNAL_CLOSE = Row(
    ServerError,
    "InternalError",
    1011,
    "closed the connection on an internal error (1011)",
    _INTERNAL.fix,
    error_type="server_error",
    close=1011,
)
_TRY_LATER_CLOSE = Row(
    ServerError,
    "ServiceUnavailable",
    1013,
    "closed the connection because it is overloaded (1013, try again later)",
    _UNAVAILABLE.fix,
    error_type="server_error",
    close=1013,
)

#: Error codes (DashScope codes and their families, OpenAI-style error types) → row.
CODES: dict[str, Row] = {
    "InvalidParameter": _INVALID,
    "DataInspectionFailed": _INSPECTION,
    "InvalidApiKey": _BAD_KEY,
    "AccessDenied": _DENIED,
    "Arrearage": _ARREARS,
    "Model.NotExist": _NOT_FOUND,
    "RequestTimeOut": _TIMEOUT,
    "Throttling": _THROTTLED,
    "InternalError": _INTERNAL,
    "ServiceUnavailable": _UNAVAILABLE,
    "GatewayTimeout": _GATEWAY_TIMEOUT,
    # OpenAI-style types: audio-modalities servers and the realtime ``error.type``
    "invalid_request_error": _INVALID,
    "authentication_error": _BAD_KEY,
    "invalid_api_key": _BAD_KEY,
    "permission_error": _DENIED,
    "not_found_error": _NOT_FOUND,
    "rate_limit_error": _THROTTLED,
    "rate_limit_exceeded": _THROTTLED,
    "server_error": _INTERNAL,
}

#: HTTP statuses → row. 502 has no DashScope code of its own: it is an internal error.
STATUSES: dict[int, Row] = {
    400: _INVALID,
    401: _BAD_KEY,
    403: _DENIED,
    404: _NOT_FOUND,
    408: _TIMEOUT,
    429: _THROTTLED,
    500: _INTERNAL,
    502: _INTERNAL,
    503: _UNAVAILABLE,
    504: _GATEWAY_TIMEOUT,
}

#: WebSocket close codes that say more than "the connection dropped" → row.
CLOSE_CODES: dict[int, Row] = {1008: _POLICY_CLOSE, 1011: _INTERNAL_CLOSE, 1013: _TRY_LATER_CLOSE}


def lookup(
    status: int | None = None, code: str | None = None, error_type: str | None = None
) -> Row | None:
    """The row for a failure (code first, then an OpenAI-style ``error_type`` such as the realtime
    ``error.type``, then status; see the module docstring), or None."""
    for key in (code, error_type):
        if key:
            row = CODES.get(key) or CODES.get(key.split(".")[0])
            if row is not None:
                return row
    if status is None:
        return None
    row = STATUSES.get(status) or CLOSE_CODES.get(status)
    if row is not None:
        return row
    if 500 <= status < 600:
        return _INTERNAL
    if 400 <= status < 500:
        return _INVALID
    return None


def error_class(status: int | None = None, code: str | None = None) -> type[BackendError]:
    """The exception class for a status / close code and error code (ProtocolError if unknown)."""
    row = lookup(status, code)
    return ProtocolError if row is None else row.error


def code_for_status(status: int) -> str:
    """The DashScope error code a server sends with an HTTP status."""
    row = lookup(status)
    return "InvalidParameter" if row is None else row.code


def status_for_code(code: str | None) -> int | None:
    """The HTTP status that goes with a DashScope error code (``Throttling.RateQuota`` → 429)."""
    row = lookup(None, code)
    return None if row is None or row.status >= 1000 else row.status


def _wait(retry_after: float | None) -> str:
    if retry_after is None:
        return "wait a little"
    return f"wait {retry_after:.0f} s (the server's Retry-After)"


def error_for(
    status: int | None,
    code: str | None,
    message: str | None,
    *,
    where: str = "The service",
    request_id: str | None = None,
    retry_after: float | None = None,
    partial: Any = None,
    local: bool = False,
    error_type: str | None = None,
) -> BackendError:
    """The exception for a failure a server reported: "<where> <meaning> (<status> <code>:
    <message>) — <fix>", with ``status``, ``code``, ``request_id``, ``partial`` and, for a rate limit,
    ``retry_after`` set. ``local`` picks the fix for nbtoolkit's own local server; ``error_type``
    is an OpenAI-style type read when the code is not in the table."""
    row = lookup(status, code, error_type)
    code = code or (row.code if row is not None else None)
    said = " ".join(str(part) for part in (status, code) if part is not None)
    if message and message != code:
        said = f"{said}: {message}" if said else message
    kw: dict[str, Any] = {"status": status, "code": code, "request_id": request_id}
    kw["partial"] = partial
    if row is None:
        return ProtocolError(
            f"{where} answered with an error nbtoolkit does not know ({said or 'no details'})",
            "read the message; if the request looks right, try again",
            **kw,
        )
    fix = row.local_fix if local and row.local_fix else row.fix
    problem = f"{where} {row.meaning} ({said})" if said else f"{where} {row.meaning}"
    if row.error is RateLimited:
        return RateLimited(
            problem, fix.format(wait=_wait(retry_after)), retry_after=retry_after, **kw
        )
    return row.error(problem, fix, **kw)


def error_for_close(
    code: int,
    reason: str | None,
    *,
    where: str,
    fix: str,
    partial: Any = None,
    local: bool = False,
) -> BackendError:
    """The exception for a WebSocket closed with ``code``: the table's row for 1008/1011/1013,
    otherwise :class:`~nbtoolkit.errors.ConnectionLost` with the caller's ``fix``."""
    if code in CLOSE_CODES:
        return error_for(code, None, reason or None, where=where, partial=partial, local=local)
    said = f"code {code}: {reason}" if reason else f"code {code}"
    return ConnectionLost(
        f"{where} closed the connection ({said}) before the answer was complete",
        fix,
        status=code,
        partial=partial,
    )


def parse_error_body(body: bytes | str | None) -> tuple[str | None, str | None]:
    """``(message, code)`` of an error response's body: DashScope's ``{code, message}``, OpenAI's
    ``{error: {message, type|code}}`` or FastAPI's ``{detail}``; a body that is not JSON gives its
    first 200 characters as the message."""
    if not body:
        return None, None
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        doc = json.loads(text)
    except ValueError:
        return text[:200], None
    if not isinstance(doc, dict):
        return str(doc)[:200], None
    inner: dict[str, Any] = doc
    for key in ("error", "detail"):  # OpenAI nests under "error", FastAPI under "detail"
        if isinstance(doc.get(key), dict):
            inner = doc[key]
            break
    message = inner.get("message") or (
        doc.get("detail") if isinstance(doc.get("detail"), str) else None
    )
    code = inner.get("code") or inner.get("type")
    return (str(message) if message else None), (str(code) if code else None)
