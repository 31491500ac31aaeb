"""Size and length caps for the local server: HTTP 413, in DashScope's error shape, before a route
reads more than it may; and the longest utterance it transcribes.

Every route used to decide for itself (or not at all: a multipart upload was spooled whole before its
handler looked at it). :class:`BodyLimit` is one ASGI middleware in front of all of them. It refuses a
declared ``Content-Length`` over the cap without reading the body, and stops a chunked body the
moment it passes the cap. Routes that carry a whole audio file get a larger cap (:data:`ROUTE_LIMITS`).

One utterance is at most :data:`MAX_UTTERANCE_SECONDS` long, the cloud's cap for one sentence of
streamed speech: DashScope's sentence recogniser (Gummy, the realtime API's transcription model)
takes "audio of at most one minute, otherwise it reports an error and disconnects"
(https://help.aliyun.com/zh/model-studio/developer-reference/sentence-java-api). The cap is kept
where the audio arrives, so no route ever holds more: the VAD cuts longer speech
(:mod:`nbtoolkit.local.engine.vad`), and a push-to-talk utterance or a realtime buffer that passes
it is dropped with an error (:mod:`nbtoolkit.protocols.dialog`,
:mod:`nbtoolkit.local.realtime_session`). Uploaded files
keep Qwen-Audio's caps: at most 10 MB, of which the first 30 s are used
(https://help.aliyun.com/zh/model-studio/audio-language-model, "使用限制";
:mod:`nbtoolkit.protocols.conversation`).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nbtoolkit.local.routes.conversation import MAX_BODY as GENERATION_MAX_BODY
from nbtoolkit.protocols.conversation import MAX_AUDIO_BYTES
from nbtoolkit.protocols.conversation import PATH as GENERATION_PATH
from nbtoolkit.protocols.params import MAX_UTTERANCE_SECONDS

__all__ = ["MAX_UTTERANCE_SECONDS", "ROUTE_LIMITS", "BodyLimit"]


#: Exact paths with their own cap: a 10 MB audio file as a base64 ``data:`` URI (generation), or as
#: a multipart upload with its form fields (the SDK's ``file://`` upload flow).
ROUTE_LIMITS: dict[str, int] = {
    "/api/v1" + GENERATION_PATH: GENERATION_MAX_BODY,
    "/oss": MAX_AUDIO_BYTES + 1024 * 1024,
}


class _TooLarge(Exception):
    """Raised inside the route's ``receive`` once the body has passed the cap."""


class BodyLimit:
    """ASGI middleware: at most ``default`` body bytes per HTTP request (``per_path`` overrides)."""

    def __init__(
        self, app: ASGIApp, default: int, per_path: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.default = default
        self.per_path = dict(ROUTE_LIMITS if per_path is None else per_path)

    def limit(self, path: str) -> int:
        """The cap for ``path`` in bytes."""
        return self.per_path.get(path, self.default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _refuse(send, limit)
            return
        seen = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except _TooLarge:
            if started:  # too late for a status: the route streamed before reading it all
                raise
            await _refuse(send, limit)


async def _refuse(send: Send, limit: int) -> None:
    body = json.dumps(
        {
            "request_id": secrets.token_hex(16),
            "code": "InvalidParameter",
            "message": f"The request body is over {limit / 2**20:.0f} MiB — send a shorter or "
            "compressed file (audio files may be at most 10 MB)",
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            # the rest of an oversized body is never read, so this connection cannot be reused
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
