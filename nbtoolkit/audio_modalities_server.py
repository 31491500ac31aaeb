"""Serve any nbtoolkit backend in the audio-modalities format (Agora's custom-LLM format), so
Agora's conversational engine can use it as a custom LLM (``llm.vendor = "custom"``,
``llm.url = server.url``, ``llm.api_key = server.token.reveal()``, ``output_modalities =
["text", "audio"]``). Agora's cloud must reach the URL: put a TLS tunnel in front of the port.

Every backend answers through the one call shape, ``backend.ask(audio, text=…)``; the format's
protocol logic is in :mod:`nbtoolkit.protocols.audio_modalities` and its route in
:mod:`nbtoolkit.local.routes.audio_modalities`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import threading
from collections.abc import Callable, Sequence

from fastapi import FastAPI, Request

from nbtoolkit.audio.clip import Clip
from nbtoolkit.backends._base import Client
from nbtoolkit.backends.omni import OmniRealtime
from nbtoolkit.config import LOOPBACK_HOSTS, Secret
from nbtoolkit.errors import ConfigError, ProtocolError
from nbtoolkit.local.engine import Engine
from nbtoolkit.local.engine.tts import ESPEAK_RATE
from nbtoolkit.local.faults import Faults
from nbtoolkit.local.routes.audio_modalities import build_router
from nbtoolkit.local.server import LocalServer
from nbtoolkit.protocols.audio_modalities import (
    DEFAULT_CHUNK_MS,
    DEFAULT_RATE,
    PATH,
    AudioParams,
)

__all__ = ["AnswerFn", "AudioModalitiesServer", "serve_audio_modalities"]

log = logging.getLogger("nbtoolkit.audio_modalities_server")

#: ``(text, audio) -> (reply text, reply audio)``: the simplest backend ``serve_audio_modalities`` takes.
AnswerFn = Callable[[str, Clip | None], tuple[str, Clip | None]]


class _Adapter:
    """Turns a backend into ``(text, audio) -> (text, audio)``, one request at a time (Dialog and
    realtime sessions hold one conversation)."""

    def __init__(self, backend: Client | AnswerFn, engine: Engine | None = None) -> None:
        if not isinstance(backend, Client) and not callable(backend):
            raise ConfigError(
                f"Cannot serve a {type(backend).__name__}",
                "pass a QwenAudio, Dialog, OmniRealtime or a function (text, clip) -> (text, clip)",
            )
        self.backend = backend
        self.kind = type(backend).__name__ if isinstance(backend, Client) else "function"
        self._engine = engine
        self._lock = threading.Lock()

    def _tts(self, text: str) -> Clip | None:
        if not text:
            return None
        if self._engine is None:
            self._engine = Engine()
        # eSpeak's own rate: the route resamples once, to the served rate
        pcm = self._engine.synthesize(text, rate=ESPEAK_RATE)
        return Clip.from_array(pcm, ESPEAK_RATE) if len(pcm) else None

    def answer(self, text: str, audio: Clip | None) -> tuple[str, Clip | None]:
        with self._lock:
            backend = self.backend
            if not isinstance(backend, Client):
                return backend(text, audio)
            if audio is None and isinstance(backend, OmniRealtime):
                # Omni hears speech only: a text request (Agora's engine sends text) is spoken first
                audio = self._tts(text)
                if audio is None:
                    raise ProtocolError(
                        "Nothing to say to OmniRealtime", "send text or input_audio"
                    )
                text = ""
            reply = backend.ask(audio, text=text or None)
            return reply.text, reply.audio or self._tts(reply.text)

    def close(self) -> None:
        if isinstance(self.backend, OmniRealtime):  # the server connected it, so it closes it
            self.backend.close()


class AudioModalitiesServer:
    """A running :func:`serve_audio_modalities` server. Stop it with :meth:`stop` or ``with``."""

    def __init__(self, local: LocalServer, adapter: _Adapter) -> None:
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
    backend: Client | AnswerFn,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    engine: Engine | None = None,
    sample_rate: int = DEFAULT_RATE,
    chunk_ms: int = DEFAULT_CHUNK_MS,
) -> AudioModalitiesServer:
    """Serve ``backend`` as ``POST /audio/chat/completions`` (the Agora sample's frames) in a
    background thread.

    ``backend`` is any client (``QwenAudio``, ``Dialog``, ``OmniRealtime``, even an
    ``AudioModalitiesClient``), asked with ``backend.ask(audio, text=…)``, or a function
    ``(text, clip_or_None) -> (reply_text, Clip_or_None)``. An answer without audio (Qwen-Audio
    answers in text) is spoken by the offline engine's eSpeak TTS (``engine``, default a new
    :class:`~nbtoolkit.local.engine.Engine`) — robotic, and not the cloud's voice. OmniRealtime
    hears speech only, so a text-only request is spoken to it by that TTS first; the server closes
    an OmniRealtime on :meth:`~AudioModalitiesServer.stop`.

    Requests are answered one at a time. Reply audio is streamed as PCM16 mono at ``sample_rate``
    Hz in chunks of ``chunk_ms`` (the Agora sample's parameters, default 16000 Hz and 40 ms: 1280
    bytes; configure Agora's side, or an ``AudioModalitiesClient``, with the same values); they
    are checked at once (:class:`ConfigError`). Callers must send
    ``Authorization: Bearer <token>`` (``token`` or a random one, see ``.token``). The default host is
    loopback; another host serves plain HTTP to the network, so prefer a TLS tunnel to 127.0.0.1.
    """
    params = AudioParams(sample_rate, chunk_ms)  # before anything connects: may raise
    adapter = _Adapter(backend, engine)

    async def answer(
        request: Request, text: str, audio: Clip | None, images: Sequence[bytes]
    ) -> tuple[str, Clip | None]:
        return await asyncio.to_thread(adapter.answer, text, audio)

    app = FastAPI(title="nbtoolkit audio-modalities", docs_url=None, redoc_url=None)
    app.state.token = token or secrets.token_urlsafe(24)
    app.state.faults = Faults()
    app.state.engine = engine
    app.include_router(build_router(answer, params))
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
