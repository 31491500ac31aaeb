"""``POST /api/v1/services/aigc/multimodal-generation/generation`` — Qwen-Audio from the offline engine.

JSON, or SSE when the request carries ``X-DashScope-SSE: enable``; the wire format is
:mod:`nbtoolkit.protocols.conversation`. Media come as ``oss://`` keys of the upload store (the SDK's
``file://`` flow, see :mod:`nbtoolkit.local.routes.uploads`) or ``data:`` URIs. ``http(s)://`` URLs are
refused with a 400 that says what to do instead: the server has no internet access, and a hang or a
silent wrong answer would be worse than a clear error.

Errors found before answering (auth, body, media) are a status with a JSON body; a failure of the
engine while streaming is an in-stream ``event:error`` with ``status:500``. Faults
(:class:`~nbtoolkit.local.faults.Faults`): ``take_status`` (429 with ``Retry-After``),
``never_answer`` (held until the client disconnects), ``delay`` before every chunk, ``drop_after``
(the connection is closed mid-body, so the client sees a broken stream) and ``malformed_after``
(one non-JSON ``data:`` line).
"""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Send

from nbtoolkit.audio.clip import Clip
from nbtoolkit.audio.decode import decode
from nbtoolkit.errors import AudioError, ProtocolError
from nbtoolkit.local.auth import check_http
from nbtoolkit.local.faults import Faults
from nbtoolkit.local.routes import run_engine
from nbtoolkit.protocols.conversation import (
    MAX_AUDIO_BYTES,
    MAX_AUDIO_SECONDS,
    PATH,
    GenerationRequest,
    MediaRef,
    StreamEncoder,
    code_for_status,
    decode_data_uri,
    invalid,
    parse_request,
    response_body,
    split_for_stream,
    stream_error,
    usage_dict,
)

__all__ = ["router"]

log = logging.getLogger("nbtoolkit.local")
router = APIRouter()

#: A 10 MB file as a base64 data: URI is 13.4 MB; leave room for the rest of the body.
MAX_BODY = 16 * 1024 * 1024

_ENGINE_FAILED = "The offline engine failed on this input — see the server log, then try again"
_FAULT_MESSAGES = {
    429: "Requests rate limit exceeded, please try again later.",
}


@dataclass
class _Inputs:
    clip: Clip | None
    images: list[bytes]
    image_tokens: int


def _refuse(err: ProtocolError) -> HTTPException:
    status = err.status or 400
    return HTTPException(
        status, detail={"code": err.code or code_for_status(status), "message": str(err)}
    )


async def _read_json(request: Request) -> Any:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY:
        raise invalid(
            f"The request body is {int(declared) / 1e6:.1f} MB",
            f"keep it under {MAX_BODY // 2**20} MiB: audio files may be at most 10 MB",
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise invalid(
                "The request body is too large",
                f"keep it under {MAX_BODY // 2**20} MiB: audio files may be at most 10 MB",
            )
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise invalid("The request body is not JSON", "send {model, input, parameters}") from None


def _media_bytes(ref: MediaRef, uploads: Mapping[str, bytes]) -> bytes:
    scheme = ref.scheme
    if scheme == "oss":
        data = uploads.get(ref.uri[len("oss://") :])
        if data is None:
            raise invalid(
                f"{ref.uri} is not stored on this local server (uploads last while it runs)",
                "pass the local file again (file://…) so the SDK uploads it",
            )
    elif scheme == "data":
        data = decode_data_uri(ref.uri)[1]
    elif scheme == "http":
        raise invalid(
            f"The local nbtoolkit server cannot fetch {ref.uri}: it works offline, without "
            "internet access",
            f'download the file and pass it as a local file ({{"{ref.kind}": "file:///path/to/file"}}) '
            "or give QwenAudio a Clip or path",
        )
    else:
        raise invalid(
            f"The {ref.kind} reference {ref.uri[:60]!r} cannot be read by the server",
            "use the dashscope SDK with a file:// path (it uploads the file), or a data: URI",
        )
    if len(data) > MAX_AUDIO_BYTES:
        raise invalid(
            f"The {ref.kind} file is {len(data) / 1e6:.1f} MB, over the 10 MB limit",
            "send a shorter or compressed file (only the first 30 s of audio are used anyway)",
        )
    return data


def _decode_inputs(req: GenerationRequest, uploads: Mapping[str, bytes]) -> _Inputs:
    """Media of the current user message, decoded (CPU-bound: run in a thread)."""
    from PIL import Image, UnidentifiedImageError

    from nbtoolkit.protocols.tokens import image_tokens

    current = req.current
    clip = None
    audio_refs = current.refs("audio")
    if audio_refs:
        try:
            # the model uses only the first 30 s (docs/protocols.md#conversation-input-limits):
            # decoding stops there, so a long upload costs no more than a 30 s one
            clip = decode(_media_bytes(audio_refs[0], uploads), first_seconds=MAX_AUDIO_SECONDS)
        except AudioError as err:
            raise invalid(f"The audio cannot be decoded: {err.problem}", err.fix or "") from None
    images: list[bytes] = []
    tokens = 0
    for ref in current.refs("image") + current.refs("video"):
        data = _media_bytes(ref, uploads)
        try:
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
        except (UnidentifiedImageError, OSError):
            raise invalid(
                f"The {ref.kind} {ref.uri[:40]!r}… is not an image",
                "send JPEG or PNG bytes (video as a list of frame images)",
            ) from None
        images.append(data)
        tokens += image_tokens(width, height)
    return _Inputs(clip, images, tokens)


class _DroppingStream(StreamingResponse):
    """An SSE response that can end *without* the final chunk: the client sees a broken stream,
    as when a connection drops, instead of a clean end of body."""

    DROP: Any = object()  # yielded by the body iterator to cut the connection

    async def stream_response(self, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        async for chunk in self.body_iterator:
            if chunk is self.DROP:
                return  # uvicorn closes the transport when the response is incomplete
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _turns(history: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(role, text) messages as the (user, assistant) turns the engine takes."""
    turns: list[tuple[str, str]] = []
    for role, text in history:
        if role == "user":
            turns.append((text, ""))
        elif turns:
            turns[-1] = (turns[-1][0], text)
    return turns


async def _answer(request: Request, req: GenerationRequest, inputs: _Inputs) -> tuple[str, Any]:
    from nbtoolkit.protocols.tokens import audio_tokens, text_tokens

    engine = request.app.state.engine
    reply = await run_engine(
        request.app,
        engine.respond,
        req.current.text,
        audio=inputs.clip,
        images=inputs.images,
        history=_turns(req.history),
    )
    input_text = text_tokens(req.all_text)
    input_audio = audio_tokens(inputs.clip.duration) if inputs.clip is not None else 0

    def usage(text: str) -> dict[str, int]:
        return usage_dict(
            input_text=input_text,
            input_audio=input_audio,
            input_image=inputs.image_tokens,
            output_text=text_tokens(text),
        )

    return reply.text, usage


async def _sse(
    request: Request, req: GenerationRequest, inputs: _Inputs, request_id: str, faults: Faults
) -> AsyncIterator[bytes]:
    try:
        text, usage = await _answer(request, req, inputs)
    except Exception:
        log.exception("the offline engine failed on a streamed request")
        yield stream_error(500, "InternalError", _ENGINE_FAILED, request_id)
        return
    encoder = StreamEncoder(
        request_id, incremental=req.incremental_output, result_format=req.result_format, usage=usage
    )
    pieces: list[str | None] = [*split_for_stream(text), None]
    malformed_sent = False
    for piece in pieces:
        if faults.drop_after is not None and encoder.sent >= faults.drop_after:
            yield _DroppingStream.DROP
            return
        if (
            faults.malformed_after is not None
            and not malformed_sent
            and encoder.sent >= faults.malformed_after
        ):
            malformed_sent = True
            yield b"data:{this is not json\n\n"
        await faults.pace()
        yield encoder.finish() if piece is None else encoder.piece(piece)


@router.post("/api/v1" + PATH, dependencies=[Depends(check_http)])
async def generation(request: Request) -> Response:
    """Answer a MultiModalConversation request from the offline engine (JSON or SSE)."""
    faults: Faults = request.app.state.faults
    status = faults.take_status()
    if status is not None:
        headers = (
            {"Retry-After": f"{faults.retry_after:g}"}
            if status == 429 and faults.retry_after is not None
            else None
        )
        message = _FAULT_MESSAGES.get(
            status, f"Injected fault: HTTP {status} from nbtoolkit Faults"
        )
        raise HTTPException(
            status, detail={"code": code_for_status(status), "message": message}, headers=headers
        )
    try:
        body = await _read_json(request)
        if faults.never_answer:
            # hold the request until the client gives up (not forever: a task that never ends would
            # keep the server from shutting down)
            while (await request.receive())["type"] != "http.disconnect":
                pass
            return Response(status_code=204)
        req = parse_request(body)
        inputs = await run_engine(request.app, _decode_inputs, req, request.app.state.uploads)
    except ProtocolError as err:
        raise _refuse(err) from None
    request_id = str(uuid.uuid4())
    if request.headers.get("x-dashscope-sse", "").lower() == "enable":
        return _DroppingStream(
            _sse(request, req, inputs, request_id, faults),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    try:
        text, usage = await _answer(request, req, inputs)
    except Exception:
        log.exception("the offline engine failed")
        raise HTTPException(
            500, detail={"code": "InternalError", "message": _ENGINE_FAILED}
        ) from None
    await faults.pace()
    return JSONResponse(response_body(text, usage(text), request_id, req.result_format))
