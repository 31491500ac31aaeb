"""The ``MultiModalConversation`` wire format (HTTP + SSE), sans-I/O.

Both halves live here so client and server cannot drift apart:

* server side — :func:`parse_request` turns a generation body into a typed :class:`GenerationRequest`
  (messages, media references, ``result_format``, ``incremental_output``); :func:`response_body`,
  :class:`StreamEncoder` and :func:`error_body` build what the SDK 2.0.2 parser accepts (reference
  §2.6–§2.8, pitfalls §7.5: ``event:error`` with no space, one JSON document per ``data:`` line, never
  a 200 without ``output``, no ``[DONE]``);
* client side — :func:`output_text` and :func:`finish_reason` read what the SDK returns, and
  :func:`~nbtoolkit.protocols.errors.error_for` (the one status/code table, re-exported here) maps
  its ``status_code``/``code``/``message`` onto :mod:`nbtoolkit.errors` (usage is read by
  :meth:`nbtoolkit.results.Usage.from_dashscope`).

Usage shape (docs/protocols.md#conversation-usage), the same reading as ``Usage.from_dashscope``: ``input_tokens`` counts the *text*
input; ``audio_tokens`` (and ``image_tokens`` when images were sent) are reported beside it — the page's
sample has ``input_tokens`` 33 with ``audio_tokens`` 85, so audio cannot be part of the input count.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nbtoolkit.errors import ProtocolError
from nbtoolkit.protocols.errors import code_for_status, error_for, status_for_code
from nbtoolkit.protocols.params import conversation_parameters_problem
from nbtoolkit.protocols.sse import encode

__all__ = [
    "MAX_AUDIO_BYTES",
    "MAX_AUDIO_SECONDS",
    "MEDIA_KINDS",
    "PATH",
    "GenerationRequest",
    "MediaRef",
    "Message",
    "StreamEncoder",
    "code_for_status",
    "decode_data_uri",
    "error_body",
    "error_for",
    "finish_reason",
    "invalid",
    "output_text",
    "parse_request",
    "response_body",
    "split_for_stream",
    "status_for_code",
    "stream_error",
    "usage_dict",
]

#: The endpoint every MultiModalConversation model uses (docs/protocols.md#conversation-endpoint), below the ``/api/v1`` base.
PATH = "/services/aigc/multimodal-generation/generation"
#: Audio files up to 10 MB; only the first 30 s are used (docs/protocols.md#conversation-input-limits).
MAX_AUDIO_BYTES = 10 * 1024 * 1024
MAX_AUDIO_SECONDS = 30.0
MEDIA_KINDS = ("audio", "image", "video")


def invalid(problem: str, fix: str) -> ProtocolError:
    """A request the server refuses (HTTP 400 ``InvalidParameter``)."""
    return ProtocolError(problem, fix, status=400, code="InvalidParameter")


# --------------------------------------------------------------------------- request (server side)
@dataclass(frozen=True)
class MediaRef:
    """One media element of a message: ``kind`` is audio/image/video, ``uri`` as sent."""

    kind: str
    uri: str

    @property
    def scheme(self) -> str:
        """``oss``, ``data``, ``http`` (also https), ``file`` or ``other``."""
        lower = self.uri[:8].lower()
        if lower.startswith("oss://"):
            return "oss"
        if lower.startswith("data:"):
            return "data"
        if lower.startswith(("http://", "https://")):
            return "http"
        if lower.startswith("file://"):
            return "file"
        return "other"


@dataclass(frozen=True)
class Message:
    """One chat message: its text items joined by newlines and its media references in order."""

    role: str
    text: str = ""
    media: tuple[MediaRef, ...] = ()

    def refs(self, kind: str) -> list[MediaRef]:
        return [m for m in self.media if m.kind == kind]


@dataclass(frozen=True)
class GenerationRequest:
    """A parsed generation body. ``current`` is the last user message; the rest is history."""

    model: str
    messages: tuple[Message, ...]
    result_format: str = "message"
    incremental_output: bool = False
    parameters: Mapping[str, Any] = field(default_factory=dict)

    @property
    def current(self) -> Message:
        return next(m for m in reversed(self.messages) if m.role == "user")

    @property
    def history(self) -> list[tuple[str, str]]:
        """Earlier user/assistant turns as ``(role, text)``; system prompts are not turns."""
        last = max(i for i, m in enumerate(self.messages) if m.role == "user")
        return [
            (m.role, m.text)
            for m in self.messages[:last]
            if m.role in ("user", "assistant") and m.text
        ]

    @property
    def all_text(self) -> str:
        """Every text item of every message: what the input-token count covers."""
        return "\n".join(m.text for m in self.messages if m.text)


def _parse_message(raw: Any, index: int) -> Message:
    if not isinstance(raw, Mapping):
        raise invalid(
            f"input.messages[{index}] is not an object",
            'send {"role": "user", "content": [{"text": "…"}]}',
        )
    role = raw.get("role")
    if role not in ("system", "user", "assistant"):
        raise invalid(
            f"input.messages[{index}].role is {role!r}",
            'use "system", "user" or "assistant"',
        )
    content = raw.get("content")
    if isinstance(content, str):  # plain-string content is accepted by the service for text
        return Message(role, content)
    if not isinstance(content, list):
        raise invalid(
            f"input.messages[{index}].content is not a list",
            'send a list of one-key objects such as {"text": "…"} or {"audio": "oss://…"}',
        )
    texts: list[str] = []
    media: list[MediaRef] = []
    for item in content:
        if not isinstance(item, Mapping):
            raise invalid(
                f"input.messages[{index}].content holds a {type(item).__name__}",
                'each element must be an object such as {"text": "…"}',
            )
        for key, value in item.items():
            if key == "text" and isinstance(value, str):
                texts.append(value)
            elif key in MEDIA_KINDS:
                # a video may be a list of frame URIs (docs/protocols.md#conversation-endpoint)
                values = value if isinstance(value, list) else [value]
                for v in values:
                    if not isinstance(v, str) or not v:
                        raise invalid(
                            f"input.messages[{index}] has a {key} that is not a URI string",
                            "send an oss://, data: or http(s):// reference (the SDK uploads "
                            "file:// paths for you)",
                        )
                    media.append(MediaRef(key, v))
    return Message(role, "\n".join(texts), tuple(media))


def parse_request(body: Any) -> GenerationRequest:
    """Parse a generation body ``{model, input: {messages}, parameters}``; unknown parameters are kept
    in ``parameters`` and otherwise ignored. Raises :class:`ProtocolError` (status 400)."""
    if not isinstance(body, Mapping):
        raise invalid("The request body is not a JSON object", "send {model, input, parameters}")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("The request names no model", 'add "model": "qwen-audio-turbo-latest"')
    inp = body.get("input")
    raw_messages = inp.get("messages") if isinstance(inp, Mapping) else None
    if not isinstance(raw_messages, list) or not raw_messages:
        raise invalid(
            "input.messages is missing or empty",
            "send at least one user message with audio and/or text",
        )
    messages = tuple(_parse_message(m, i) for i, m in enumerate(raw_messages))
    if not any(m.role == "user" for m in messages):
        raise invalid("input.messages has no user message", 'add {"role": "user", ...}')
    params = body.get("parameters")
    params = {} if params is None else params
    problem = conversation_parameters_problem(params)
    if problem is not None:
        raise invalid(problem.problem, problem.fix)
    return GenerationRequest(
        model=model,
        messages=messages,
        result_format=params.get("result_format") or "message",
        incremental_output=params.get("incremental_output") is True,
        parameters=dict(params),
    )


_DATA_URI = re.compile(r"^data:([^;,]*)((?:;[^;,]*)*),(.*)$", re.DOTALL)


def decode_data_uri(uri: str) -> tuple[str, bytes]:
    """``(mime type, bytes)`` of a ``data:`` URI (base64 or percent-encoded)."""
    match = _DATA_URI.match(uri)
    if match is None:
        raise invalid(
            "A data: URI is malformed", "use data:audio/wav;base64,<base64 of the file bytes>"
        )
    mime, params, payload = match.groups()
    if ";base64" in params.lower():
        try:
            return mime, base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise invalid(
                "The base64 payload of a data: URI does not decode",
                "encode the whole file with base64.b64encode and do not wrap lines",
            ) from None
    from urllib.parse import unquote_to_bytes

    return mime, unquote_to_bytes(payload)


# --------------------------------------------------------------------------- responses (server side)
def usage_dict(
    *, input_text: int, output_text: int, input_audio: int = 0, input_image: int = 0
) -> dict[str, int]:
    """The ``usage`` object of the Qwen-Audio page: ``audio_tokens`` always, ``image_tokens`` if used."""
    usage = {"input_tokens": input_text, "output_tokens": output_text, "audio_tokens": input_audio}
    if input_image:
        usage["image_tokens"] = input_image
    return usage


def _output(text: str, reason: str, result_format: str) -> dict[str, Any]:
    if result_format == "text":
        return {"text": text, "finish_reason": reason}
    content = [{"text": text}] if text else []
    return {
        "choices": [{"finish_reason": reason, "message": {"role": "assistant", "content": content}}]
    }


def response_body(
    text: str, usage: Mapping[str, int], request_id: str, result_format: str = "message"
) -> dict[str, Any]:
    """A complete non-streaming answer (``200 application/json``)."""
    return {
        "request_id": request_id,
        "output": _output(text, "stop", result_format),
        "usage": dict(usage),
    }


def error_body(code: str, message: str, request_id: str) -> dict[str, str]:
    """The error object the SDK reads, before a stream (JSON) or inside it (``event:error``)."""
    return {"code": code, "message": message, "request_id": request_id}


def _dumps(obj: Any) -> str:
    # compact and on one line: the SDK parses each data: line as one whole JSON document
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


_CJK = "\u3000-\u9fff\uf900-\ufaff\uff00-\uffef"
_PIECE = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+\s*|\s+")


def split_for_stream(text: str) -> list[str]:
    """Pieces to stream: each word with its trailing space; each CJK character on its own."""
    return _PIECE.findall(text)


class StreamEncoder:
    """Frames one streamed answer: ``id:<n>``, ``event:result``, ``:HTTP_STATUS/200``, ``data:{…}``.

    ``usage(text_so_far)`` gives the usage object for each chunk, so every chunk carries usage with a
    growing ``output_tokens``. With ``incremental`` each chunk holds only its piece, otherwise the text
    so far; ``finish_reason`` is the string ``"null"`` until :meth:`finish` sends ``"stop"``.
    """

    def __init__(
        self,
        request_id: str,
        *,
        incremental: bool,
        result_format: str,
        usage: Callable[[str], Mapping[str, int]],
    ) -> None:
        self.request_id = request_id
        self.incremental = incremental
        self.result_format = result_format
        self._usage = usage
        self.text = ""
        self.sent = 0

    def _frame(self, delta: str, reason: str) -> bytes:
        self.text += delta
        body = {
            "output": _output(delta if self.incremental else self.text, reason, self.result_format),
            "usage": dict(self._usage(self.text)),
            "request_id": self.request_id,
        }
        self.sent += 1
        return encode(
            _dumps(body), id=str(self.sent), event="result", comments=("HTTP_STATUS/200",)
        )

    def piece(self, delta: str) -> bytes:
        """A chunk carrying ``delta`` (finish_reason ``"null"``)."""
        return self._frame(delta, "null")

    def finish(self) -> bytes:
        """The last chunk (finish_reason ``"stop"``; empty content when incremental)."""
        return self._frame("", "stop")

    def error(self, status: int, code: str, message: str) -> bytes:
        """An in-stream error after the chunks sent so far."""
        self.sent += 1
        return stream_error(status, code, message, self.request_id, index=self.sent)


def stream_error(status: int, code: str, message: str, request_id: str, *, index: int = 1) -> bytes:
    """An in-stream error frame: ``event:error`` and ``status:<int>``, so the SDK reports ``status``
    (without that line it would say 400)."""
    return encode(
        _dumps(error_body(code, message, request_id)),
        id=str(index),
        event="error",
        fields=(("status", str(status)),),
    )


# --------------------------------------------------------------------------- reading answers (client)
def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, Mapping) else None


def _choices(output: Any) -> list[Any]:
    # a server may send anything here; only a list of choices is read
    choices = _get(output, "choices")
    return choices if isinstance(choices, list) else []


def output_text(output: Any) -> str:
    """The answer text in an ``output`` object of either result format ("" when there is none)."""
    if output is None:
        return ""
    choices = _choices(output)
    if choices:
        content = _get(_get(choices[0], "message"), "content")
        if isinstance(content, str):
            return content
        if isinstance(content, Sequence):
            return "".join(str(_get(c, "text") or "") for c in content)
        return ""
    return str(_get(output, "text") or "")


def finish_reason(output: Any) -> str | None:
    """``"stop"``/``"length"``/… once finished, else None (the wire's string ``"null"`` counts as None)."""
    choices = _choices(output)
    reason = _get(choices[0], "finish_reason") if choices else _get(output, "finish_reason")
    return None if reason in (None, "", "null") else str(reason)
