"""``POST /audio/chat/completions``: the audio-modalities SSE format Agora's engine calls (seed S002).

The body is OpenAI-style (``messages`` with text and ``input_audio`` parts, ``stream``,
``modalities``, ``audio``); the answer is S002's frames (see :mod:`nbtoolkit.protocols.audio_modalities`).

Differences from S002, on purpose:

* **Auth.** S002 accepts *any* ``Authorization`` value; ours wants the server's token (the local
  server is a credentialed service on this machine), so configure Agora's ``api_key`` with it.
* **Errors before the stream** are DashScope-shaped JSON (``{"code", "message", "request_id"}``)
  with the HTTP status; S002's sample returns FastAPI's ``{"detail"}``. 400 when ``stream`` is false,
  as in S002.

:func:`build_router` serves any answerer; the local server's is the offline engine, and
:func:`nbtoolkit.backends.audio_modalities.serve_audio_modalities` reuses it for other backends.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import StreamingResponse
from starlette.applications import Starlette

from nbtoolkit.audio.clip import Clip
from nbtoolkit.errors import AudioError, ProtocolError
from nbtoolkit.local.auth import check_http
from nbtoolkit.local.faults import Faults
from nbtoolkit.local.routes import run_engine
from nbtoolkit.local.server import MAX_HTTP_BODY
from nbtoolkit.protocols.audio_modalities import (
    PATH,
    S002_RATE,
    error_frame,
    parse_request,
    response_frames,
)

__all__ = ["Answer", "build_router", "engine_answer", "router"]

log = logging.getLogger("nbtoolkit.local")

#: ``(request, text, audio, images) -> (reply text, reply audio)``: what answers one user message.
Answer = Callable[[Request, str, Clip | None, Sequence[bytes]], Awaitable[tuple[str, Clip | None]]]

#: Fault injection: an SSE event whose data is not JSON, and a chunk of a kind nobody defined.
_MALFORMED = b'data:{"id": "broken\n\n'
_UNKNOWN = b'data:{"id":"fault","nbtoolkit_unknown_event":{"note":"clients must ignore this"}}\n\n'


class _DropConnection(Exception):
    """Raised inside the body iterator so uvicorn aborts the response (no final chunk)."""


def _refuse(status: int, message: str, code: str = "InvalidParameter") -> HTTPException:
    return HTTPException(status, detail={"code": code, "message": message})


def _fault_status(faults: Faults) -> None:
    status = faults.take_status()
    if status is None:
        return
    headers = {}
    if status == 429 and faults.retry_after is not None:
        headers["Retry-After"] = f"{faults.retry_after:g}"
    code = "Throttling" if status == 429 else "InternalError"
    raise HTTPException(
        status, detail={"code": code, "message": f"injected fault {status}"}, headers=headers
    )


async def _read_body(request: Request) -> bytes:
    body = bytearray()
    async for part in request.stream():
        body.extend(part)
        if len(body) > MAX_HTTP_BODY:
            raise _refuse(
                413, f"The request body is over {MAX_HTTP_BODY // 2**20} MiB; send shorter audio"
            )
    return bytes(body)


async def _frames(
    app: Starlette, produce: Callable[[], Awaitable[tuple[str, Clip | None]]], faults: Faults
) -> AsyncIterator[bytes]:
    try:
        text, clip = await produce()
        frames = await run_engine(app, lambda: list(response_frames(text, clip)))
    except Exception as exc:  # the stream has begun: report in-band, as S002's sample does
        log.warning("audio-modalities answer failed: %s", exc)
        await faults.pace()
        yield error_frame(f"{type(exc).__name__}: {exc}")
        return
    for sent, frame in enumerate(frames):
        if faults.drop_after is not None and sent >= faults.drop_after:
            raise _DropConnection(f"injected drop after {sent} frames")
        if faults.malformed_after is not None and sent == faults.malformed_after:
            yield _MALFORMED
        if faults.unknown_event_after is not None and sent == faults.unknown_event_after:
            yield _UNKNOWN
        await faults.pace()
        yield frame


def build_router(answer: Answer) -> APIRouter:
    """A router serving ``POST /audio/chat/completions`` with ``answer`` (auth: the app's token;
    faults: ``app.state.faults``)."""
    router = APIRouter()

    @router.post(PATH, dependencies=[Depends(check_http)])
    async def audio_chat_completions(request: Request) -> StreamingResponse:
        faults: Faults = request.app.state.faults
        _fault_status(faults)
        try:
            chat = parse_request(await _read_body(request))
            if not chat.stream:
                raise ProtocolError(
                    "chat completions require streaming", "send 'stream': true (S002 streams only)"
                )
            user = chat.last_user()
            clip = await run_engine(request.app, user.clip)
        except (ProtocolError, AudioError) as exc:
            raise _refuse(400, str(exc)) from None
        produce = partial(answer, request, user.text, clip, user.images)
        return StreamingResponse(
            _frames(request.app, produce, faults),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )

    return router


async def engine_answer(
    request: Request, text: str, audio: Clip | None, images: Sequence[bytes]
) -> tuple[str, Clip | None]:
    """The offline engine's answer, spoken by its TTS at S002's 16 kHz."""
    engine = request.app.state.engine
    reply = await run_engine(request.app, engine.respond, text, audio=audio, images=images)
    if not reply.text:
        return "", None
    pcm = await run_engine(request.app, engine.synthesize, reply.text, rate=S002_RATE)
    return reply.text, Clip.from_array(pcm, S002_RATE) if len(pcm) else None


router = build_router(engine_answer)
