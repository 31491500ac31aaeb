"""Bearer-token and Origin checks for the local server (HTTP 401, WebSocket close 1008)."""

from __future__ import annotations

import hmac
from urllib.parse import urlparse

from fastapi import HTTPException, Request, WebSocket

from nbtoolkit.config import LOOPBACK_HOSTS

__all__ = ["check_http", "check_websocket", "origin_allowed"]


def _bearer(header: str | None) -> str:
    if not header:
        return ""
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def _token_ok(expected: str, header: str | None) -> bool:
    return hmac.compare_digest(_bearer(header).encode(), expected.encode())


def origin_allowed(origin: str | None) -> bool:
    """Non-browser clients send no Origin (or websocket-client's ``http://127.0.0.1:PORT``); browsers
    must come from a loopback page (JupyterLab on localhost)."""
    if not origin or origin == "null":
        return origin is None
    host = urlparse(origin).hostname or ""
    return host in LOOPBACK_HOSTS


def check_http(request: Request) -> None:
    """FastAPI dependency: 401 in DashScope's error shape unless the bearer token matches."""
    token: str = request.app.state.token
    if not _token_ok(token, request.headers.get("authorization")):
        raise HTTPException(
            status_code=401,
            detail={
                "code": "InvalidApiKey",
                "message": "Invalid API-key provided: the local nbtoolkit server wants the token "
                "printed by `nbtoolkit serve` (or use nbtoolkit.connect()).",
            },
        )
    if not origin_allowed(request.headers.get("origin")):
        raise HTTPException(
            status_code=403, detail={"code": "AccessDenied", "message": "Origin not allowed"}
        )


async def check_websocket(ws: WebSocket) -> bool:
    """Close with 1008 (policy violation) unless token and Origin are right. True when allowed.

    The upgrade is accepted before closing so that clients see close code 1008 (which they map to an
    auth error) rather than a bare HTTP 403 from the handshake.
    """
    token: str = ws.app.state.token
    if not _token_ok(token, ws.headers.get("authorization")) or not origin_allowed(
        ws.headers.get("origin")
    ):
        await ws.accept()
        await ws.close(code=1008, reason="invalid token or origin")
        return False
    return True
