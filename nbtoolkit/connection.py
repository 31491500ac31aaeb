"""``nbtoolkit.connect()``: the cloud when a key is set, otherwise the offline engine on 127.0.0.1."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from nbtoolkit.config import (
    LOOPBACK_HOSTS,
    Endpoints,
    Secret,
    cloud_endpoints,
    get_api_key,
    local_endpoints,
)

if TYPE_CHECKING:
    from nbtoolkit.local.server import LocalServer

__all__ = ["connect", "local_server", "override_endpoints"]

_lock = threading.Lock()
_server: LocalServer | None = None
# Process-wide, not a ContextVar: the SDK's callback threads and the batch runner's worker threads do
# not inherit context variables, and a recording must capture what they send too.
_overrides: list[Endpoints] = []


@contextmanager
def override_endpoints(endpoints: Endpoints) -> Iterator[Endpoints]:
    """Make :func:`connect` return ``endpoints`` (in every thread) until the block ends.

    Used by ``nbtoolkit.record``/``nbtoolkit.replay``; blocks nest, the innermost wins.
    """
    with _lock:
        _overrides.append(endpoints)
    try:
        yield endpoints
    finally:
        with _lock:
            _overrides.remove(endpoints)


def _served_by_env(key: Secret | None) -> Endpoints | None:
    """Endpoints of a server started with ``nbtoolkit serve`` and exported as its printout says:
    ``DASHSCOPE_HTTP_BASE_URL`` on a loopback host, with the server token as ``DASHSCOPE_API_KEY``."""
    base = os.environ.get("DASHSCOPE_HTTP_BASE_URL", "")
    parsed = urlparse(base)
    if key is None or parsed.scheme != "http" or parsed.hostname not in LOOPBACK_HOSTS:
        return None
    return local_endpoints(f"http://{parsed.netloc}", key)


def local_server() -> LocalServer:
    """The process-wide local server, started on first use."""
    global _server
    with _lock:
        if _server is None:
            from nbtoolkit.local.server import start

            _server = start()
        return _server


def connect(
    api_key: str | Secret | None = None,
    *,
    region: str = "cn",
    local: bool | None = None,
    quiet: bool = False,
) -> Endpoints:
    """Pick where requests go and return the :class:`~nbtoolkit.config.Endpoints`.

    With a key (argument or ``DASHSCOPE_API_KEY``) and ``local`` not true: the DashScope cloud in
    ``region`` ("cn" = Beijing, "intl" = Singapore). Otherwise the bundled offline engine is started on
    127.0.0.1 and one line says so. Inside ``with nbtoolkit.record(…)`` or ``nbtoolkit.replay(…)`` the
    recording proxy's or replay server's endpoints are returned whatever the arguments.
    """
    with _lock:
        override = _overrides[-1] if _overrides else None
    if override is not None:
        return override
    key = None if local else get_api_key(api_key)
    served = _served_by_env(key)
    if served is not None:
        if not quiet:
            print(
                f"nbtoolkit: DASHSCOPE_HTTP_BASE_URL points at a local server ({served.http_base}); "
                "answers come from the offline engine there."
            )
        return served
    if key is not None:
        endpoints = cloud_endpoints(key, region)
        if not quiet:
            print(f"nbtoolkit: using the DashScope cloud ({region}).")
        return endpoints
    server = local_server()
    if not quiet:
        reason = "local=True" if local else "no DASHSCOPE_API_KEY is set"
        print(
            f"nbtoolkit: {reason}, so answers come from the offline engine at {server.base_url} "
            f"({server.app.state.engine.summary}; it is not the cloud model)."
        )
    return server.endpoints
