"""``WS /api-ws/v1/realtime?model=…``: the Qwen-Omni realtime protocol answered by the offline engine.

The protocol itself lives in :class:`nbtoolkit.local.realtime_session.RealtimeSession`; this module
is the I/O around it: a reader task that only reads the socket into an inbox, one loop feeding those
frames to the session in order, one writer task sending its frames (and injecting
:class:`~nbtoolkit.local.faults.Faults`), a server VAD stream when ``turn_detection`` asks for one,
and one task per response that asks the engine for the answer and streams it as ~100 ms audio
deltas, so a barge-in or ``response.cancel`` can cut it short.

The reader is separate because the session loop must wait for a turn's transcript before it takes
the next frame (the protocol's event order depends on it), and under load that transcript queues
behind other sessions' engine work on the app's engine pool. A loop that stopped reading for that
long would let uvicorn's frame queue fill, after which the client's pings go unanswered and it
drops the connection (1011). The VAD (webrtcvad, ~30 µs per 100 ms append) runs inline on the
event loop, so it never queues behind ASR or TTS.

With server VAD the ASR starts early: on the VAD's ``speech_paused`` hint the utterance so far is
transcribed on the engine pool (:class:`~nbtoolkit.local.engine.asr.Speculation`), so by the time
the silence window has passed and ``speech_stopped`` is sent the transcript is usually ready; the
events still go out in the protocol's order.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from typing import Any

import numpy as np
from fastapi import APIRouter, WebSocket
from starlette.types import Message
from starlette.websockets import WebSocketDisconnect

from nbtoolkit.audio.clip import Clip
from nbtoolkit.local.auth import check_websocket
from nbtoolkit.local.engine.asr import AsrResult, Speculation
from nbtoolkit.local.faults import Faults, abort_connection
from nbtoolkit.local.realtime_session import (
    ConfigureVad,
    EndConnection,
    FeedVad,
    NeedAnswer,
    NeedTranscript,
    RealtimeSession,
    ResponseState,
    Step,
    StopAnswer,
    usage_dict,
)
from nbtoolkit.local.routes import run_engine
from nbtoolkit.local.server import MAX_WS_MESSAGE
from nbtoolkit.protocols.errors import STATUSES, lookup
from nbtoolkit.protocols.realtime import INPUT_RATE, OUTPUT_RATE, ErrorEvent, RealtimeEvent, new_id

__all__ = ["router"]

log = logging.getLogger("nbtoolkit.local.realtime")
router = APIRouter()

#: Audio delta length (about 100 ms, docs/protocols.md#realtime-audio-formats).
CHUNK_MS = 100
#: How many frames a response may queue ahead of the writer (keeps barge-in prompt).
_MAX_AHEAD = 4
#: A clause ends at punctuation; each clause is synthesised and streamed before the next.
_CLAUSE = re.compile(r"[^.!?;:,。！？；，]+[.!?;:,。！？；，]*\s*")
_CLOSE = object()
#: Bytes of client frames the inbox holds before the reader waits for the session loop: minutes of
#: streamed audio, and always room for one frame of the largest size.
_INBOX_BYTES = MAX_WS_MESSAGE


@router.websocket("/api-ws/v1/realtime")
async def realtime(ws: WebSocket, model: str = "qwen-omni-turbo-realtime") -> None:
    """One realtime session per connection (docs/protocols.md#realtime-events)."""
    if not await check_websocket(ws):
        return
    await _Connection(ws, model).run()


def _retrieve(task: asyncio.Task[None]) -> None:
    # A send that failed because the client left is not worth an "exception never retrieved" log.
    if not task.cancelled():
        task.exception()


def _jpeg_size(jpeg: bytes) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(jpeg)) as img:
            return img.size
    except (UnidentifiedImageError, OSError):
        return (0, 0)  # a JPEG header Pillow cannot read still costs the minimum


def _refusal(status: int) -> tuple[dict[str, Any], int]:
    """The ``error`` event and close code that stand for HTTP ``status`` on this protocol (from
    the one status/code table)."""
    row = lookup(status) or STATUSES[400]
    message = f"Injected fault: the local server refuses this session with status {status}"
    return {"type": row.error_type, "code": row.code, "message": message, "param": None}, row.close


class _Inbox:
    """A WebSocket's incoming messages, read by a task of their own, so the socket (and its pings)
    is read whatever the consumer is waiting for. Holds up to :data:`_INBOX_BYTES` (then the
    reader waits: back-pressure on a client that sends faster than the session can take)."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[Message] = asyncio.Queue()
        self.held = 0
        self.room = asyncio.Event()
        self.room.set()

    async def read(self) -> None:
        """Run as a task until the client leaves; the last message is always a disconnect."""
        try:
            while True:
                message = await self.ws.receive()
                self.queue.put_nowait(message)
                if message["type"] == "websocket.disconnect":
                    return
                self.held += _size(message)
                if self.held > _INBOX_BYTES:
                    self.room.clear()
                    await self.room.wait()
        except (WebSocketDisconnect, RuntimeError, OSError):
            self.queue.put_nowait({"type": "websocket.disconnect", "code": 1006})

    async def get(self) -> Message:
        message = await self.queue.get()
        self.held -= _size(message)
        if self.held <= _INBOX_BYTES:
            self.room.set()
        return message


def _size(message: Message) -> int:
    return len(message.get("text") or message.get("bytes") or b"")


class _Connection:
    def __init__(self, ws: WebSocket, model: str) -> None:
        self.ws = ws
        self.engine: Any = ws.app.state.engine
        self.session = RealtimeSession(model, usage=self._usage)
        self.out: asyncio.Queue[Any] = asyncio.Queue()
        self.sent_one = asyncio.Event()
        self.sent = 0
        self.injected: set[str] = set()
        self.vad: Any = None
        # the engine is looked up per call: a test may swap it
        self.ahead: Speculation[AsrResult] = Speculation(
            lambda pcm, rate: self.engine.recognize(pcm, rate), ws.app.state.engine_pool
        )
        # the last recognition, for the answer to the same audio (see Engine.respond's heard)
        self.heard: tuple[bytes, AsrResult] | None = None
        self.answer: asyncio.Task[None] | None = None
        self.history: list[tuple[str, str]] = []

    @property
    def faults(self) -> Faults:
        # Read on every frame so a test can change faults mid-connection.
        faults: Faults = self.ws.app.state.faults
        return faults

    # ------------------------------------------------------------------ main loop
    async def run(self) -> None:
        await self.ws.accept()
        status = self.faults.take_status()
        if status is not None:
            error, close = _refusal(status)
            await self.ws.send_text(ErrorEvent(error=error).to_json())
            await self.ws.close(close)
            return
        opened = self.session.opened()
        # session.created is the handshake's completion, so it is never delayed or counted.
        await self.ws.send_text(opened.events[0].to_json())
        writer = asyncio.create_task(self._writer())
        inbox = _Inbox(self.ws)
        reader = asyncio.create_task(inbox.read())
        try:
            await self._apply(Step([], opened.actions))
            # Runs until the client leaves; after session.finish the writer closes the socket
            # once its frames are out, and the client's close reply ends this loop.
            while not writer.done():
                message = await inbox.get()
                if message["type"] == "websocket.disconnect":
                    break
                data = message.get("text")
                if data is None:
                    data = message.get("bytes") or b""
                await self._apply(self.session.receive(data))
        except WebSocketDisconnect:
            pass  # the client went away; nothing is left to answer
        finally:
            self.ahead.drop()  # its transcript is no longer wanted
            for task in (self.answer, writer, reader):
                if task is not None:
                    task.cancel()
                    task.add_done_callback(_retrieve)

    async def _apply(self, step: Step) -> None:
        # StopAnswer first: no delta of a stopped response may follow its response.done.
        for action in step.actions:
            if isinstance(action, StopAnswer):
                await self._stop_answer()
        self._emit(step.events)
        for action in step.actions:
            if isinstance(action, ConfigureVad):
                s = action.settings
                self.vad = (
                    None
                    if s is None
                    else self.engine.vad(
                        # the protocol allows -1…1; the engine's VAD takes 0…1
                        threshold=min(max(float(s["threshold"]), 0.0), 1.0),
                        prefix_padding_ms=int(s["prefix_padding_ms"]),
                        silence_duration_ms=int(s["silence_duration_ms"]),
                        rate=INPUT_RATE,
                        pauses=True,
                    )
                )
            elif isinstance(action, FeedVad) and self.vad is not None:
                for ev in self.vad.feed(action.pcm):  # inline: microseconds, see module docstring
                    if ev.kind == "speech_paused":
                        self.ahead.start(ev.audio, INPUT_RATE)
                    elif ev.kind == "speech_started":
                        await self._apply(self.session.speech_started(ev.t_ms))
                    elif ev.kind == "speech_stopped":
                        await self._apply(self.session.speech_stopped(ev.t_ms, ev.audio))
            elif isinstance(action, NeedTranscript):
                try:
                    # awaited, not run: the pool does the work and the reader keeps reading
                    heard = await asyncio.wrap_future(self.ahead.future(action.audio, INPUT_RATE))
                except Exception as exc:  # the ASR failed: report it, answer what we can
                    log.warning("realtime transcription failed: %s", type(exc).__name__)
                    failed = f"engine error: {type(exc).__name__}"
                    await self._apply(self.session.transcribed(action.item_id, "", failed))
                else:
                    self.heard = (action.audio, heard)
                    await self._apply(self.session.transcribed(action.item_id, heard.text))
            elif isinstance(action, NeedAnswer):
                self.answer = asyncio.create_task(self._answer(action))
            elif isinstance(action, EndConnection):
                self.out.put_nowait(_CLOSE)

    def _emit(self, events: list[RealtimeEvent]) -> None:
        for event in events:
            self.out.put_nowait(event.to_json())

    async def _emit_paced(self, events: list[RealtimeEvent]) -> None:
        """Queue a response's frames, but never more than a few ahead of the writer."""
        self._emit(events)
        while self.out.qsize() > _MAX_AHEAD:
            self.sent_one.clear()
            await self.sent_one.wait()

    async def _stop_answer(self) -> None:
        task, self.answer = self.answer, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])  # unlike `await task`, does not re-raise its cancellation

    # ------------------------------------------------------------------ answering
    async def _answer(self, need: NeedAnswer) -> None:
        s, rid = self.session, need.response_id
        try:
            clip = Clip.from_pcm(need.audio, INPUT_RATE) if need.audio else None
            heard = self.heard[1] if self.heard and self.heard[0] == need.audio else None
            reply = await run_engine(
                self.ws.app,
                self.engine.respond,
                need.heard,
                audio=clip,
                images=need.images,
                history=tuple(self.history),
                context=need.instructions,  # picks the language when the turn has no words
                spoken=clip is not None,
                heard=heard,
            )
            text: str = reply.text
            self.history.append((need.heard, text))
            if need.with_audio:
                for clause in _CLAUSE.findall(text):
                    await self._speak(rid, clause, reply.lang)
            else:
                for word in re.findall(r"\S+\s*", text):
                    await self._emit_paced(s.text_delta(rid, word))
            await self._emit_paced(s.end_response(rid))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the engine failed: say so on the wire, keep the session
            log.warning("realtime answer failed: %s", type(exc).__name__)
            await self._emit_paced(s.fail_response(rid, f"engine error: {type(exc).__name__}"))

    async def _speak(self, rid: str, clause: str, lang: str | None = None) -> None:
        """Synthesise one clause and stream it: audio chunks with its words spread over them.

        ``lang`` is the whole answer's language: an English quote inside a Chinese answer keeps the
        Mandarin voice (which reads English words as English)."""
        s = self.session
        words = re.findall(r"\S+\s*", clause)
        spoken = clause.strip()
        pcm: np.ndarray = (
            await run_engine(
                self.ws.app, self.engine.synthesize, spoken, rate=OUTPUT_RATE, lang=lang
            )
            if spoken
            else np.zeros(0, dtype=np.int16)
        )
        step = OUTPUT_RATE * CHUNK_MS // 1000
        chunks = [pcm[i : i + step].astype("<i2").tobytes() for i in range(0, len(pcm), step)]
        if not chunks:
            await self._emit_paced(s.transcript_delta(rid, clause))
            return
        said = 0
        for i, chunk in enumerate(chunks):
            upto = -(-(i + 1) * len(words) // len(chunks))  # ceil: words lead their audio
            await self._emit_paced(
                s.transcript_delta(rid, "".join(words[said:upto])) + s.audio_delta(rid, chunk)
            )
            said = upto

    def _usage(self, r: ResponseState) -> dict[str, Any]:
        from nbtoolkit.protocols.tokens import audio_tokens, image_tokens, text_tokens

        inp = r.input
        in_text = text_tokens(r.instructions) if r.instructions else 0
        in_audio = in_image = 0
        if inp is not None:
            if inp.audio:
                in_audio = audio_tokens(len(inp.audio) / 2 / INPUT_RATE)
            elif inp.transcript:
                in_text += text_tokens(inp.transcript)
            in_image = sum(image_tokens(*_jpeg_size(j)) for j in inp.images)
        out_audio = audio_tokens(r.audio_bytes / 2 / OUTPUT_RATE) if r.audio_bytes else 0
        return usage_dict(in_text, in_audio, in_image, text_tokens(r.text), out_audio)

    # ------------------------------------------------------------------ writer + faults
    async def _writer(self) -> None:
        while True:
            item = await self.out.get()
            if item is _CLOSE:
                await self.ws.close(1000)
                return
            faults = self.faults
            await faults.pace()
            await self._inject(faults)
            await self.ws.send_text(item)
            self.sent += 1
            self.sent_one.set()
            if faults.drop_after is not None and self.sent >= faults.drop_after:
                await self._drop(faults.close_code)
                return

    async def _inject(self, faults: Faults) -> None:
        """Send the one-off bad frames a test asked for, once ``self.sent`` frames have gone out."""
        if faults.malformed_after == self.sent and "malformed" not in self.injected:
            self.injected.add("malformed")
            await self.ws.send_text("{this is not json")
        if faults.unknown_event_after == self.sent and "unknown" not in self.injected:
            self.injected.add("unknown")
            unknown = {"event_id": new_id("event"), "type": "response.nbtoolkit_fault", "x": 1}
            await self.ws.send_text(json.dumps(unknown))
        if faults.oversized_after == self.sent and "oversized" not in self.injected:
            self.injected.add("oversized")
            pad = "A" * (MAX_WS_MESSAGE + 1)
            await self.ws.send_text(f'{{"event_id":"event_pad","type":"padding","pad":"{pad}"}}')

    async def _drop(self, close_code: int | None) -> None:
        if close_code is not None:
            await self.ws.close(close_code)
            return
        if not abort_connection(self.ws):
            await self.ws.close(1011)
