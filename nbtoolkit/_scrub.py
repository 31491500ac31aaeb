"""Masking registered secrets in text and in log records: the bottom layer under ``errors`` and
``config`` (both use it; it imports neither).

:class:`nbtoolkit.config.Secret` registers every key it holds here. :func:`scrub_secrets` replaces
each registered value where it stands as a whole token (not inside a longer word: a key ``test``
leaves "contest" alone). Once a key is registered, :func:`install_log_scrubbing` makes every log
record of the libraries that log request headers (and of their child loggers, which a filter on
the parent would miss) carry the masked text, whatever handler prints it.
"""

from __future__ import annotations

import logging
import re
import threading
import weakref
from typing import Any, Protocol

__all__ = [
    "HEADER_LOGGERS",
    "MASK",
    "SecretFilter",
    "install_log_scrubbing",
    "register",
    "scrub_secrets",
]

MASK = "********"

#: Loggers (with their children) known to log request headers, URLs or frames that can hold a
#: key: websocket-client (``websocket.enableTrace(True)`` dumps the handshake with its
#: Authorization header), websockets, httpx/httpcore, requests/urllib3 (the DashScope SDK's HTTP),
#: aiohttp, the DashScope SDK itself, uvicorn (the local server), asyncio (exception reprs) and
#: nbtoolkit's own.
HEADER_LOGGERS = (
    "websocket",
    "websockets",
    "httpx",
    "httpcore",
    "urllib3",
    "requests",
    "aiohttp",
    "dashscope",
    "uvicorn",
    "asyncio",
    "nbtoolkit",
)


class _Revealable(Protocol):
    def reveal(self) -> str: ...


_registered: weakref.WeakSet[Any] = weakref.WeakSet()


def register(secret: _Revealable) -> None:
    """Mask ``secret.reveal()`` from now on, for as long as ``secret`` lives."""
    _registered.add(secret)
    install_log_scrubbing()


def scrub_secrets(text: str) -> str:
    """``text`` with every registered secret that stands as a whole token replaced by a mask."""
    for secret in list(_registered):
        value = secret.reveal()
        if value and value in text:
            # a whole token: not preceded or followed by a letter or digit
            text = re.sub(rf"(?<![0-9A-Za-z]){re.escape(value)}(?![0-9A-Za-z])", MASK, text)
    return text


class SecretFilter(logging.Filter):
    """A logging filter that masks registered secrets in a record's message (and its formatted
    exception). Attach it to a handler to scrub everything that handler writes."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: the handler reports it, as it would without us
            return True
        scrubbed = scrub_secrets(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, ()
        if record.exc_info and not record.exc_text:
            # handlers format the traceback later, from exc_info: keep a scrubbed copy instead
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = scrub_secrets(text)
        return True


_install_lock = threading.Lock()
_installed = False


def _from_header_logger(name: str) -> bool:
    return any(name == root or name.startswith(root + ".") for root in HEADER_LOGGERS)


def install_log_scrubbing() -> None:
    """Scrub every record of :data:`HEADER_LOGGERS` and their children as it is created (a record
    factory, so it holds for child loggers and for handlers added later, e.g. by
    ``websocket.enableTrace``). Idempotent; chains the factory that was in place."""
    global _installed
    with _install_lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()
        scrub = SecretFilter()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            if _from_header_logger(record.name):
                scrub.filter(record)
            return record

        logging.setLogRecordFactory(factory)
        _installed = True
