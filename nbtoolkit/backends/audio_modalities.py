"""A client of the audio-modalities SSE format (``POST …/audio/chat/completions``, Agora's
custom-LLM format): the offline engine's route, a :func:`~nbtoolkit.serve_audio_modalities` server,
Agora's sample server, or an OpenAI-style audio stream. It answers with a
:class:`~nbtoolkit.results.Reply` holding the transcript and the audio, like every client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import urlparse

import httpx

from nbtoolkit.audio.clip import Clip
from nbtoolkit.backends._base import Client, Emit, Question
from nbtoolkit.config import LOOPBACK_HOSTS, Endpoints, Secret, local_endpoints
from nbtoolkit.connection import connect
from nbtoolkit.errors import (
    BackendError,
    ConfigError,
    ConnectionLost,
    ImageError,
    ProtocolError,
)
from nbtoolkit.events import AudioDelta, TextDelta
from nbtoolkit.ledger import Ledger
from nbtoolkit.protocols.audio_modalities import (
    DEFAULT_CHUNK_MS,
    DEFAULT_RATE,
    AudioParams,
    StreamAccumulator,
    build_request,
    user_message,
)
from nbtoolkit.protocols.errors import error_for, parse_error_body
from nbtoolkit.protocols.sse import SSEDecoder
from nbtoolkit.results import Reply, Usage
from nbtoolkit.retry import RetryPolicy, parse_retry_after, retrying

__all__ = ["AudioModalitiesClient"]

log = logging.getLogger("nbtoolkit.backends.audio_modalities")

#: ``(text, audio) -> (reply text, reply audio)``: the simplest backend ``serve_audio_modalities`` takes.
AnswerFn = Callable[[str, Clip | None], tuple[str, Clip | None]]


# =========================================================================== client
class AudioModalitiesClient(Client):
    """Client for ``/audio/chat/completions`` streams.

    ``url=None`` means the offline engine's route (from :func:`nbtoolkit.connect`, or
    ``endpoints``); otherwise the URL of any server of the format (a
    :func:`serve_audio_modalities` server, Agora's sample, an OpenAI-style audio stream), with
    ``api_key`` sent as ``Authorization: Bearer …``. ``ask`` takes ``messages=[…]``
    (OpenAI-style, sent before the question) as an option.

    **Audio rate.** The format does not say its sample rate. The stream's audio is taken as the
    Agora sample's 16 kHz unless the stream looks like OpenAI's (a chunk with
    ``object``/``created``/``model``, ``expires_at``, a ``finish_reason`` or ``usage``), then
    24 kHz; ``sample_rate=`` overrides both. ``chunk_ms=`` (the server's chunk duration, e.g. the
    sample's 40) makes the client check that every chunk but the last is ``rate × 2 × chunk_ms``
    bytes, so a server streaming another rate is a clear :class:`ProtocolError`, not audio at the
    wrong speed. Both are validated (:class:`ConfigError`). See
    :class:`~nbtoolkit.protocols.audio_modalities.StreamAccumulator`.

    **Retries** (``retry``): connect errors, 408/409/429 and 5xx, before the stream starts only; a
    429 whose Retry-After exceeds ``retry.retry_after_cap`` is raised at once as
    :class:`RateLimited`. Once the answer streams, a failure raises with what arrived in
    ``.partial`` (a Reply): :class:`ConnectionLost` for a drop or timeout,
    :class:`ProtocolError` for a frame that is not a chunk, :class:`ServerError` for an error frame.

    **Usage** is what the stream reports (OpenAI's usage chunk); the Agora sample's streams report
    none, so ``Reply.usage`` is empty. Calls to a loopback URL are recorded as local (free) in the
    ledger: whatever backend answers there records its own usage.
    """

    options = frozenset({"messages"})

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: Secret | str | None = None,
        endpoints: Endpoints | None = None,
        model: str = "",
        voice: str | None = None,
        sample_rate: int | None = None,
        chunk_ms: int | None = None,
        ledger: Ledger | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        # each checked, and as a pair (a chunk must hold whole samples): ConfigError if not
        AudioParams(
            DEFAULT_RATE if sample_rate is None else sample_rate,
            DEFAULT_CHUNK_MS if chunk_ms is None else chunk_ms,
        )
        if url is not None and not (
            isinstance(url, str) and url.startswith(("http://", "https://"))
        ):
            raise ConfigError(f"{url!r} is not an HTTP URL", "pass …/audio/chat/completions")
        if url is None:
            endpoints = endpoints if endpoints is not None else connect(quiet=True)
            if endpoints.audio_modalities_url is None:
                raise ConfigError(
                    "The DashScope cloud does not serve the audio-modalities format",
                    "pass url= of an audio-modalities server (e.g. serve_audio_modalities(...).url)",
                )
            url = endpoints.audio_modalities_url
            api_key = endpoints.api_key if api_key is None else api_key
        if api_key is None:
            raise ConfigError(
                f"No key for {url}",
                "pass api_key= (for a serve_audio_modalities server: its .token)",
            )
        # another server's key is its own business: Agora's sample takes any key ("any-api-key")
        key = api_key if isinstance(api_key, Secret) else Secret(api_key, min_length=1)
        if endpoints is None:
            # a server of the format, not DashScope: endpoints of its own, with its key
            endpoints = local_endpoints(url, key)
        super().__init__(endpoints, model=model, ledger=ledger, retry=retry, timeout=timeout)
        self.url = url
        self._key = key
        self.sample_rate = sample_rate
        self.chunk_ms = chunk_ms
        self.voice = voice
        self._loopback = urlparse(url).hostname in LOOPBACK_HOSTS
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)), transport=transport
        )
        self.last_reply: Reply | None = None

    @property
    def local(self) -> bool:
        """True when the server is on this machine (its answers are free)."""
        return self._loopback

    def _answer(self, question: Question, options: Mapping[str, Any], emit: Emit | None) -> Reply:
        if question.images:
            raise ImageError(
                "The audio-modalities format carries text and audio, not images",
                "ask about images with Dialog (visual Q&A) or OmniRealtime",
            )
        audio = question.audio
        clip = None if audio is None or isinstance(audio, Clip) else Clip.load(audio)
        body = self._body(
            question.text, clip if clip is not None else audio, options.get("messages")
        )
        for piece in self._pieces(body):
            if emit is not None:
                emit(TextDelta(piece) if isinstance(piece, str) else AudioDelta(piece))
        assert self.last_reply is not None  # set once the stream ended with [DONE]
        return self.last_reply

    def _pieces(self, body: dict[str, Any]) -> Iterator[str | Clip]:
        """The answer's transcript and audio pieces as they arrive; then :attr:`last_reply`."""
        ledger = self.ledger
        ledger.check(local=self.local)
        self.last_reply = None
        t0 = time.monotonic()
        acc = StreamAccumulator(rate_override=self.sample_rate, chunk_ms=self.chunk_ms)
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

    def __repr__(self) -> str:
        return f"AudioModalitiesClient({self.url!r}, api_key={self._key!r})"

    # ------------------------------------------------------------------ internals
    def _body(
        self,
        text: str | None,
        audio: Any,
        messages: Sequence[Mapping[str, Any]] | None,
    ) -> dict[str, Any]:
        if messages is not None and (
            isinstance(messages, (str, bytes, Mapping))
            or not all(isinstance(m, Mapping) for m in messages)
        ):
            raise ConfigError(
                f"messages= must be a list of message dicts, not {type(messages).__name__}",
                'pass e.g. messages=[{"role": "system", "content": "…"}]',
            )
        msgs = list(messages or ())
        if text is not None or audio is not None:
            clip = audio if audio is None or isinstance(audio, Clip) else Clip.load(audio)
            msgs.append(user_message(text, clip))
        return build_request(msgs, model=self.model or None, voice=self.voice)

    def _open(self, body: dict[str, Any]) -> httpx.Response:
        """POST until the stream starts (200), retrying what ``self.retry`` allows."""
        headers = {"Authorization": f"Bearer {self._key.reveal()}", "Accept": "text/event-stream"}
        return retrying(lambda: self._post(body, headers), self.retry)

    def _post(self, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
        """One POST: the streaming response, or the error the table maps its status to."""
        try:
            request = self._http.build_request("POST", self.url, json=body, headers=headers)
            response = self._http.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ConnectionLost(
                f"Could not connect to {self.url} ({type(exc).__name__})",
                "check that the server is running (e.g. `nbtoolkit serve`) and the URL",
            ) from None
        if response.is_success:
            return self._check_stream(response)
        try:
            response.read()
        finally:
            response.close()
        raise _http_error(response, self.url, local=self.local)

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
    message, code = parse_error_body(response.content)
    return message or response.reason_phrase, code


def _http_error(response: httpx.Response, url: str, *, local: bool) -> BackendError:
    message, code = _error_message(response)
    return error_for(
        response.status_code,
        code,
        message,
        where=url,
        request_id=response.headers.get("x-request-id"),
        retry_after=parse_retry_after(response.headers.get("retry-after")),
        local=local,
    )
