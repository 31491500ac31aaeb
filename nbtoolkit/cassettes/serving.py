"""What the recording proxy and the replay server share: start-up, auth, paths, upload rewriting."""

from __future__ import annotations

import secrets
import socket
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from nbtoolkit.local.auth import check_http
from nbtoolkit.local.server import LocalServer

__all__ = [
    "HOP_HEADERS",
    "UPLOAD_PREFIX",
    "WS_DIALOG",
    "WS_REALTIME",
    "dashscope_error",
    "new_app",
    "refuse_unauthorised",
    "rewrite_upload_host",
    "start_app",
]

#: Clients POST uploads here (``/_upload/<n>``): the n-th upload policy's ``upload_host``.
UPLOAD_PREFIX = "/_upload/"
WS_DIALOG = "/api-ws/v1/inference"
WS_REALTIME = "/api-ws/v1/realtime"
#: Headers that belong to one hop (or are recomputed), never forwarded or replayed.
HOP_HEADERS = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "content-encoding",
        "accept-encoding",
        "upgrade",
        "te",
        "trailer",
        "date",
        "server",
        "origin",
    }
)


def start_app(app: FastAPI) -> LocalServer:
    """Serve ``app`` on a free loopback port in a daemon thread (``app.state.token`` must be set)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return LocalServer(app, sock).start()


def new_app(title: str) -> FastAPI:
    """A bare app with a fresh bearer token in ``app.state.token``."""
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.token = secrets.token_urlsafe(24)
    return app


def dashscope_error(status: int, code: str, message: str) -> JSONResponse:
    """An error in DashScope's JSON shape (code and message at the top level)."""
    body = {"request_id": secrets.token_hex(16), "code": code, "message": message}
    return JSONResponse(body, status_code=status)


def refuse_unauthorised(request: Request) -> JSONResponse | None:
    """The 401/403 answer unless the request carries this server's token (uploads carry none)."""
    if request.url.path.startswith(UPLOAD_PREFIX):
        return None
    try:
        check_http(request)
    except HTTPException as exc:
        detail: dict[str, str] = exc.detail if isinstance(exc.detail, dict) else {}
        return dashscope_error(
            exc.status_code, detail.get("code", "InvalidApiKey"), detail.get("message", "")
        )
    return None


def rewrite_upload_host(body: Any, new_host: str) -> str | None:
    """Point an upload policy's ``upload_host`` at ``new_host``; returns the old host (None if absent).

    The SDK reads the certificate from ``data``, else ``output``, else the whole body (docs/protocols.md#file-uploads).
    """
    if not isinstance(body, dict):
        return None
    for cert in (body.get("data"), body.get("output"), body):
        if isinstance(cert, dict) and isinstance(cert.get("upload_host"), str):
            old = str(cert["upload_host"])
            cert["upload_host"] = new_host
            return old
    return None
