"""The audio-modalities chat format (sans-I/O): requests, answer frames, and a chunk accumulator.

Agora's conversational engine can call a custom LLM at ``POST /audio/chat/completions`` that answers
in data-only SSE. Agora's sample server (``server-audio-modalities`` in Agora's AI recipes,
https://github.com/alienzh/Agora-AI-Recipes-Starter/tree/main/server-audio-modalities) sends:

1. one transcript frame ``{"id", "choices": [{"index": 0, "delta": {"audio": {"id", "transcript"}},
   "finish_reason": null}]}``,
2. audio frames with the same ids whose ``delta.audio.data`` is base64 PCM16 mono,
3. ``data: [DONE]``.

A failure after the stream has begun is one frame ``{"error": {"message", "type": "server_error"}}``.

**Audio parameters** (:class:`AudioParams`). The sample documents two: the sample rate (default
16 kHz) and the chunk duration (default 40 ms); a chunk is ``sample_rate × 2 × duration`` bytes
(1280 by default, the last one may be shorter). They are *server configuration* in the sample
(set in its ``audio_modalities.py``), not request fields: the request carries no rate, and the
stream never announces one. So a server chooses them when it starts, and a client must be told the
same values (Agora's engine is configured with them the same way). Rates from 8 to 48 kHz and chunks
of 10 ms to 1 s are accepted, when a chunk holds a whole number of samples.

OpenAI's chat-completions audio output uses the same ``delta.audio`` object, but streams the
transcript in pieces, the audio at 24 kHz, an ``expires_at`` on the last audio update, a final
``finish_reason: "stop"`` chunk and an optional usage chunk. :class:`StreamAccumulator` reads both.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nbtoolkit.audio.clip import Clip
from nbtoolkit.errors import ConfigError, ProtocolError, ServerError
from nbtoolkit.protocols.sse import encode
from nbtoolkit.results import Usage

__all__ = [
    "DEFAULT_CHUNK_MS",
    "DEFAULT_RATE",
    "DONE",
    "OPENAI_RATE",
    "PATH",
    "AudioParams",
    "ChatRequest",
    "InputAudio",
    "Message",
    "StreamAccumulator",
    "audio_frames",
    "build_request",
    "done_frame",
    "error_frame",
    "new_ids",
    "parse_request",
    "response_frames",
    "transcript_frame",
    "user_message",
]

PATH = "/audio/chat/completions"
#: Agora's sample: PCM16 mono at 16 kHz in 40 ms chunks (1280 bytes).
DEFAULT_RATE = 16000
DEFAULT_CHUNK_MS = 40
#: OpenAI's streamed ``pcm16`` output rate.
OPENAI_RATE = 24000
DONE = "[DONE]"

#: The accepted ranges of the audio parameters (telephone to studio rates; 10 ms to 1 s chunks).
RATE_RANGE = (8000, 48000)
CHUNK_MS_RANGE = (10, 1000)

#: ``input_audio.format`` values accepted, and how to read them. Raw ``pcm16`` input carries no rate;
#: it is taken at the server's sample rate (a guess: neither Agora's sample nor OpenAI documents raw
#: PCM input).
_AUDIO_FORMATS = ("wav", "mp3", "pcm16", "pcm")


# --------------------------------------------------------------------------- audio parameters
def check_sample_rate(value: object) -> int:
    """``value`` as a sample rate in Hz, or :class:`ConfigError` saying what is wrong with it."""
    lo, hi = RATE_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(
            f"sample_rate={value!r} is not a sample rate the format can carry",
            f"pass a whole number of Hz from {lo} to {hi} (Agora's sample uses {DEFAULT_RATE})",
        )
    return value


def check_chunk_ms(value: object) -> int:
    """``value`` as a chunk duration in ms, or :class:`ConfigError` saying what is wrong with it."""
    lo, hi = CHUNK_MS_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(
            f"chunk_ms={value!r} is not a chunk duration the format can carry",
            f"pass a whole number of milliseconds from {lo} to {hi} (Agora's sample uses "
            f"{DEFAULT_CHUNK_MS})",
        )
    return value


@dataclass(frozen=True)
class AudioParams:
    """The audio a server streams: PCM16 mono at ``sample_rate`` Hz in chunks of ``chunk_ms``.

    Raises :class:`ConfigError` for values out of range, or a chunk that is not a whole number of
    samples (e.g. 11025 Hz in 10 ms chunks: 110.25 samples).
    """

    sample_rate: int = DEFAULT_RATE
    chunk_ms: int = DEFAULT_CHUNK_MS

    def __post_init__(self) -> None:
        check_sample_rate(self.sample_rate)
        check_chunk_ms(self.chunk_ms)
        if self.sample_rate * self.chunk_ms % 1000:
            raise ConfigError(
                f"{self.chunk_ms} ms at {self.sample_rate} Hz is "
                f"{self.sample_rate * self.chunk_ms / 1000:g} samples, not a whole number",
                "choose a chunk duration that holds whole samples (e.g. 20 or 40 ms)",
            )

    @property
    def chunk_bytes(self) -> int:
        """Bytes in one full chunk: ``sample_rate × 2 × chunk_ms / 1000`` (PCM16 mono)."""
        return self.sample_rate * 2 * self.chunk_ms // 1000


# --------------------------------------------------------------------------- requests
@dataclass(frozen=True)
class InputAudio:
    """One ``input_audio`` content part: encoded bytes and their format."""

    data: bytes
    format: str

    def to_clip(self, rate: int = DEFAULT_RATE) -> Clip:
        """Decode to a Clip (raw PCM16 carries no rate: it is taken as mono at ``rate`` Hz)."""
        if self.format in ("pcm16", "pcm"):
            return Clip.from_pcm(self.data, rate)
        return Clip.load(self.data)


@dataclass(frozen=True)
class Message:
    """One chat message, reduced to what an answerer uses: its text, audio and images."""

    role: str
    text: str = ""
    audio: tuple[InputAudio, ...] = ()
    images: tuple[bytes, ...] = ()

    def clip(self, rate: int = DEFAULT_RATE) -> Clip | None:
        """All of the message's audio parts as one Clip (None when it has none); raw PCM16 parts
        are taken at ``rate`` Hz."""
        clips = [part.to_clip(rate) for part in self.audio]
        if not clips:
            return None
        out = clips[0]
        for more in clips[1:]:
            out = out + more
        return out


@dataclass(frozen=True)
class ChatRequest:
    """A parsed ``/audio/chat/completions`` request body."""

    messages: tuple[Message, ...]
    stream: bool = True
    modalities: tuple[str, ...] = ("text", "audio")
    voice: str | None = None
    audio_format: str | None = None
    model: str | None = None

    def last_user(self) -> Message:
        """The last ``user`` message (what to answer)."""
        for message in reversed(self.messages):
            if message.role == "user":
                return message
        raise ProtocolError(
            "The request has no user message", "add {'role': 'user', 'content': ...} to messages"
        )


def _bad(problem: str, fix: str) -> ProtocolError:
    return ProtocolError(problem, fix, status=400, code="InvalidParameter")


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise _bad(f"{what} must be a base64 string", "base64-encode the bytes")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"{what} is not valid base64", "send standard base64 (RFC 4648)") from None


def _image(part: Mapping[str, Any]) -> bytes:
    # OpenAI nests the URL ({"image_url": {"url": ...}}); Agora's sample server has a bare string.
    ref = part.get("image_url")
    url = ref.get("url") if isinstance(ref, Mapping) else ref
    if not isinstance(url, str) or not url.startswith("data:") or "," not in url:
        raise _bad(
            "Only data: URLs are accepted for image_url here",
            "send the image inline as data:image/jpeg;base64,…",
        )
    header, _, payload = url.partition(",")
    if not header.endswith(";base64"):
        raise _bad("image_url data: URLs must be base64", "use data:image/jpeg;base64,…")
    return _b64(payload, "image_url")


def _message(raw: Any) -> Message:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("role"), str):
        raise _bad("Each message must be an object with a role", "e.g. {'role': 'user', …}")
    content = raw.get("content")
    if content is None or isinstance(content, str):
        return Message(raw["role"], content or "")
    if not isinstance(content, list):
        raise _bad("message content must be a string or a list of parts", "see OpenAI's format")
    texts: list[str] = []
    audio: list[InputAudio] = []
    images: list[bytes] = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)  # Agora's sample accepts bare strings in system content
            continue
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text":
            texts.append(str(part.get("text", "")))
        elif kind == "input_audio":
            spec = part.get("input_audio")
            spec = spec if isinstance(spec, Mapping) else {}
            fmt = spec.get("format", "wav")
            if fmt not in _AUDIO_FORMATS:
                raise _bad(
                    f"input_audio format {fmt!r} is not supported",
                    f"use one of {', '.join(_AUDIO_FORMATS)}",
                )
            audio.append(InputAudio(_b64(spec.get("data"), "input_audio.data"), fmt))
        elif kind in ("image_url", "image"):
            images.append(_image(part))
        else:
            raise _bad(
                f"Unknown content part type {kind!r}", "use text, input_audio or image_url parts"
            )
    return Message(raw["role"], " ".join(t for t in texts if t), tuple(audio), tuple(images))


def parse_request(body: bytes | str | Mapping[str, Any]) -> ChatRequest:
    """Parse a request body. Raises :class:`ProtocolError` (status 400) when it is not usable.

    ``stream`` defaults to true, as in Agora's sample server.
    """
    if isinstance(body, (bytes, str)):
        try:
            body = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise _bad("The request body is not JSON", "send application/json") from None
    if not isinstance(body, Mapping):
        raise _bad("The request body must be a JSON object", "send {'messages': [...], …}")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages must be a non-empty list", "send at least one user message")
    stream = body.get("stream", True)
    modalities = body.get("modalities") or ["text", "audio"]
    if not isinstance(modalities, list):
        raise _bad("modalities must be a list", "send e.g. ['text', 'audio']")
    audio = body.get("audio")
    audio = audio if isinstance(audio, Mapping) else {}
    model = body.get("model")
    return ChatRequest(
        messages=tuple(_message(m) for m in messages),
        stream=bool(stream),
        modalities=tuple(str(m) for m in modalities),
        voice=audio.get("voice"),
        audio_format=audio.get("format"),
        model=model if isinstance(model, str) else None,
    )


def user_message(text: str | None = None, audio: Clip | None = None) -> dict[str, Any]:
    """An OpenAI-style user message with optional text and WAV ``input_audio``."""
    if text is None and audio is None:
        raise ProtocolError("Nothing to send", "pass text=… and/or audio=…")
    parts: list[dict[str, Any]] = []
    if audio is not None:
        data = base64.b64encode(audio.to_wav()).decode("ascii")
        parts.append({"type": "input_audio", "input_audio": {"data": data, "format": "wav"}})
    if text is not None:
        parts.append({"type": "text", "text": text})
    if audio is None:
        return {"role": "user", "content": text}
    return {"role": "user", "content": parts}


def build_request(
    messages: Sequence[Mapping[str, Any]],
    *,
    model: str | None = None,
    voice: str | None = None,
) -> dict[str, Any]:
    """A streaming request body asking for text and ``pcm16`` audio."""
    body: dict[str, Any] = {
        "messages": list(messages),
        "stream": True,
        "modalities": ["text", "audio"],
        "audio": {"format": "pcm16", **({"voice": voice} if voice else {})},
    }
    if model:
        body["model"] = model
    return body


# --------------------------------------------------------------------------- frames (server side)
def new_ids() -> tuple[str, str]:
    """A fresh (message id, audio id) pair, as Agora's sample makes them."""
    return uuid.uuid4().hex, uuid.uuid4().hex


def _frame(obj: Mapping[str, Any]) -> bytes:
    return encode(json.dumps(obj, ensure_ascii=False, separators=(",", ":")), space=True)


def _audio_chunk(msg_id: str, audio: Mapping[str, Any]) -> bytes:
    return _frame(
        {
            "id": msg_id,
            "choices": [{"index": 0, "delta": {"audio": dict(audio)}, "finish_reason": None}],
        }
    )


def transcript_frame(msg_id: str, audio_id: str, transcript: str) -> bytes:
    """The first frame: the whole transcript of the answer."""
    return _audio_chunk(msg_id, {"id": audio_id, "transcript": transcript})


def audio_frames(
    msg_id: str, audio_id: str, pcm: bytes, frame_bytes: int = AudioParams().chunk_bytes
) -> Iterator[bytes]:
    """Frames of base64 PCM, ``frame_bytes`` each (the last may be shorter)."""
    for i in range(0, len(pcm), frame_bytes):
        data = base64.b64encode(pcm[i : i + frame_bytes]).decode("ascii")
        yield _audio_chunk(msg_id, {"id": audio_id, "data": data})


def done_frame() -> bytes:
    """The end of the stream."""
    return encode(DONE, space=True)


def error_frame(message: str) -> bytes:
    """A failure after the stream has begun (Agora's sample server sends this shape)."""
    return _frame({"error": {"message": message, "type": "server_error"}})


def response_frames(
    transcript: str,
    clip: Clip | None,
    ids: tuple[str, str] | None = None,
    params: AudioParams = AudioParams(),
) -> Iterator[bytes]:
    """A whole answer: transcript frame, audio frames (``clip`` resampled to ``params.sample_rate``,
    ``params.chunk_bytes`` each), ``[DONE]``."""
    msg_id, audio_id = ids or new_ids()
    yield transcript_frame(msg_id, audio_id, transcript)
    if clip is not None:
        pcm = clip.resample(params.sample_rate).to_pcm()
        yield from audio_frames(msg_id, audio_id, pcm, params.chunk_bytes)
    yield done_frame()


# --------------------------------------------------------------------------- accumulator (client)
@dataclass
class StreamAccumulator:
    """Feed the ``data`` of each SSE event; collect transcript, PCM, rate and usage.

    Reads Agora's sample frames and OpenAI chat-completion audio chunks alike. :meth:`feed` returns
    the new pieces of that event, in order: ``str`` for transcript text, ``bytes`` for PCM16.

    **Sample-rate rule** (the rate is never announced in-band): a stream *looks like OpenAI's* once
    any chunk carries ``object``, ``created`` or ``model``, an ``expires_at``, a non-null
    ``finish_reason`` or ``usage``; its audio is then 24 kHz. Otherwise it is Agora's default
    16 kHz. OpenAI puts ``object``/``created``/``model`` on every chunk, so the rate is settled by
    the first one. ``rate_override`` (a client's ``sample_rate=``) wins over the rule.

    **Chunk check.** With ``chunk_ms`` (a client's ``chunk_ms=``), every audio frame but the last
    must hold exactly ``rate × 2 × chunk_ms / 1000`` bytes, as the server's parameters make them:
    a frame of another size means the server streams another rate or chunk duration than the
    client was told, which would play the audio at the wrong speed, so it is a
    :class:`ProtocolError` that names both. Without ``chunk_ms`` frames may have any size.
    """

    rate_override: int | None = None
    chunk_ms: int | None = None
    transcript_parts: list[str] = field(default_factory=list)
    pcm: bytearray = field(default_factory=bytearray)
    message_id: str | None = None
    audio_id: str | None = None
    model: str | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    openai_like: bool = False
    done: bool = False
    events: int = 0
    #: the size of an audio frame shorter than a chunk: only the last frame may be one
    short_frame: int | None = None

    @property
    def transcript(self) -> str:
        return "".join(self.transcript_parts)

    @property
    def rate(self) -> int:
        """The audio's sample rate by the rule above."""
        if self.rate_override:
            return self.rate_override
        return OPENAI_RATE if self.openai_like else DEFAULT_RATE

    def clip(self) -> Clip | None:
        """The audio so far (None when none arrived)."""
        pcm = bytes(self.pcm[: len(self.pcm) // 2 * 2])
        return Clip.from_pcm(pcm, self.rate) if pcm else None

    def feed(self, data: str) -> list[str | bytes]:
        """One event's ``data``. Raises :class:`ProtocolError` for a frame that is not a chunk and
        :class:`ServerError` for an ``error`` frame; the caller attaches what arrived so far."""
        self.events += 1
        if self.done:
            return []  # nothing after [DONE] belongs to the answer
        if data.strip() == DONE:
            self.done = True
            return []
        try:
            chunk = json.loads(data)
        except (ValueError, RecursionError):
            raise ProtocolError(
                f"Stream frame {self.events} is not JSON: {data[:80]!r}",
                "the server broke the SSE stream; retry, and report it if it repeats",
            ) from None
        if not isinstance(chunk, dict):
            raise ProtocolError(
                f"Stream frame {self.events} is not a JSON object", "check the server's output"
            )
        if "error" in chunk:
            err = (
                chunk["error"] if isinstance(chunk["error"], dict) else {"message": chunk["error"]}
            )
            raise ServerError(
                f"The server failed mid-answer: {err.get('message', 'no message')}",
                "retry the request; what arrived before the error is in .partial",
                code=str(err.get("type") or "server_error"),
            )
        return self._chunk(chunk)

    def _chunk(self, chunk: dict[str, Any]) -> list[str | bytes]:
        if any(key in chunk for key in ("object", "created", "model")):
            self.openai_like = True
        if isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        if isinstance(chunk.get("id"), str):
            self.message_id = self.message_id or chunk["id"]
        if isinstance(chunk.get("usage"), dict):
            self.openai_like = True
            self.usage = _usage(chunk["usage"], self.model or "")
        out: list[str | bytes] = []
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            if choice.get("finish_reason") is not None:
                self.openai_like = True
                self.finish_reason = str(choice["finish_reason"])
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                continue
            if isinstance(delta.get("content"), str) and delta["content"]:
                self.transcript_parts.append(delta["content"])
                out.append(delta["content"])
            audio = delta.get("audio")
            if isinstance(audio, dict):
                out.extend(self._audio(audio))
        return out

    def _audio(self, audio: dict[str, Any]) -> list[str | bytes]:
        out: list[str | bytes] = []
        if isinstance(audio.get("id"), str):
            self.audio_id = self.audio_id or audio["id"]
        if "expires_at" in audio:
            self.openai_like = True
        text = audio.get("transcript")
        if isinstance(text, str) and text:
            self.transcript_parts.append(text)
            out.append(text)
        if audio.get("data"):
            try:
                pcm = base64.b64decode(audio["data"], validate=True)
            except (binascii.Error, ValueError, TypeError):
                raise ProtocolError(
                    f"Stream frame {self.events} has audio data that is not base64",
                    "check the server's output",
                ) from None
            self._check_chunk(len(pcm))
            self.pcm.extend(pcm)
            out.append(pcm)
        return out

    def _check_chunk(self, size: int) -> None:
        if self.chunk_ms is None:
            return
        expected = self.rate * 2 * self.chunk_ms // 1000
        if size > expected or self.short_frame is not None:
            got = self.short_frame if self.short_frame is not None else size
            raise ProtocolError(
                f"Stream frame {self.events}: an audio chunk of {got} bytes where every chunk but "
                f"the last should be {expected} bytes ({self.rate} Hz × 2 bytes × "
                f"{self.chunk_ms} ms): the server streams another sample rate or chunk duration",
                "pass the server's sample_rate= and chunk_ms= (Agora's sample: 16000 and 40)",
            )
        if size < expected:
            self.short_frame = size


def _usage(raw: Mapping[str, Any], model: str) -> Usage:
    """OpenAI's usage object in our terms (modalities from the *_details when present)."""

    def num(obj: Any, key: str) -> int:
        value = obj.get(key) if isinstance(obj, Mapping) else None
        return int(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0

    prompt, completion = num(raw, "prompt_tokens"), num(raw, "completion_tokens")
    pin, pout = raw.get("prompt_tokens_details"), raw.get("completion_tokens_details")
    in_audio, in_image = num(pin, "audio_tokens"), num(pin, "image_tokens")
    out_audio = num(pout, "audio_tokens")
    return Usage(
        model=model,
        input_text=max(0, prompt - in_audio - in_image),
        input_audio=in_audio,
        input_image=in_image,
        output_text=max(0, completion - out_audio),
        output_audio=out_audio,
    )
