"""``POST /audio/chat/completions``: the audio-modalities SSE format Agora's engine calls.

The body is OpenAI-style (``messages`` with text and ``input_audio`` parts, ``stream``,
``modalities``, ``audio``); the answer is the frames of Agora's sample server
(https://github.com/alienzh/Agora-AI-Recipes-Starter/tree/main/server-audio-modalities, see
:mod:`nbtoolkit.protocols.audio_modalities`).

**Audio parameters.** As in Agora's sample, the sample rate and the chunk duration of the answer's
audio are the *server's* configuration (the sample sets them in code; the request has no field for
them): :func:`build_router` takes an :class:`~nbtoolkit.protocols.audio_modalities.AudioParams`,
default 16 kHz in 40 ms chunks (1280 bytes). The local server serves the defaults;
:func:`nbtoolkit.serve_audio_modalities` takes ``sample_rate=`` and ``chunk_ms=``. Raw ``pcm16``
input audio is read at the same rate.

Differences from Agora's sample, on purpose:

* **Auth.** The sample accepts *any* ``Authorization`` value; ours wants the server's token (the
  local server is a credentialed service on this machine), so configure Agora's ``api_key`` with it.
* **Errors before the stream** are DashScope-shaped JSON (``{"code", "message", "request_id"}``)
  with the HTTP status; the sample returns FastAPI's ``{"detail"}``. 400 when ``stream`` is false,
  as in the sample.

:func:`build_router` serves any answerer; the local server's is the offline engine (answering in
the language of the question, spoken with the Mandarin voice when the answer is Chinese), and
:func:`nbtoolkit.serve_audio_modalities` reuses it for other backends.
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
from nbtoolkit.local.engine.tts import ESPEAK_RATE
from nbtoolkit.local.faults import Faults
from nbtoolkit.local.routes import run_engine
from nbtoolkit.local.server import MAX_HTTP_BODY
from nbtoolkit.protocols.audio_modalities import (
    PATH,
    AudioParams,
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
    app: Starlette,
    produce: Callable[[], Awaitable[tuple[str, Clip | None]]],
    faults: Faults,
    params: AudioParams,
) -> AsyncIterator[bytes]:
    try:
        text, clip = await produce()
        frames = await run_engine(app, lambda: list(response_frames(text, clip, params=params)))
    except Exception as exc:  # the stream has begun: report in-band, as Agora's sample does
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


def build_router(
    answer: Answer,
    params: AudioParams = AudioParams(),  # noqa: B008 - frozen dataclass, safe as a default
) -> APIRouter:
    """A router serving ``POST /audio/chat/completions`` with ``answer`` (auth: the app's token;
    faults: ``app.state.faults``); the answer's audio is streamed with ``params`` (rate, chunks)."""
    router = APIRouter()

    @router.post(PATH, dependencies=[Depends(check_http)])
    async def audio_chat_completions(request: Request) -> StreamingResponse:
        faults: Faults = request.app.state.faults
        _fault_status(faults)
        try:
            chat = parse_request(await _read_body(request))
            if not chat.stream:
                raise ProtocolError(
                    "chat completions require streaming",
                    "send 'stream': true (the format streams only)",
                )
            user = chat.last_user()
            clip = await run_engine(request.app, user.clip, params.sample_rate)
        except (ProtocolError, AudioError) as exc:
            raise _refuse(400, str(exc)) from None
        produce = partial(answer, request, user.text, clip, user.images)
        return StreamingResponse(
            _frames(request.app, produce, faults, params),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )

    return router


async def engine_answer(
    request: Request, text: str, audio: Clip | None, images: Sequence[bytes]
) -> tuple[str, Clip | None]:
    """The offline engine's answer, in the language of the question, spoken by its TTS in that
    language at eSpeak's own rate (the route resamples it once, to the served rate)."""
    engine = request.app.state.engine
    reply = await run_engine(request.app, engine.respond, text, audio=audio, images=images)
    if not reply.text:
        return "", None
    pcm = await run_engine(
        request.app, engine.synthesize, reply.text, rate=ESPEAK_RATE, lang=reply.lang
    )
    return reply.text, Clip.from_array(pcm, ESPEAK_RATE) if len(pcm) else None


router = build_router(engine_answer)
