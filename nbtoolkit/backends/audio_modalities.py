"""The audio-modalities SSE format (Agora's custom-LLM format, seed S002): a client, and a server that
exposes any nbtoolkit backend in that format.

* :class:`AudioModalitiesClient` calls ``POST …/audio/chat/completions`` (the local server's, a
  :func:`serve_audio_modalities` server, S002's sample, or an OpenAI-style audio stream) and returns a
  :class:`~nbtoolkit.results.Reply` with the transcript and the audio.
* :func:`serve_audio_modalities` answers that format from a QwenAudio, Dialog, OmniRealtime or a plain
  function, so Agora's conversational engine can use it as a custom LLM (``llm.vendor = "custom"``,
  ``llm.url = server.url``, ``llm.api_key = server.token.reveal()``, ``output_modalities =
  ["text", "audio"]``). Agora's cloud must reach the URL: put a TLS tunnel in front of the port.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import replace
from typing import Any
from urllib.parse import urlparse

import httpx

from nbtoolkit.audio.clip import Clip
from nbtoolkit.config import LOOPBACK_HOSTS, Secret
from nbtoolkit.errors import (
    AuthError,
    BackendError,
    ConfigError,
    ConnectionLost,
    ProtocolError,
    RateLimited,
    ServerError,
)
from nbtoolkit.ledger import Ledger, session_ledger
from nbtoolkit.protocols.audio_modalities import (
    PATH,
    S002_RATE,
    StreamAccumulator,
    build_request,
    user_message,
)
from nbtoolkit.protocols.sse import SSEDecoder
from nbtoolkit.results import Reply, Usage
from nbtoolkit.retry import RetryPolicy, parse_retry_after

__all__ = ["AudioModalitiesClient", "AudioModalitiesServer", "serve_audio_modalities"]

log = logging.getLogger("nbtoolkit.backends.audio_modalities")

#: ``(text, audio) -> (reply text, reply audio)``: the simplest backend ``serve_audio_modalities`` takes.
AnswerFn = Callable[[str, Clip | None], tuple[str, Clip | None]]


# =========================================================================== client
class AudioModalitiesClient:
    """Client for ``/audio/chat/completions`` streams.

    ``api_key`` is sent as ``Authorization: Bearer …`` (for the local server: its token).

    **Audio rate.** The format does not say its sample rate. The stream's audio is taken as S002's
    16 kHz unless the stream looks like OpenAI's (a chunk with ``object``/``created``/``model``,
    ``expires_at``, a ``finish_reason`` or ``usage``), then 24 kHz; ``rate=`` overrides both. See
    :class:`~nbtoolkit.protocols.audio_modalities.StreamAccumulator`.

    **Retries** (``retry``): connect errors, 408/409/429 and 5xx, before the stream starts only; a
    429 whose Retry-After exceeds ``retry.retry_after_cap`` is raised at once as
    :class:`RateLimited`. Once the answer streams, a failure raises with what arrived in
    ``.partial`` (a Reply): :class:`ConnectionLost` for a drop or timeout,
    :class:`ProtocolError` for a frame that is not a chunk, :class:`ServerError` for an error frame.

    **Usage** is what the stream reports (OpenAI's usage chunk); S002 streams report none, so
    ``Reply.usage`` is empty. Calls to a loopback URL are recorded as local (free) in the ledger:
    whatever backend answers there records its own usage.
    """

    def __init__(
        self,
        url: str,
        api_key: Secret | str,
        *,
        rate: int | None = None,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen dataclass, safe as a default
        timeout: float = 60.0,
        model: str | None = None,
        voice: str | None = None,
        ledger: Ledger | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{url!r} is not an HTTP URL", "pass …/audio/chat/completions")
        self.url = url
        self._key = api_key if isinstance(api_key, Secret) else Secret(api_key)
        self.rate = rate
        self.retry = retry
        self.model = model
        self.voice = voice
        self.local = urlparse(url).hostname in LOOPBACK_HOSTS
        self._ledger = ledger
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)), transport=transport
        )
        self.last_reply: Reply | None = None

    # ------------------------------------------------------------------ public
    def complete(
        self,
        text: str | None = None,
        audio: Clip | None = None,
        messages: Sequence[Mapping[str, Any]] | None = None,
    ) -> Reply:
        """Ask and wait for the whole answer: ``Reply.text`` is the transcript, ``Reply.audio`` the
        speech. ``messages`` (OpenAI-style) come first; ``text``/``audio`` become a user message."""
        for _ in self.stream(text, audio, messages):
            pass
        assert self.last_reply is not None
        return self.last_reply

    def stream(
        self,
        text: str | None = None,
        audio: Clip | None = None,
        messages: Sequence[Mapping[str, Any]] | None = None,
    ) -> Iterator[str | Clip]:
        """Yield the answer as it arrives: ``str`` transcript pieces and ``Clip`` audio pieces. The
        whole :class:`Reply` is then in :attr:`last_reply`."""
        body = self._body(text, audio, messages)
        ledger = self._get_ledger()
        ledger.check(local=self.local)
        self.last_reply = None
        t0 = time.monotonic()
        acc = StreamAccumulator(rate_override=self.rate)
        first: list[float] = []
        response = self._open(body)
        try:
            yield from self._read(response, acc, t0, first)
        except httpx.TransportError as exc:  # read timeout, reset, incomplete chunked body…
            why = "went silent" if isinstance(exc, httpx.TimeoutException) else "broke off"
            raise ConnectionLost(
                f"The audio stream from {self.url} {why} ({type(exc).__name__})",
                "retry; what arrived is in .partial",
                partial=self._reply(acc, response, t0, first),
            ) from None
        except BackendError as exc:
            exc.partial = self._reply(acc, response, t0, first)
            raise
        finally:
            response.close()
        reply = self._reply(acc, response, t0, first)
        if not acc.done:
            raise ConnectionLost(
                f"The audio stream from {self.url} ended without [DONE]",
                "retry; what arrived is in .partial",
                partial=reply,
            )
        self.last_reply = reply
        ledger.record(
            reply.usage,
            backend="audio_modalities",
            kind="call",
            request_id=reply.request_id,
            latency=reply.latency,
        )

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def __enter__(self) -> AudioModalitiesClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AudioModalitiesClient({self.url!r}, api_key={self._key!r})"

    # ------------------------------------------------------------------ internals
    def _get_ledger(self) -> Ledger:
        return self._ledger if self._ledger is not None else session_ledger()

    def _body(
        self,
        text: str | None,
        audio: Clip | None,
        messages: Sequence[Mapping[str, Any]] | None,
    ) -> dict[str, Any]:
        msgs = list(messages or ())
        if text is not None or audio is not None:
            clip = audio if audio is None or isinstance(audio, Clip) else Clip.load(audio)
            msgs.append(user_message(text, clip))
        if not msgs:
            raise ProtocolError("Nothing to ask", "pass text=…, audio=… or messages=[…]")
        return build_request(msgs, model=self.model, voice=self.voice)

    def _open(self, body: dict[str, Any]) -> httpx.Response:
        """POST until the stream starts (200), retrying what ``self.retry`` allows."""
        headers = {"Authorization": f"Bearer {self._key.reveal()}", "Accept": "text/event-stream"}
        attempt = 0
        while True:
            status: int | None = None
            try:
                request = self._http.build_request("POST", self.url, json=body, headers=headers)
                response = self._http.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                error: BackendError = ConnectionLost(
                    f"Could not connect to {self.url} ({type(exc).__name__})",
                    "check that the server is running (e.g. `nbtoolkit serve`) and the URL",
                )
            else:
                if response.is_success:
                    return self._check_stream(response)
                status = response.status_code
                try:
                    response.read()
                finally:
                    response.close()
                error = _http_error(response, self.url)
            retry_after = getattr(error, "retry_after", None)
            give_up = (
                attempt >= self.retry.max_retries
                or not self.retry.retryable(status)
                or (retry_after is not None and retry_after > self.retry.retry_after_cap)
            )
            if give_up:
                raise error
            wait = self.retry.delay(attempt, retry_after)
            log.info("audio-modalities: %s, retry %d in %.1f s", error.problem, attempt + 1, wait)
            time.sleep(wait)
            attempt += 1

    def _check_stream(self, response: httpx.Response) -> httpx.Response:
        kind = response.headers.get("content-type", "")
        if not kind.startswith("text/event-stream"):
            response.close()
            raise ProtocolError(
                f"{self.url} answered {kind or 'no content type'}, not an SSE stream",
                "check the URL ends in /audio/chat/completions and the server streams",
                status=response.status_code,
            )
        return response

    def _read(
        self, response: httpx.Response, acc: StreamAccumulator, t0: float, first: list[float]
    ) -> Iterator[str | Clip]:
        decoder = SSEDecoder()
        odd = b""  # a sample split across two frames waits for its second byte
        for chunk in response.iter_bytes():
            for event in decoder.feed(chunk):
                for piece in acc.feed(event.data):
                    if not first:
                        first.append(time.monotonic() - t0)
                    if isinstance(piece, str):
                        yield piece
                        continue
                    pcm, odd = odd + piece, b""
                    if len(pcm) % 2:
                        pcm, odd = pcm[:-1], pcm[-1:]
                    if pcm:
                        yield Clip.from_pcm(pcm, acc.rate)
                if acc.done:
                    return

    def _reply(
        self, acc: StreamAccumulator, response: httpx.Response, t0: float, first: list[float]
    ) -> Reply:
        model = acc.model or self.model or ""
        return Reply(
            text=acc.transcript,
            usage=replace(acc.usage or Usage(model=model), local=self.local),
            audio=acc.clip(),
            request_id=response.headers.get("x-request-id") or acc.message_id,
            latency=time.monotonic() - t0,
            first_token_latency=first[0] if first else None,
            model=model,
            local=self.local,
            raw={
                "message_id": acc.message_id,
                "audio_id": acc.audio_id,
                "finish_reason": acc.finish_reason,
                "openai_like": acc.openai_like,
                "rate": acc.rate,
                "complete": acc.done,
            },
        )


def _error_message(response: httpx.Response) -> tuple[str, str | None]:
    """(message, code) from a DashScope, OpenAI or FastAPI error body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase, None
    if isinstance(body, dict):
        inner: dict[str, Any] = body
        for key in ("error", "detail"):  # OpenAI nests under "error", FastAPI under "detail"
            if isinstance(body.get(key), dict):
                inner = body[key]
                break
        message = inner.get("message") or body.get("detail") or response.reason_phrase
        code = inner.get("code") or inner.get("type")
        return str(message), str(code) if code else None
    return str(body)[:200], None


def _http_error(response: httpx.Response, url: str) -> BackendError:
    status = response.status_code
    message, code = _error_message(response)
    kw: dict[str, Any] = {
        "status": status,
        "code": code,
        "request_id": response.headers.get("x-request-id"),
    }
    if status in (401, 403):
        return AuthError(
            f"{url} refused the key ({status} {code or ''}): {message}",
            "pass the server's key (for nbtoolkit's servers: the token they print) as api_key",
            **kw,
        )
    if status == 429:
        return RateLimited(
            f"{url} is rate limiting ({message})",
            "wait and retry, or slow down",
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            **kw,
        )
    if status >= 500:
        return ServerError(f"{url} failed ({status}): {message}", "retry later", **kw)
    return ProtocolError(
        f"{url} refused the request ({status}): {message}", "check the request", **kw
    )


# =========================================================================== server
Answerer = Callable[[str, Clip | None], Awaitable[tuple[str, Clip | None]]]


class _Adapter:
    """Turns a backend into an async ``(text, audio) -> (text, audio)``, one request at a time
    (Dialog and realtime sessions hold one conversation)."""

    def __init__(self, backend: Any, engine: Any = None) -> None:
        self.backend = backend
        self._engine = engine
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        if hasattr(backend, "converse"):
            self.kind = "omni"
            self._start_loop()
        elif hasattr(backend, "say") and hasattr(backend, "ask"):
            self.kind = "dialog"
        elif hasattr(backend, "ask"):
            self.kind = "qwen_audio"
        elif callable(backend):
            self.kind = "callable"
        else:
            raise ConfigError(
                f"Cannot serve a {type(backend).__name__}",
                "pass a QwenAudio, Dialog, OmniRealtime or a function (text, clip) -> (text, clip)",
            )

    # -- the private event loop an OmniRealtime lives on
    def _start_loop(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, name="nbtoolkit-audio-modalities-omni", daemon=True
        )
        self._thread.start()
        if hasattr(self.backend, "__aenter__"):
            self._run(self.backend.__aenter__(), timeout=60.0)

    def _run(self, coro: Awaitable[Any], timeout: float | None = None) -> Any:
        assert self._loop is not None
        future: Future[Any] = asyncio.run_coroutine_threadsafe(_as_coro(coro), self._loop)
        return future.result(timeout)

    def close(self) -> None:
        if self._loop is None:
            return
        try:
            if hasattr(self.backend, "__aexit__"):
                self._run(self.backend.__aexit__(None, None, None), timeout=10.0)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(10.0)
            self._loop.close()
            self._loop = None

    # -- answering
    def _tts(self, text: str) -> Clip | None:
        if not text:
            return None
        if self._engine is None:
            from nbtoolkit.local.engine import Engine

            self._engine = Engine()
        pcm = self._engine.synthesize(text, rate=S002_RATE)
        return Clip.from_array(pcm, S002_RATE) if len(pcm) else None

    def _answer_sync(self, text: str, audio: Clip | None) -> tuple[str, Clip | None]:
        with self._lock:
            b = self.backend
            if self.kind == "callable":
                out_text, out_audio = b(text, audio)
                return out_text, out_audio
            if self.kind == "qwen_audio":
                reply = b.ask(audio=audio, text=text or None)
                return reply.text, reply.audio or self._tts(reply.text)
            if self.kind == "dialog":
                turn = b.say(audio) if audio is not None else b.ask(text)
                return turn.text, turn.audio
            # OmniRealtime hears speech only: text-only requests are spoken by the local TTS first.
            clip = audio if audio is not None else self._tts(text)
            if clip is None:
                raise ProtocolError("Nothing to say to OmniRealtime", "send text or input_audio")
            turn = self._run(b.converse(clip))
            return turn.text, turn.audio

    async def __call__(self, text: str, audio: Clip | None) -> tuple[str, Clip | None]:
        return await asyncio.to_thread(self._answer_sync, text, audio)


async def _as_coro(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


class AudioModalitiesServer:
    """A running :func:`serve_audio_modalities` server. Stop it with :meth:`stop` or ``with``."""

    def __init__(self, local: Any, adapter: _Adapter) -> None:
        self._local = local
        self._adapter = adapter

    @property
    def url(self) -> str:
        """The full endpoint URL (``…/audio/chat/completions``)."""
        return f"{self._local.base_url}{PATH}"

    @property
    def token(self) -> Secret:
        """The bearer token callers must send (Agora: the custom LLM's ``api_key``)."""
        token: Secret = self._local.token
        return token

    def stop(self) -> None:
        """Stop serving (and disconnect an OmniRealtime the server connected)."""
        self._local.stop()
        self._adapter.close()

    def __enter__(self) -> AudioModalitiesServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"AudioModalitiesServer({self.url!r}, backend={self._adapter.kind}, token={self.token!r})"


def serve_audio_modalities(
    backend: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    engine: Any = None,
) -> AudioModalitiesServer:
    """Serve ``backend`` as ``POST /audio/chat/completions`` (S002 frames) in a background thread.

    ``backend`` is used by duck typing:

    * **QwenAudio** (``ask(audio=, text=) -> Reply``): it answers in text only, so the reply is
      spoken by the offline engine's eSpeak TTS (``engine``, default a new
      :class:`~nbtoolkit.local.engine.Engine`) — robotic, and not the cloud's voice.
    * **Dialog** (``say(clip)`` / ``ask(text)`` -> Turn with audio): pass it connected (inside
      ``with dialog:``); audio requests go to ``say``, text-only ones to ``ask``.
    * **OmniRealtime** (``async converse(clip) -> Turn``): pass it *unconnected*; the server opens
      it on a private event-loop thread and closes it on :meth:`~AudioModalitiesServer.stop`. Text-only
      requests (Agora's engine sends text) are spoken by the offline TTS first.
    * any function ``(text, clip_or_None) -> (reply_text, Clip_or_None)``.

    Requests are answered one at a time. Reply audio is resampled to 16 kHz. Callers must send
    ``Authorization: Bearer <token>`` (``token`` or a random one, see ``.token``). The default host is
    loopback; another host serves plain HTTP to the network, so prefer a TLS tunnel to 127.0.0.1.
    """
    from fastapi import FastAPI, Request

    from nbtoolkit.local.faults import Faults
    from nbtoolkit.local.routes.audio_modalities import build_router
    from nbtoolkit.local.server import LocalServer

    adapter = _Adapter(backend, engine)

    async def answer(
        request: Request, text: str, audio: Clip | None, images: Sequence[bytes]
    ) -> tuple[str, Clip | None]:
        return await adapter(text, audio)

    app = FastAPI(title="nbtoolkit audio-modalities", docs_url=None, redoc_url=None)
    app.state.token = token or secrets.token_urlsafe(24)
    app.state.faults = Faults()
    app.state.engine = engine
    app.include_router(build_router(answer))
    if host not in LOOPBACK_HOSTS:
        log.warning("serving audio-modalities on %s over plain HTTP; prefer a TLS tunnel", host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        local = LocalServer(app, sock).start()
    except BaseException:
        sock.close()
        adapter.close()
        raise
    return AudioModalitiesServer(local, adapter)
