"""``OmniRealtime``: an asyncio client for the Qwen-Omni realtime protocol, on ``websockets``.

Why not the SDK's ``OmniRealtimeConversation``: it runs websocket-client's ``run_forever`` in a thread
of its own and calls back from that thread with raw dicts, so a notebook would hop threads to reach
the kernel's event loop, could not apply backpressure, and could not cancel a wait. This client runs
on the notebook's own loop (a background reader task; cells return at once), yields typed events
(``async for event in rt``), lets a slow consumer slow the socket (a bounded queue), and every wait is
cancellable and bounded.

The protocol (typed frames both ways, the parser) is :mod:`nbtoolkit.protocols.realtime`, folding
events into a reply :mod:`nbtoolkit.protocols.realtime_turn`; this module is the transport: connect +
keepalive, send helpers, barge-in, reconnect and the ledger, under the one call shape of
:mod:`nbtoolkit.backends._base`.

Reconnecting (opt-in, ``reconnect=ReconnectPolicy()``) opens a *new* session: the server keeps
nothing, so the client re-sends its session settings, never re-sends or re-commits audio, and reports
what was lost in a :class:`Reconnected` event.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlparse

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as open_websocket
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from nbtoolkit import events as ev
from nbtoolkit.audio.clip import Clip
from nbtoolkit.audio.features import is_silent
from nbtoolkit.backends._base import AsyncClient, Emit, Question, check_seconds
from nbtoolkit.config import LOOPBACK_HOSTS, Endpoints, Secret, scrubbed_logger
from nbtoolkit.errors import (
    AudioError,
    AuthError,
    BackendError,
    ConfigError,
    ConnectionLost,
    ImageError,
    NbToolkitError,
    ProtocolError,
)
from nbtoolkit.ledger import Ledger
from nbtoolkit.protocols.errors import error_for, parse_error_body
from nbtoolkit.protocols.params import MAX_UTTERANCE_SECONDS, realtime_session_problem
from nbtoolkit.protocols.realtime import (
    DEFAULT_TURN_DETECTION,
    INPUT_RATE,
    MAX_IMAGE_BYTES,
    OUTPUT_RATE,
    VOICES,
    AudioDelta,
    AudioTranscriptDelta,
    ErrorEvent,
    InputAudioAppend,
    InputAudioClear,
    InputAudioCommit,
    InputAudioCommitted,
    InputImageAppend,
    InputTranscriptionCompleted,
    RealtimeEvent,
    ResponseCancel,
    ResponseCreate,
    ResponseCreated,
    ResponseDone,
    SessionCreated,
    SessionFinish,
    SessionFinished,
    SessionUpdate,
    SessionUpdated,
    SpeechStarted,
    SpeechStopped,
    TextDelta,
    parse_server_event,
)
from nbtoolkit.protocols.realtime_turn import RealtimeTurnCollector
from nbtoolkit.results import Reply, Timeline, Usage
from nbtoolkit.retry import RetryPolicy, parse_retry_after, retrying_async

__all__ = ["RECOVERABLE_CLOSE_CODES", "OmniRealtime", "ReconnectPolicy", "Reconnected"]

log = logging.getLogger("nbtoolkit.omni")

#: Close codes after which a new connection may succeed (going away, abnormal, server error,
#: restart, try again later); 1005 = closed without a status.
RECOVERABLE_CLOSE_CODES = frozenset({1001, 1005, 1006, 1011, 1012, 1013})
#: Frame size limit both ways: a minute of base64 24 kHz audio fits (reference B2/B6).
MAX_MESSAGE = 16 * 1024 * 1024
#: Audio goes out in appends of this length.
CHUNK_MS = 100
#: Send images at no more than 2 frames per second (docs/protocols.md, realtime images).
MIN_IMAGE_INTERVAL = 0.5


@dataclass(frozen=True)
class ReconnectPolicy:
    """When and how often to re-open a dropped connection (backoff from :class:`RetryPolicy`)."""

    codes: frozenset[int] = RECOVERABLE_CLOSE_CODES
    retry: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(max_retries=5, initial=0.5, maximum=8.0)
    )


@dataclass(frozen=True)
class Reconnected:
    """The connection dropped with ``close_code`` and a new session is open.

    ``lost_audio_ms`` is the audio the old session had received but not answered (it is not sent
    again); ``lost_response_id`` the response that was cut off, if any.
    """

    type: ClassVar[str] = "nbtoolkit.reconnected"
    close_code: int
    attempts: int
    lost_audio_ms: float
    lost_response_id: str | None
    session_id: str


Event = RealtimeEvent | Reconnected
_END = object()


def _error_from_event(event: ErrorEvent, during: str, *, local: bool = False) -> BackendError:
    """The exception an ``error`` event stands for, by its code, else its ``type`` (the one
    status/code table; refusals are ProtocolError)."""
    kind = event.error.get("type")
    return error_for(
        None,
        event.code or None,
        event.message or None,
        where=f"The realtime server ({during})",
        local=local,
        error_type=kind if isinstance(kind, str) else None,
    )


def _as_pcm16k(audio: Clip | bytes | bytearray | memoryview | str | os.PathLike[str]) -> bytes:
    if isinstance(audio, (str, os.PathLike)):
        audio = Clip.load(audio)
    if isinstance(audio, Clip):
        return audio.resample(INPUT_RATE).to_pcm()
    if not isinstance(audio, (bytes, bytearray, memoryview)):
        raise AudioError(
            f"send_audio() got {type(audio).__name__}",
            "pass 16 kHz PCM16 mono bytes, a Clip or an audio file's path",
        )
    pcm = bytes(audio)
    if len(pcm) % 2:
        raise AudioError(
            f"PCM16 audio must have an even number of bytes (got {len(pcm)})",
            "send 16-bit mono PCM at 16 kHz, or pass a Clip (it is resampled for you)",
        )
    return pcm


class OmniRealtime(AsyncClient):
    """A Qwen-Omni realtime session.

    ``rt.ask(clip)`` (or ``await rt.ask_async(clip, images=[jpeg])``) says one question and returns
    the whole answer; the session connects on first use and stays open until :meth:`close` /
    :meth:`aclose` (or ``with``/``async with``). For live use, ``async for event in rt`` yields the
    protocol's typed events while :meth:`send_audio` streams a microphone.

    ``turn_detection="server_vad"`` lets the server find the end of speech and answer by itself;
    ``None`` is manual mode (:meth:`commit` + :meth:`create_response`). ``on_flush`` is called
    (sync or async) when the user barges in, so a player can drop queued audio.
    ``ping_interval`` keeps the socket alive (raise it if cells block the loop for long);
    ``timeout`` bounds a whole ``ask``, from sending the question to the end of the answer;
    ``on_malformed`` is "raise" (a ProtocolError from the iterator / ``ask``) or "skip" (logged
    and marked on the timeline).
    """

    #: The voices the service offers.
    voices: ClassVar[tuple[str, ...]] = VOICES

    def __init__(
        self,
        endpoints: Endpoints | None = None,
        *,
        model: str = "qwen-omni-turbo-realtime",
        api_key: str | Secret | None = None,
        ledger: Ledger | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 60.0,
        voice: str = "Chelsie",
        turn_detection: Literal["server_vad"] | None = "server_vad",
        modalities: Iterable[str] = ("text", "audio"),
        instructions: str | None = None,
        on_flush: Callable[[], Any] | None = None,
        reconnect: ReconnectPolicy | None = None,
        vad: dict[str, Any] | None = None,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        open_timeout: float = 10.0,
        close_timeout: float = 10.0,
        on_malformed: Literal["raise", "skip"] = "raise",
        max_queue: int = 1024,
    ) -> None:
        mods = list(modalities) if isinstance(modalities, (list, tuple)) else [modalities]
        if sorted(map(str, mods)) not in (["text"], ["audio", "text"]):
            raise ConfigError(
                f"modalities must be ('text',) or ('text', 'audio'), not {tuple(mods)!r}",
                "pass modalities=('text', 'audio') for speech or ('text',) for text only",
            )
        if voice not in VOICES:
            raise ConfigError(f"Unknown voice {voice!r}", f"choose one of {', '.join(VOICES)}")
        if vad is not None and not isinstance(vad, dict):
            raise ConfigError(
                f"vad= must be a dict of server VAD settings, not {type(vad).__name__}",
                "e.g. vad={'silence_duration_ms': 500}",
            )
        if instructions is not None and not isinstance(instructions, str):
            raise ConfigError(
                f"instructions= must be text, not {type(instructions).__name__}",
                "e.g. instructions='Answer briefly.'",
            )
        check_seconds("ping_interval", ping_interval, optional=True, example=20)
        check_seconds("ping_timeout", ping_timeout, optional=True, example=20)
        check_seconds("open_timeout", open_timeout, example=10)
        check_seconds("close_timeout", close_timeout, example=10)
        if turn_detection not in ("server_vad", None):
            raise ConfigError(
                f"turn_detection must be 'server_vad' or None, not {turn_detection!r}",
                "use None for push-to-talk (commit yourself) or 'server_vad'",
            )
        super().__init__(
            endpoints, model=model, api_key=api_key, ledger=ledger, retry=retry, timeout=timeout
        )
        self.on_flush = on_flush
        self.reconnect = reconnect
        self.ping_interval, self.ping_timeout = ping_interval, ping_timeout
        self.open_timeout, self.close_timeout = open_timeout, close_timeout
        self.on_malformed = on_malformed
        td = None if turn_detection is None else {**DEFAULT_TURN_DETECTION, **(vad or {})}
        self.config: dict[str, Any] = {
            "modalities": mods,
            "voice": voice,
            "input_audio_format": "pcm16",
            "output_audio_format": "pcm16",
            "input_audio_transcription": {"model": "gummy-realtime-v1"},
            "turn_detection": td,
        }
        if instructions is not None:
            self.config["instructions"] = instructions
        problem = realtime_session_problem(self.config)
        if problem is not None:
            raise problem.error(_option_name(problem.param))
        #: Every client and server event of the session, timestamped.
        self.timeline = Timeline()
        #: Server settings from the latest session.created / session.updated.
        self.session: dict[str, Any] = {}
        #: Reconnections so far.
        self.reconnects: list[Reconnected] = []
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._max_queue = max_queue
        self._events: asyncio.Queue[Any] = asyncio.Queue(maxsize=max_queue)
        self._ready = asyncio.Event()
        self._failed: BaseException | None = None
        self._closing = False
        self._turn_tl: Timeline | None = None
        self._response_id: str | None = None
        self._response_t0 = 0.0
        self._uncommitted_ms = 0.0
        self._unanswered_ms = 0.0
        self._audio_sent = False
        self._last_image = float("-inf")
        self._cancel_ids: set[str] = set()
        self._marked: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> OmniRealtime:
        await self.connect()
        return self

    async def connect(self) -> None:
        """Open the socket, wait for ``session.created`` and send this client's settings (on the
        running loop, which becomes the session's home). Does nothing when already connected."""
        if self._home_now() is not None and self._ws is not None and self._failed is None:
            return
        # queues and events belong to the loop that first waits on them: new ones for a new home
        self._events = asyncio.Queue(maxsize=self._max_queue)
        self._ready = asyncio.Event()
        self._failed, self._closing = None, False
        # a refused upgrade (429, 5xx) or a failed connect is retried like any first request
        self._ws = await retrying_async(self._open, self.retry)
        self._home = asyncio.get_running_loop()
        self._ready.set()
        self._reader = asyncio.create_task(self._read_loop(), name="omni-realtime-reader")

    async def _aclose(self) -> None:
        """End the session (``session.finish``) and close the socket; bounded by close_timeout."""
        self._closing = True
        ws, reader = self._ws, self._reader
        if ws is not None and self._failed is None:
            try:
                await ws.send(SessionFinish().to_json())
                if reader is not None:
                    await asyncio.wait([reader], timeout=self.close_timeout)
            except Exception as exc:  # closing must not fail because the link is already gone
                log.debug("session.finish not sent: %s", type(exc).__name__)
        if ws is not None:
            await ws.close()
        if reader is not None and not reader.done():
            reader.cancel()
            await asyncio.wait([reader])
        self._ws, self._reader, self._home = None, None, None

    @property
    def connected(self) -> bool:
        """True while the session's socket is open."""
        return self._ws is not None and self._failed is None

    @property
    def session_id(self) -> str | None:
        """The server's ``sess_…`` id (a new one after each reconnection)."""
        sid = self.session.get("id")
        return str(sid) if sid else None

    @property
    def response_active(self) -> bool:
        """True between ``response.created`` and its ``response.done``."""
        return self._response_id is not None

    async def _open(self) -> ClientConnection:
        url = f"{self.endpoints.realtime_url}?model={self.model}"
        headers = {"Authorization": f"Bearer {self.endpoints.api_key.reveal()}"}
        where = "the local server" if self.endpoints.local else "DashScope"
        try:
            ws = await open_websocket(
                url,
                # websockets logs request headers (Authorization too) at DEBUG
                logger=scrubbed_logger("websockets.client"),
                additional_headers=headers,
                max_size=MAX_MESSAGE,
                ping_interval=self.ping_interval,
                ping_timeout=self.ping_timeout,
                open_timeout=self.open_timeout,
                close_timeout=self.close_timeout,
                # a loopback URL (local engine, recording proxy) must never go via HTTPS_PROXY
                proxy=None if urlparse(url).hostname in LOOPBACK_HOSTS else True,
            )
        except InvalidStatus as exc:
            message, code = parse_error_body(bytes(exc.response.body))
            raise error_for(
                exc.response.status_code,
                code,
                message,
                where=f"{where[0].upper()}{where[1:]} (opening the realtime connection)",
                retry_after=parse_retry_after(exc.response.headers.get("Retry-After")),
                local=self.endpoints.local,
            ) from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise ConnectionLost(
                f"Could not open the realtime connection to {where} ({type(exc).__name__})",
                "check the network (or that the local server is running) and try again",
            ) from None
        try:
            first = await asyncio.wait_for(ws.recv(), self.open_timeout)
        except (TimeoutError, asyncio.TimeoutError):
            await ws.close()
            raise ConnectionLost(
                f"{where} sent no session.created within {self.open_timeout:.0f} s",
                "try again; raise open_timeout on a slow link",
            ) from None
        except ConnectionClosed as exc:
            raise self._closed_error(exc.rcvd.code if exc.rcvd else 1006, None) from None
        event = parse_server_event(first)
        if isinstance(event, ErrorEvent):
            await ws.close()
            raise _error_from_event(event, "the session", local=self.endpoints.local)
        if not isinstance(event, SessionCreated):
            await ws.close()
            raise ProtocolError(
                f"The first realtime event was {event.type!r}, not session.created",
                "check that the URL is a Qwen-Omni realtime endpoint",
            )
        self._on_server_event(event)
        await self._send_on(ws, SessionUpdate(session=self.config))
        return ws

    def _closed_error(self, code: int, partial: Reply | None) -> BackendError:
        if code == 1008:
            return error_for(
                code,
                None,
                None,
                where="The realtime server",
                partial=partial,
                local=self.endpoints.local,
            )
        if code == 1009:
            return ConnectionLost(
                f"A realtime message exceeded {MAX_MESSAGE // (1024 * 1024)} MiB (close 1009)",
                "send shorter audio per append; answers larger than that cannot be received",
                partial=partial,
            )
        return ConnectionLost(
            f"The realtime connection closed with code {code} before the answer was complete",
            "what arrived is in .partial; pass reconnect=ReconnectPolicy() to re-open "
            "automatically",
            partial=partial,
        )

    # ------------------------------------------------------------------ reading
    async def _read_loop(self) -> None:
        while True:
            ws = self._ws
            assert ws is not None
            try:
                async for raw in ws:
                    await self._on_frame(raw)
                code = ws.close_code or 1000
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else (exc.sent.code if exc.sent else 1006)
            except NbToolkitError as exc:  # e.g. the barge-in cancel could not be sent
                await ws.close()
                await self._finish(exc)
                return
            self._mark("state", "closed", code=code)
            if self._closing:
                await self._finish(None)
                return
            policy = self.reconnect
            if policy is None or code not in policy.codes:
                await self._finish(self._closed_error(code, None))
                return
            try:
                await self._reconnect(code, policy)
            except NbToolkitError as exc:
                await self._finish(exc)
                return

    async def _finish(self, error: BaseException | None) -> None:
        self._failed = error or ConnectionLost(
            "The realtime session is closed", "open a new OmniRealtime"
        )
        self._ready.set()  # wake senders so they fail instead of waiting
        if error is not None:
            await self._events.put(error)
        await self._events.put(_END)

    async def _on_frame(self, raw: str | bytes) -> None:
        if isinstance(raw, bytes):
            log.warning("dropped a binary frame (%d bytes): the protocol is text-only", len(raw))
            return
        try:
            event = parse_server_event(raw)
        except ProtocolError as exc:
            self._mark("server", "malformed", size=len(raw))
            if self.on_malformed == "raise":
                await self._events.put(exc)
            else:
                log.warning("skipped a malformed realtime frame (%d chars)", len(raw))
            return
        if isinstance(event, ErrorEvent) and event.error.get("event_id") in self._cancel_ids:
            # Our cancel crossed the server's own (barge-in) cancellation: nothing was wrong.
            self._cancel_ids.discard(event.error["event_id"])
            self._mark("server", "error.ignored", code=event.code)
            return
        self._on_server_event(event)
        if isinstance(event, SpeechStarted) and self._response_id is not None:
            await self._barge_in()
        await self._events.put(event)

    def _on_server_event(self, event: RealtimeEvent) -> None:
        """Bookkeeping for every server event: session, active response, ledger, timeline."""
        if isinstance(event, (SpeechStarted, SpeechStopped)):
            self._mark("vad", event.type.rsplit(".", 1)[-1], item_id=event.item_id)
        elif isinstance(event, (AudioDelta, AudioTranscriptDelta, TextDelta)):
            key = (event.response_id, event.type)
            if key not in self._marked:  # one mark per response, not one per chunk
                self._marked.add(key)
                self._mark("server", event.type, response_id=event.response_id)
        else:
            self._mark("server", event.type)
        if isinstance(event, (SessionCreated, SessionUpdated)):
            self.session = event.session
        elif isinstance(event, InputAudioCommitted):
            self._unanswered_ms += self._uncommitted_ms
            self._uncommitted_ms = 0.0
        elif isinstance(event, ResponseCreated):
            self._response_id = str(event.response.get("id") or "")
            self._response_t0 = time.monotonic()
        elif isinstance(event, ResponseDone) and event.response_id == self._response_id:
            self._response_id = None
            if event.status == "completed":
                self._unanswered_ms = 0.0
            self.ledger.record(
                self._usage(event.response.get("usage")),
                backend="omni",
                kind="turn",
                request_id=event.response_id,
                latency=time.monotonic() - self._response_t0,
            )

    async def _barge_in(self) -> None:
        """The user spoke over the answer: stop it and let the player drop what it queued."""
        self._mark("state", "barge_in", response_id=self._response_id)
        await self.cancel()
        if self.on_flush is not None:
            try:
                result = self.on_flush()
                if inspect.isawaitable(result):
                    await result
            except Exception:  # a player's bug must not end the conversation
                log.exception("on_flush failed")

    async def _reconnect(self, code: int, policy: ReconnectPolicy) -> None:
        self._ready.clear()
        lost_ms = self._uncommitted_ms + self._unanswered_ms
        lost_response = self._response_id
        self._response_id = None
        self._uncommitted_ms = self._unanswered_ms = 0.0
        attempts = 0

        async def attempt() -> ClientConnection:
            nonlocal attempts
            attempts += 1
            return await self._open()

        try:
            self._ws = await retrying_async(attempt, policy.retry)
        except AuthError:
            raise
        except BackendError as exc:
            raise ConnectionLost(
                f"The realtime connection closed ({code}) and {attempts} reconnect attempt(s) "
                f"failed: {exc}",
                "check the network and open a new OmniRealtime",
            ) from None
        event = Reconnected(code, attempts, lost_ms, lost_response, self.session_id or "")
        self.reconnects.append(event)
        self._mark("state", "reconnected", **{"close_code": code, "lost_audio_ms": lost_ms})
        self._ready.set()
        await self._events.put(event)

    async def _next(self) -> Event:
        item = await self._events.get()
        if item is _END:
            self._events.put_nowait(_END)  # every later read ends too
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        event: Event = item
        return event

    def __aiter__(self) -> OmniRealtime:
        return self

    async def __anext__(self) -> Event:
        """The next server event (typed), or :class:`Reconnected`. ``error`` events are yielded
        as :class:`~nbtoolkit.protocols.realtime.ErrorEvent`; a lost connection raises."""
        return await self._next()

    # ------------------------------------------------------------------ sending
    def _mark(self, lane: str, name: str, **detail: Any) -> None:
        self.timeline.mark(lane, name, **detail)
        if self._turn_tl is not None:
            self._turn_tl.mark(lane, name, **detail)

    async def _send_on(self, ws: ClientConnection, event: RealtimeEvent) -> None:
        await ws.send(event.to_json())
        if isinstance(event, InputAudioAppend):
            self._mark("audio-in", event.type, bytes=len(event.audio) * 3 // 4)
        else:
            self._mark("client", event.type)

    async def _send(self, event: RealtimeEvent) -> None:
        if not self._ready.is_set():  # reconnecting: wait for the new session, boundedly
            budget = self.open_timeout * 2 + (self.reconnect.retry.maximum if self.reconnect else 0)
            try:
                await asyncio.wait_for(self._ready.wait(), budget)
            except (TimeoutError, asyncio.TimeoutError):
                raise ConnectionLost(
                    "The realtime connection is being re-opened and is not back yet",
                    "try again in a moment",
                ) from None
        if self._failed is not None:
            raise self._failed
        if self._ws is None:
            raise ConfigError("The session is not connected", "use `async with OmniRealtime(...)`")
        try:
            await self._send_on(self._ws, event)
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else 1006
            raise self._closed_error(code, None) from None

    async def send_audio(self, audio: Clip | bytes | bytearray | memoryview) -> None:
        """Append speech: PCM16 mono 16 kHz bytes, or a Clip (resampled to 16 kHz)."""
        pcm = _as_pcm16k(audio)
        step = INPUT_RATE * 2 * CHUNK_MS // 1000
        for i in range(0, len(pcm), step):
            piece = pcm[i : i + step]
            await self._send(InputAudioAppend.of(piece))
            self._audio_sent = True
            self._uncommitted_ms += len(piece) / 2 / INPUT_RATE * 1000

    async def send_image(self, jpeg: bytes | str | Path) -> None:
        """Append one JPEG (≤ 500 KB) to go with the audio; waits to keep ≤ 2 images per second."""
        data = Path(jpeg).read_bytes() if isinstance(jpeg, (str, Path)) else bytes(jpeg)
        if not data.startswith(b"\xff\xd8\xff"):
            raise ImageError(
                "The image is not a JPEG", "encode it as JPEG (e.g. PIL: img.save(buf, 'JPEG'))"
            )
        if len(data) > MAX_IMAGE_BYTES:
            raise ImageError(
                f"The image is {len(data) // 1024} KB; the realtime limit is "
                f"{MAX_IMAGE_BYTES // 1024} KB",
                "lower the resolution (480p/720p) or the JPEG quality",
            )
        if not self._audio_sent:
            raise ImageError(
                "Images can only follow audio in a realtime session",
                "call send_audio() first (converse() does this for you)",
            )
        wait = MIN_IMAGE_INTERVAL - (time.monotonic() - self._last_image)
        if wait > 0:
            await asyncio.sleep(wait)  # rate limit: at most 2 images per second
        self._last_image = time.monotonic()
        await self._send(InputImageAppend.of(data))

    async def commit(self) -> None:
        """Close the user's turn (manual mode): the server commits the audio and images."""
        await self._send(InputAudioCommit())

    async def clear(self) -> None:
        """Drop the audio appended since the last commit."""
        await self._send(InputAudioClear())
        self._uncommitted_ms = 0.0

    async def create_response(
        self, instructions: str | None = None, modalities: Iterable[str] | None = None
    ) -> None:
        """Ask for an answer to what was committed (manual mode)."""
        self.ledger.check(local=self.endpoints.local)
        response: dict[str, Any] = {"instructions": instructions}
        if modalities is not None:
            response["modalities"] = list(modalities)
        await self._send(ResponseCreate(response=response))

    async def cancel(self) -> bool:
        """Stop the active response; False when none is active.

        The cancel names that response: if the server has finished it meanwhile (its
        ``response.done`` is on the way), the server refuses the cancel instead of stopping the
        next response, and the refusal is ignored here."""
        if self._response_id is None:
            return False
        event = ResponseCancel(response_id=self._response_id)
        self._cancel_ids.add(event.event_id)
        await self._send(event)
        return True

    async def update_session(self, **changes: Any) -> None:
        """Change session settings (voice, modalities, turn_detection, instructions, …); a value
        out of its documented range is a ConfigError and nothing is sent."""
        problem = realtime_session_problem(changes)
        if problem is not None:
            raise problem.error(problem.param.removeprefix("session.") + "=")
        self.config.update(changes)
        await self._send(SessionUpdate(session=changes))

    # ------------------------------------------------------------------ one exchange
    async def _answer_async(
        self, question: Question, options: Mapping[str, Any], emit: Emit | None
    ) -> Reply:
        """Say the question (with its JPEG images) and collect the whole answer.

        In server-VAD mode the clip is followed by silence so the server hears the end of speech;
        in manual mode it is committed and a response requested. Raises AudioError at once for a
        silent clip (or one the server's VAD heard no speech in), ConnectionLost (with the reply
        so far in ``partial``) if the connection drops or the answer is not complete within
        ``timeout`` seconds of the call, and ProtocolError if the server refuses something.
        """
        if question.audio is None:
            raise ConfigError(
                "OmniRealtime answers speech: ask() needs audio",
                "pass a spoken question (nbtoolkit.spoken(text) makes one), "
                "or ask in text with QwenAudio or Dialog",
            )
        if question.text:
            raise ConfigError(
                "OmniRealtime takes the question as speech only (text= is not sent)",
                "leave text= out, or set the session's instructions=… for standing guidance",
            )
        self.ledger.check(local=self.endpoints.local)
        audio = question.audio
        speech = (
            Clip.from_pcm(audio, INPUT_RATE)
            if isinstance(audio, (bytes, bytearray))
            else Clip.load(audio, INPUT_RATE)
        ).resample(INPUT_RATE)
        if speech.duration > MAX_UTTERANCE_SECONDS:
            raise AudioError(
                f"The question is {speech.duration:.0f} s long; ask() sends at most "
                f"{MAX_UTTERANCE_SECONDS:.0f} s",
                "cut it (clip[:30]) or stream a long recording in a live session "
                "(rt.send_audio as it comes)",
            )
        if is_silent(speech):
            raise AudioError(
                f"No speech was heard in the {speech.duration:.1f} s sent: the clip is silent",
                "check the microphone (or the file) and record the question again",
            )
        timeline = Timeline()
        collector = RealtimeTurnCollector()
        try:
            await asyncio.wait_for(
                self._connect_and_exchange(speech, question.images, collector, timeline, emit),
                self.timeout,
            )
        except (TimeoutError, asyncio.TimeoutError):
            raise ConnectionLost(
                f"No complete answer within {self.timeout:.0f} s of asking",
                "what arrived is in .partial; raise OmniRealtime(timeout=…) for long answers",
                partial=self.make_reply(collector, timeline, "failed"),
            ) from None
        except BackendError as exc:
            if exc.partial is None:
                exc.partial = self.make_reply(collector, timeline, "failed")
            raise
        finally:
            self._turn_tl = None
        return self.make_reply(collector, timeline, None)

    async def _connect_and_exchange(
        self,
        speech: Clip,
        images: tuple[Any, ...],
        collector: RealtimeTurnCollector,
        timeline: Timeline,
        emit: Emit | None,
    ) -> None:
        await self.connect()
        self._drain()
        self._turn_tl = timeline
        await self._exchange(speech, images, collector, emit)

    def _drain(self) -> None:
        """Forget events left from before this exchange (they are on the session timeline)."""
        while not self._events.empty():
            item = self._events.get_nowait()
            if item is _END or isinstance(item, ConnectionLost):
                self._events.put_nowait(item)  # a closed session stays closed
                break

    async def _exchange(
        self,
        speech: Clip,
        images: tuple[Any, ...],
        collector: RealtimeTurnCollector,
        emit: Emit | None,
    ) -> None:
        first, rest = speech[: CHUNK_MS / 1000], None
        if speech.duration > CHUNK_MS / 1000:
            rest = speech[CHUNK_MS / 1000 :]
        await self.send_audio(first)  # images must follow some audio
        for image in images:
            await self.send_image(_jpeg(image))
        if rest is not None:
            await self.send_audio(rest)
        td = self.config.get("turn_detection")
        heard_by: float | None = None
        if td:
            silence_ms = float(td.get("silence_duration_ms", 800))
            await self.send_audio(Clip.silence((silence_ms + 400) / 1000, INPUT_RATE))
            # the server's VAD has all the audio now; if it heard no speech start in it, it never
            # will: give it the time its own silence window takes, then say so
            heard_by = time.monotonic() + silence_ms / 1000 + 2.0
        else:
            self._mark("client", "speech_stopped", by="commit")
            await self.commit()
            await self.create_response()
        heard = False
        while not collector.done:
            try:
                if heard_by is not None and not heard:
                    event = await asyncio.wait_for(
                        self._next(), max(0.0, heard_by - time.monotonic())
                    )
                else:
                    event = await self._next()
            except (TimeoutError, asyncio.TimeoutError):
                raise AudioError(
                    f"No speech was heard in the {speech.duration:.1f} s sent "
                    "(the server's voice detector found none)",
                    "speak louder or closer, lower vad threshold, or use turn_detection=None",
                ) from None
            except StopAsyncIteration:
                raise self._failed or ConnectionLost("The session closed", None) from None
            if isinstance(event, Reconnected):
                raise ConnectionLost(
                    f"The connection dropped mid-turn (close {event.close_code}) and was re-opened; "
                    "this turn's answer is lost",
                    "what arrived is in .partial; say it again",
                )
            if isinstance(event, ErrorEvent):
                raise _error_from_event(event, "this turn", local=self.endpoints.local)
            if isinstance(event, SessionFinished):
                raise ConnectionLost("The server finished the session mid-turn", None)
            heard = heard or isinstance(event, SpeechStarted)
            collector.feed(event)
            if emit is not None:
                emit(_stream_event(event))

    def _usage(self, usage: dict[str, Any] | None) -> Usage:
        return Usage.from_dashscope(usage, model=self.model, local=self.endpoints.local)

    def make_reply(
        self, c: RealtimeTurnCollector, timeline: Timeline | None = None, status: str | None = None
    ) -> Reply:
        """The :class:`~nbtoolkit.results.Reply` of what ``c`` collected (for clients that fold
        the events themselves, e.g. ``async for event in rt``); ``status`` overrides the
        collector's ("failed" if the response never finished)."""
        audio = Clip.from_pcm(bytes(c.audio), OUTPUT_RATE) if len(c.audio) >= 2 else None
        tl = timeline if timeline is not None else Timeline()
        return Reply(
            heard=c.heard,
            text=c.text,
            audio=audio,
            usage=self._usage(c.usage),
            timeline=tl,
            status=status or c.status or "failed",
            request_id=c.response_id,
            model=self.model,
            local=self.endpoints.local,
            latency=tl.between("speech_stopped", "response.done"),
            first_token_latency=tl.between("speech_stopped", "response.audio.delta"),
        )

    def __repr__(self) -> str:
        where = "local" if self.endpoints.local else self.endpoints.region
        return f"OmniRealtime({self.model!r}, {where}, session={self.session_id!r})"


def _jpeg(image: Any) -> bytes | str | Path:
    """An image as :meth:`OmniRealtime.send_image` takes it: JPEG bytes or a path as given; a PIL
    image is encoded."""
    if hasattr(image, "save") and not isinstance(image, (str, Path)):
        buf = io.BytesIO()
        image.convert("RGB").save(buf, "JPEG", quality=85)
        return buf.getvalue()
    return bytes(image) if isinstance(image, (bytearray, memoryview)) else image


def _stream_event(event: Event) -> ev.StreamEvent:
    """The :mod:`nbtoolkit.events` event for a realtime server event (unknown ones kept raw)."""
    if isinstance(event, TextDelta | AudioTranscriptDelta):
        return ev.TextDelta(event.delta)
    if isinstance(event, AudioDelta):
        return ev.AudioDelta(Clip.from_pcm(event.pcm, OUTPUT_RATE))
    if isinstance(event, SpeechStarted):
        return ev.SpeechStarted()
    if isinstance(event, SpeechStopped):
        return ev.SpeechStopped()
    if isinstance(event, InputTranscriptionCompleted):
        return ev.Heard(event.transcript, final=True)
    return ev.RawEvent(event.type, event)


def _option_name(param: str) -> str:
    """The constructor option a session parameter comes from (``vad={'threshold': …}`` for
    ``session.turn_detection.threshold``)."""
    name = param.removeprefix("session.")
    if name.startswith("turn_detection."):
        return f"vad={{'{name.removeprefix('turn_detection.')}': …}}"
    return f"{name}="
