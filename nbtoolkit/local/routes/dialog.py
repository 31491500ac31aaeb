"""``WS /api-ws/v1/inference``: MultiModalDialog from the offline engine.

The protocol logic is :class:`nbtoolkit.protocols.dialog.DialogSession`; this module only moves
frames and runs what the session asks for. One connection is one session (the SDK sends null ids
after Start). A round's engine work and TTS stream run in one task so the receive loop keeps reading:
barge-in, RequestToSpeak and Stop are seen while the server speaks, and abandon the round. That
work runs on the app's engine pool (:func:`~nbtoolkit.local.routes.run_engine`); the VAD runs
inline (webrtcvad, microseconds per frame), so under load the loop neither stops reading (the
client's pings are answered) nor waits behind other sessions' ASR and TTS to detect speech.

TTS audio goes out in 100 ms binary frames at up to :data:`TTS_SPEED` times real time after a
:data:`TTS_LEAD` head start, as a streaming TTS service sends faster than playback but not all at
once; so a barge-in really cuts the answer short (clients must drop what they buffered).

In tap2talk and duplex modes the ASR starts on the VAD's ``speech_paused`` hint, on the engine pool
(:class:`~nbtoolkit.local.engine.asr.Speculation`), so the transcript is usually ready when the
silence window ends; the frames still go out in the protocol's order.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import io
import json
import logging
import time
import uuid
from typing import Any
from urllib.parse import unquote_to_bytes, urlparse

import numpy as np
from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from nbtoolkit.audio.clip import Clip
from nbtoolkit.config import LOOPBACK_HOSTS
from nbtoolkit.errors import BackendError, ProtocolError
from nbtoolkit.local.auth import check_websocket
from nbtoolkit.local.engine.asr import AsrResult, Speculation
from nbtoolkit.local.faults import Faults, abort_connection
from nbtoolkit.local.routes import run_engine
from nbtoolkit.protocols.dialog import (
    MAX_IMAGE_BYTES,
    Close,
    DetectSpeech,
    DialogSession,
    Frame,
    ImageRef,
    Output,
    ResetDetector,
    Respond,
    Speak,
    StopSpeaking,
    Transcribe,
    parse_client_message,
    result_frame,
    usage_payload,
)

__all__ = ["TTS_FRAME_MS", "TTS_LEAD", "TTS_SPEED", "router"]

log = logging.getLogger("nbtoolkit.local.dialog")
router = APIRouter()

TTS_FRAME_MS = 100
#: Seconds of TTS audio sent at once before pacing starts.
TTS_LEAD = 0.5
#: After the lead, TTS audio is sent at this multiple of real time.
TTS_SPEED = 4.0

_EngineAction = Transcribe | Respond | Speak


class _Closed(Exception):
    """The connection is gone (client left, or a fault dropped it)."""


@router.websocket("/api-ws/v1/inference")
async def dialog_socket(ws: WebSocket) -> None:
    """One MultiModalDialog session."""
    if not await check_websocket(ws):
        return
    await ws.accept()
    await _Connection(ws).run()


class _Connection:
    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.engine: Any = ws.app.state.engine
        self.session = DialogSession(dialog_id=uuid.uuid4().hex)
        self.vad: Any = None
        # the engine is looked up per call (a stub engine may lack transcribe)
        self.ahead: Speculation[AsrResult] = Speculation(
            lambda pcm, rate: self.engine.recognize(pcm, rate), ws.app.state.engine_pool
        )
        self.task: asyncio.Task[None] | None = None
        self.lock = asyncio.Lock()
        self.answer_frames = 0  # counted for the drop/malformed/unknown faults
        self.injected: set[str] = set()
        self.closed = False
        self.history: list[tuple[str, str]] = []
        self.heard = ""
        self.heard_seconds = 0.0
        # the spoken question: the responder checks whether it was English at all
        self.heard_clip: Clip | None = None
        self.heard_result: AsrResult | None = None  # the recognition heard_clip gave
        self.image_sizes: list[tuple[int, int]] = []

    @property
    def faults(self) -> Faults:
        """Read on every use, so faults switched on mid-connection apply at once."""
        faults: Faults = self.ws.app.state.faults
        return faults

    # ------------------------------------------------------------------ receive loop
    async def run(self) -> None:
        try:
            while not self.closed:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if message.get("bytes") is not None:
                    await self.perform(self.session.on_audio(message["bytes"]))
                elif message.get("text") is not None:
                    handshake = not self.session.started  # Start's replies are not answer frames
                    await self.perform(self._on_text(message["text"]), answer=not handshake)
        except (_Closed, WebSocketDisconnect):
            pass
        finally:
            self.closed = True
            self.ahead.drop()  # its transcript is no longer wanted
            if self.task is not None:
                self.task.cancel()

    def _on_text(self, text: str) -> list[Output]:
        try:
            msg = parse_client_message(text)
        except ProtocolError as exc:
            if self.session.started:
                return self.session.error("InvalidParameter", str(exc))
            return self.session.fail("InvalidParameter", str(exc))
        if not self.session.started and msg.directive == "Start":
            status = self.faults.take_status()
            if status is not None:
                return self.session.refuse(msg, status)
        return self.session.receive(msg)

    async def perform(self, outputs: list[Output], *, answer: bool = True) -> None:
        """Carry out the session's outputs; engine work starts the round's task."""
        for out in outputs:
            if isinstance(out, Frame):
                await self._send(json.dumps(out.message), answer=answer)
            elif isinstance(out, DetectSpeech):
                await self._detect(out.pcm)
            elif isinstance(out, ResetDetector):
                self.vad = None
            elif isinstance(out, StopSpeaking):
                self._cancel_round()
            elif isinstance(out, Close):
                await self._close(out.code, out.reason)
            else:  # a new round: whatever the previous one left is void
                self._cancel_round()
                self.heard, self.heard_seconds, self.image_sizes = "", 0.0, []
                self.heard_clip = self.heard_result = None
                self.task = asyncio.create_task(self._round(out))

    async def _detect(self, pcm: bytes) -> None:
        if self.vad is None:
            self.vad = self.engine.vad(rate=self.session.options.input_rate, pauses=True)
        for ev in self.vad.feed(pcm):  # inline: microseconds, see the module docstring
            if ev.kind == "speech_paused":
                self.ahead.start(ev.audio, self.vad.rate)
            else:
                await self.perform(self.session.on_vad(ev.kind, ev.audio))

    def _cancel_round(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.task = None

    # ------------------------------------------------------------------ one round
    async def _round(self, action: _EngineAction) -> None:
        current: _EngineAction | None = action
        try:
            while current is not None:
                outputs = await self._step(current)
                current = None
                for out in outputs:
                    if isinstance(out, (Transcribe, Respond, Speak)):
                        current = out
                    else:
                        await self.perform([out])
        except (_Closed, asyncio.CancelledError):
            return
        except Exception as exc:  # the engine or an image failed: tell the client, keep the session
            code = exc.code if isinstance(exc, BackendError) and exc.code else "InternalError"
            if code == "InternalError":
                log.exception("dialog round failed")
            round_ = (current or action).round
            try:
                await self.perform(self.session.on_failure(round_, code, str(exc)))
            except _Closed:
                return

    async def _step(self, action: _EngineAction) -> list[Output]:
        if isinstance(action, Transcribe):
            result = await asyncio.wrap_future(self.ahead.future(action.pcm, action.rate))
            self.heard, self.heard_seconds = result.text, len(action.pcm) // 2 / action.rate
            self.heard_clip = Clip.from_pcm(action.pcm, action.rate)
            self.heard_result = result
            return self.session.on_transcript(action.round, result.text)
        if isinstance(action, Respond):
            images = [self._image_bytes(ref) for ref in action.images]
            self.image_sizes = [_image_size(data) for data in images]
            reply = await run_engine(
                self.ws.app,
                self.engine.respond,
                action.text,
                audio=self.heard_clip,
                images=images,
                history=tuple(self.history),
                spoken=self.heard_clip is not None,
                heard=self.heard_result,
            )
            if not self.heard:  # a typed prompt: the "heard" side of the history
                self.heard = action.text
            return self.session.on_reply(action.round, reply.text, reply.kind, reply.commands)
        return await self._speak(action)

    async def _speak(self, action: Speak) -> list[Output]:
        pcm = await run_engine(self.ws.app, self.engine.synthesize, action.text, action.rate)
        clip = Clip(np.asarray(pcm, dtype=np.int16), action.rate)
        t0 = time.monotonic()
        for i, chunk in enumerate(clip.chunks(TTS_FRAME_MS)):
            if self.session.round != action.round:
                return []  # interrupted: the session already ended the round
            ahead = t0 + (i * TTS_FRAME_MS / 1000 - TTS_LEAD) / TTS_SPEED - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)  # pacing the stream, not waiting for an event
            await self._send(chunk)
        usage = self._usage(action.text, clip.duration)
        if self.heard:  # TTS-only rounds are not part of the conversation
            self.history.append((self.heard, action.text))
        return self.session.on_spoken(action.round, usage)

    def _usage(self, answer: str, answer_seconds: float) -> dict[str, Any]:
        from nbtoolkit.protocols.tokens import audio_tokens, image_tokens, text_tokens

        spoken_in = self.heard_seconds > 0
        return usage_payload(
            input_text=0 if spoken_in else text_tokens(self.heard),
            input_audio=audio_tokens(self.heard_seconds) if spoken_in else 0,
            input_image=sum(image_tokens(w, h) for w, h in self.image_sizes),
            output_text=text_tokens(answer),
            output_audio=audio_tokens(answer_seconds),
        )

    def _image_bytes(self, ref: ImageRef) -> bytes:
        """Decode a base64 image, or read a ``data:`` / local-upload URL (nothing else is fetched)."""
        if ref.type == "base64":
            data = _b64(ref.value)
        else:
            url = urlparse(ref.value)
            if url.scheme == "data":
                meta, _, body = url.path.partition(",")
                data = _b64(body) if meta.endswith(";base64") else unquote_to_bytes(body)
            else:
                data = self._uploaded(ref.value)
        if len(data) > MAX_IMAGE_BYTES:
            raise ProtocolError(
                f"The image is {len(data) // 1024} KB; the limit is {MAX_IMAGE_BYTES // 1024} KB",
                "send a smaller JPEG",
                code="InvalidParameter",
            )
        return data

    def _uploaded(self, url: str) -> bytes:
        parsed = urlparse(url)
        uploads: dict[str, bytes] = getattr(self.ws.app.state, "uploads", {})
        local = parsed.scheme == "oss" or (
            parsed.scheme in ("http", "https") and (parsed.hostname or "") in LOOPBACK_HOSTS
        )
        path = (parsed.netloc + parsed.path) if parsed.scheme == "oss" else parsed.path
        if local:
            for key, data in uploads.items():
                if path.rstrip("/").endswith(key.strip("/")):
                    return data
        raise ProtocolError(
            f"The offline engine cannot read the image URL {url[:80]!r}",
            'send {"type": "base64"} or a data: URL (it fetches nothing from the network)',
            code="InvalidParameter",
        )

    # ------------------------------------------------------------------ sending, with faults
    async def _send(self, data: str | bytes, *, answer: bool = True) -> None:
        if self.closed:
            raise _Closed
        if answer:
            if self.faults.never_answer:
                return  # swallowed rather than awaited forever, so the connection can still end
            await self._inject_faults()
            self.answer_frames += 1
        async with self.lock:
            try:
                if isinstance(data, bytes):
                    await self.ws.send_bytes(data)
                else:
                    await self.ws.send_text(data)
            except (WebSocketDisconnect, RuntimeError, OSError) as exc:
                self.closed = True
                raise _Closed from exc

    async def _inject_faults(self) -> None:
        f = self.faults
        await f.pace()
        n = self.answer_frames
        if f.drop_after is not None and n >= f.drop_after:
            await self._drop(f.close_code)
        extra: list[str] = []
        if f.malformed_after is not None and n >= f.malformed_after and "bad" not in self.injected:
            self.injected.add("bad")
            extra.append('{"header": {"task_id": ')  # cut-off JSON
        if (
            f.unknown_event_after is not None
            and n >= f.unknown_event_after
            and "unknown" not in self.injected
        ):
            self.injected.add("unknown")
            s = self.session
            extra.append(json.dumps(result_frame(s.task_id, "NbtoolkitUnknownEvent", s.dialog_id)))
        for text in extra:
            async with self.lock:
                await self.ws.send_text(text)

    async def _drop(self, code: int | None) -> None:
        self.closed = True
        if code is not None:
            await self._close(code, "fault injected")
        elif not abort_connection(self.ws):
            await self._close(1011, "fault injected")
        raise _Closed

    async def _close(self, code: int, reason: str) -> None:
        self.closed = True
        # the client may have closed first (the SDK closes on Stopped)
        async with self.lock:
            with contextlib.suppress(RuntimeError, OSError):
                await self.ws.close(code=code, reason=reason)


def _image_size(data: bytes) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except (UnidentifiedImageError, OSError) as exc:
        raise ProtocolError(
            "An image could not be read", "send a JPEG or PNG", code="InvalidParameter"
        ) from exc


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(
            "An image's base64 value does not decode",
            "send standard base64 without line breaks",
            code="InvalidParameter",
        ) from exc
