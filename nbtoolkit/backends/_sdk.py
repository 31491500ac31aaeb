"""Calling the ``dashscope`` SDK against any :class:`~nbtoolkit.config.Endpoints`, and translating its
transport exceptions into :mod:`nbtoolkit.errors`.

The SDK's module globals (``dashscope.base_http_api_url``, ``dashscope.api_key``) are never touched:
every call passes ``base_address=`` and ``api_key=`` explicitly, so threads using different endpoints
(a batch on the cloud beside a notebook on the local server) cannot race on them. The upload of
local files goes through the SDK's own :class:`~dashscope.utils.oss_utils.OssUtils`, which also
accepts ``base_address`` (``MultiModalConversation.call`` would upload ``file://`` paths by itself,
but only against the global base URL).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nbtoolkit.config import Endpoints
from nbtoolkit.errors import BackendError, ConnectionLost, ProtocolError
from nbtoolkit.protocols.errors import error_for, status_for_code

__all__ = ["CONNECT_FAILED", "TIMED_OUT", "conversation_call", "translate", "upload_file"]

#: ``code`` of a :class:`ConnectionLost` raised before any byte of an answer: safe to retry.
CONNECT_FAILED = "ConnectFailed"
#: ``code`` of a :class:`ConnectionLost` for an answer that did not come within the timeout.
TIMED_OUT = "Timeout"

# The SDK logs every failed request with a traceback before re-raising; we turn those failures into
# nbtoolkit errors, so keep them out of notebooks unless the user configured logging (library
# loggers should have a handler so Python's last-resort stderr printer stays silent).
logging.getLogger("dashscope").addHandler(logging.NullHandler())

_POLICY_REFUSED = re.compile(r"Get upload certificate failed, code: ([^,]*), message: (.*)", re.S)


def upload_file(endpoints: Endpoints, model: str, path: Path) -> str:
    """Upload ``path`` the way the SDK does for ``file://`` (policy, then the form POST); returns
    the ``oss://<key>`` reference to put in a message."""
    from dashscope.utils.oss_utils import OssUtils  # the SDK takes ≈ 0.8 s to import: on first call

    ref, _certificate = OssUtils.upload(
        model=model,
        file_path=str(path),
        api_key=endpoints.api_key.reveal(),
        base_address=endpoints.http_base,
    )
    return str(ref)


def conversation_call(
    endpoints: Endpoints,
    model: str,
    messages: list[dict[str, Any]],
    *,
    stream: bool,
    timeout: float,
    parameters: Mapping[str, Any] | None = None,
) -> Any:
    """``MultiModalConversation.call`` at ``endpoints``: the response, or with ``stream`` a generator
    of incremental chunks (no request is made until it is first advanced). ``parameters`` are
    generation parameters (temperature, seed, …), checked by the caller."""
    from dashscope import MultiModalConversation  # ≈ 0.8 s to import: on first call

    return MultiModalConversation.call(
        model=model,
        messages=messages,
        api_key=endpoints.api_key.reveal(),
        base_address=endpoints.http_base,
        stream=stream,
        incremental_output=True if stream else None,
        result_format="message",
        request_timeout=timeout,
        **(parameters or {}),
    )


def _timed_out(exc: BaseException) -> bool:
    import requests
    from urllib3.exceptions import ReadTimeoutError

    if isinstance(exc, requests.exceptions.ReadTimeout):
        return True
    # mid-body read timeouts reach us as ConnectionError(ReadTimeoutError(...))
    return any(isinstance(arg, ReadTimeoutError) for arg in getattr(exc, "args", ()))


def translate(
    exc: BaseException,
    *,
    where: str,
    timeout: float,
    started: bool,
    partial: Any = None,
    local: bool = False,
) -> BackendError | None:
    """The nbtoolkit error for an exception raised by the SDK or ``requests``; None if it is neither
    a transport failure nor an SDK upload failure (the caller re-raises it unchanged).

    ``started`` says whether any answer had arrived: a failure before that is a
    :data:`CONNECT_FAILED` (retryable); after it, the connection was lost mid-answer.
    """
    import requests
    from dashscope.common.error import UploadFileException

    if isinstance(exc, UploadFileException):
        # the SDK drops the status of a refused upload policy but keeps its code in the text
        said = _POLICY_REFUSED.search(str(exc))
        status = status_for_code(said.group(1)) if said else None
        if said and status is not None:
            return error_for(
                status, said.group(1), said.group(2), where=f"Uploading to {where}", local=local
            )
        return ProtocolError(
            f"Uploading the audio to {where} failed: {exc}",
            "check that the file is an audio file under 10 MB, then try again",
        )
    if _timed_out(exc):
        return ConnectionLost(
            f"No answer from {where} within {timeout:g} s",
            "try again, or give the client a larger timeout=",
            code=TIMED_OUT,
            partial=partial,
        )
    if not isinstance(exc, requests.exceptions.RequestException):
        return None
    if not started and isinstance(exc, requests.exceptions.ConnectionError):
        return ConnectionLost(
            f"Could not reach {where} ({type(exc).__name__})",
            "check the network (or that the local server is running) and try again",
            code=CONNECT_FAILED,
        )
    return ConnectionLost(
        f"The connection to {where} broke before the answer was complete ({type(exc).__name__})",
        "the text received so far is in err.partial; ask again for the full answer",
        partial=partial,
    )
