"""The local server: one FastAPI app on one loopback port that speaks every backend's protocol.

Routes (each in :mod:`nbtoolkit.local.routes`):

* ``POST /api/v1/services/aigc/multimodal-generation/generation`` — Qwen-Audio (JSON and SSE)
* ``GET /api/v1/uploads`` + ``POST /oss`` — the SDK's ``file://`` upload flow
* ``WS /api-ws/v1/inference`` — MultiModalDialog
* ``WS /api-ws/v1/realtime?model=…`` — Qwen-Omni realtime
* ``POST /audio/chat/completions`` — the audio-modalities SSE format Agora's engine calls

Use :func:`start` for a background server in a notebook or test, or ``nbtoolkit serve``.

Each app owns a bounded engine pool (``app.state.engine_pool``, one thread per core) on which the
routes run engine work; see :mod:`nbtoolkit.local.routes` for why.
"""

from __future__ import annotations

import importlib
import logging
import secrets
import socket
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from nbtoolkit.config import Endpoints, Secret, local_endpoints
from nbtoolkit.errors import ConfigError
from nbtoolkit.local.admission import TARGET_LOAD, AdmissionControl, Capacity
from nbtoolkit.local.faults import Faults
from nbtoolkit.local.limits import BodyLimit
from nbtoolkit.local.routes import engine_pool
from nbtoolkit.protocols.errors import code_for_status

__all__ = ["MAX_HTTP_BODY", "MAX_WS_MESSAGE", "LocalServer", "create_app", "start"]

log = logging.getLogger("nbtoolkit.local")

MAX_WS_MESSAGE = 16 * 1024 * 1024
MAX_HTTP_BODY = 10 * 1024 * 1024

_ROUTE_MODULES = ("conversation", "uploads", "dialog", "realtime", "audio_modalities")


def create_app(
    token: str,
    engine: Any = None,
    faults: Faults | None = None,
    *,
    max_sessions: int | None = None,
    target_load: float = TARGET_LOAD,
) -> FastAPI:
    """The ASGI app. ``engine`` defaults to the offline :class:`~nbtoolkit.local.engine.Engine`.

    ``max_sessions`` fixes how many realtime/dialog sessions are served at once; ``None`` derives it
    from the cores and the measured cost of a session at ``target_load`` (see
    :mod:`nbtoolkit.local.admission`). ``app.state.capacity`` holds the rule and its figures.
    """
    app = FastAPI(title="nbtoolkit local engine", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.token = token
    app.state.faults = faults or Faults()
    app.state.uploads = {}  # oss key -> bytes
    if engine is None:
        from nbtoolkit.local.engine import Engine

        engine = Engine()
    app.state.engine = engine
    app.state.engine_pool = pool = engine_pool()
    app.state.capacity = capacity = Capacity(
        pool.workers, max_sessions=max_sessions, target_load=target_load
    )
    app.add_middleware(BodyLimit, default=MAX_HTTP_BODY)
    app.add_middleware(AdmissionControl, capacity=capacity)  # outermost: refuses before reading

    # DashScope clients read {code, message, request_id} at the top level of an error body, so
    # every error this app sends has that shape, Starlette's own 404/405 and FastAPI's 422 too.
    @app.exception_handler(StarletteHTTPException)
    async def _dashscope_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.detail, dict):
            body = exc.detail
        else:  # a route that does not exist, a method it does not take, …
            where = f"{request.method} {request.url.path}"
            body = {"code": code_for_status(exc.status_code), "message": f"{where}: {exc.detail}"}
        return _error_response(body, exc.status_code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in exc.errors()
        )
        body = {"code": "InvalidParameter", "message": f"The request is invalid ({problems})"}
        return _error_response(body, 400)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        # uvicorn still logs the traceback; the client gets the service's shape, not plain text
        body = {"code": "InternalError", "message": "The local server failed on this request"}
        return _error_response(body, 500)

    for name in _ROUTE_MODULES:
        module = importlib.import_module(f"nbtoolkit.local.routes.{name}")
        app.include_router(module.router)
    return app


def _error_response(
    body: dict[str, Any], status: int, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"request_id": secrets.token_hex(16), **body}, status, headers=headers)


class LocalServer:
    """A running server (uvicorn in a daemon thread). Stop it with :meth:`stop` or ``with``."""

    def __init__(self, app: FastAPI, sock: socket.socket) -> None:
        self.app = app
        self._sock = sock
        host, port = sock.getsockname()[:2]
        self.host, self.port = host, port
        config = uvicorn.Config(
            app,
            log_level="warning",
            ws_max_size=MAX_WS_MESSAGE,
            ws_ping_interval=None,
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            name=f"nbtoolkit-local:{port}",
            daemon=True,
        )

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def token(self) -> Secret:
        return Secret(self.app.state.token)

    @property
    def endpoints(self) -> Endpoints:
        return local_endpoints(self.base_url, self.token)

    @property
    def engine(self) -> Any:
        return self.app.state.engine

    @property
    def faults(self) -> Faults:
        faults: Faults = self.app.state.faults
        return faults

    @faults.setter
    def faults(self, value: Faults) -> None:
        self.app.state.faults = value

    def start(self, timeout: float = 30.0) -> LocalServer:
        self._thread.start()
        ready = threading.Event()

        def _wait() -> None:
            while not self._server.started and self._thread.is_alive():
                threading.Event().wait(0.01)
            ready.set()

        threading.Thread(target=_wait, daemon=True).start()
        if not ready.wait(timeout) or not self._server.started:
            raise ConfigError(
                f"The local server did not start within {timeout:.0f} s",
                "run `nbtoolkit doctor` to see what is missing",
            )
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        self._sock.close()
        pool: ThreadPoolExecutor | None = getattr(self.app.state, "engine_pool", None)
        if pool is not None:
            # queued engine work is dropped; a job already running finishes in its (idle) thread
            pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalServer({self.base_url}, token={self.token!r})"


def start(
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    engine: Any = None,
    faults: Faults | None = None,
    *,
    max_sessions: int | None = None,
    target_load: float = TARGET_LOAD,
) -> LocalServer:
    """Start the local server in a background thread and return it once it accepts connections.

    ``port=0`` picks a free port. ``host`` must be a loopback address: the server has no TLS and its
    token is meant for this machine only. ``max_sessions`` and ``target_load``: see
    :func:`create_app`.
    """
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ConfigError(
            f"The local server binds loopback only, not {host!r}",
            "use 127.0.0.1 (tunnel with ssh -L if you need it elsewhere)",
        )
    if token is not None:
        Secret(token)  # a token too short to be a key is refused before anything is bound
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    app = create_app(
        token or secrets.token_urlsafe(24),
        engine=engine,
        faults=faults,
        max_sessions=max_sessions,
        target_load=target_load,
    )
    return LocalServer(app, sock).start()
