"""How one message body becomes a cassette *payload* (plain JSON) and back.

A payload is one of ``{"json": value}``, ``{"text": str}``, ``{"bytes": blob}``,
``{"form": [[name, payload | {"file": blob, "filename", "type"}], …]}`` or ``{"sse": [[field, value],
…]}``; ``None`` is an empty body. Long base64 strings inside JSON (realtime audio, ``data:`` URIs,
audio-modalities frames) and binary frames become *blobs*: ``{"$blob": {"sha", "bytes", "wrap",
"rate"?, "seconds"?, "src"?, "at"?}}`` so the audio can be stored compressed and matched by duration and
content hash. Encoding is the same when recording and when a replayed request is compared, so the two
sides are compared as equals.
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "REDACTED",
    "Blob",
    "Sink",
    "Source",
    "WsContext",
    "decode_payload",
    "encode_body",
    "encode_sse_event",
    "encode_ws",
    "redact_fields",
    "redact_headers",
]

REDACTED = "<redacted>"
#: Header names whose values never reach a cassette.
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "cookie", "set-cookie", "x-auth-token"}
)
#: JSON keys and form fields whose values are credentials (upload certificates' signature and key).
SECRET_FIELDS = frozenset(
    {"signature", "ossaccesskeyid", "oss_access_key_id", "security_token", "x-oss-security-token"}
)
#: Shorter base64 strings stay inline: ids and small values are easier to read and diff in place.
MIN_BLOB_CHARS = 256
_DATA_URI = re.compile(r"data:[^,;]+(?:;[^,;]+)*;base64,")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_CONTAINER_MAGIC = (b"RIFF", b"ID3", b"\xff\xfb", b"\xff\xf3", b"OggS", b"fLaC", b"\x1aE\xdf\xa3")

#: PCM16 rates of base64 audio by realtime event type and field (docs/protocols.md#realtime-audio-formats).
REALTIME_PCM = {
    ("input_audio_buffer.append", "audio"): 16000,
    ("response.audio.delta", "delta"): 24000,
}
#: Audio-modalities frames carry ``delta.audio.data`` as 16 kHz PCM16 (docs/protocols.md#audio-modalities).
AUDIO_MODALITIES_RATE = 16000


@dataclass(frozen=True)
class Blob:
    """Bytes lifted out of a message: ``rate`` is set when they are PCM16 mono audio."""

    data: bytes
    wrap: str | None  # None: a binary frame; "b64": base64 text; else the data: URI prefix
    rate: int | None = None
    seconds: float | None = None

    def descriptor(self) -> dict[str, Any]:
        desc: dict[str, Any] = {
            "sha": hashlib.sha256(self.data).hexdigest()[:16],
            "bytes": len(self.data),
            "wrap": self.wrap,
        }
        if self.rate:
            desc["rate"] = self.rate
        if self.seconds is not None:
            desc["seconds"] = round(self.seconds, 4)
        return desc


#: Stores a blob and returns extra descriptor keys (where it was put); None when only comparing.
Sink = Callable[[Blob], dict[str, Any]] | None
#: The bytes of a stored blob descriptor.
Source = Callable[[dict[str, Any]], bytes]


@dataclass
class WsContext:
    """Per-connection facts that say how to read binary frames (set by the dialog ``Start``)."""

    path: str
    client_rate: int | None = 16000
    server_rate: int | None = 24000
    extra: dict[str, Any] = field(default_factory=dict)

    def learn(self, message: Any) -> None:
        """Remember the dialog task id, and read the audio formats from ``Start`` (docs/protocols.md#dialog-messages)."""
        try:
            self.extra["task_id"] = message["header"]["task_id"]
            payload = message["payload"]
            if payload["input"]["directive"] != "Start":
                return
            params = payload.get("parameters") or {}
        except (KeyError, TypeError):
            return
        up, down = params.get("upstream") or {}, params.get("downstream") or {}
        pcm_up = str(up.get("audio_format") or "pcm") == "pcm"
        pcm_down = str(down.get("audio_format") or "pcm") == "pcm"
        self.client_rate = int(up.get("sample_rate") or 16000) if pcm_up else None
        self.server_rate = int(down.get("sample_rate") or 24000) if pcm_down else None


def redact_headers(headers: Any) -> dict[str, str]:
    """Headers as a dict with credentials replaced (multi-valued headers are joined)."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        out[key] = REDACTED if key in SECRET_HEADERS else value
    return out


def redact_fields(payload: Any) -> Any:
    """``payload`` with the values of :data:`SECRET_FIELDS` (any depth, any case) redacted."""
    if isinstance(payload, dict):
        return {
            k: REDACTED if k.lower() in SECRET_FIELDS else redact_fields(v)
            for k, v in payload.items()
        }
    if isinstance(payload, list):
        if (
            len(payload) == 2
            and isinstance(payload[0], str)
            and payload[0].lower() in SECRET_FIELDS
        ):
            return [payload[0], {"text": REDACTED}]  # a form field [name, value]
        return [redact_fields(v) for v in payload]
    return payload


def _seconds_of_container(data: bytes) -> float | None:
    if not data.startswith(_CONTAINER_MAGIC) and data[4:8] != b"ftyp":
        return None
    from nbtoolkit.audio.decode import decode
    from nbtoolkit.errors import AudioError

    try:
        return decode(data).duration
    except AudioError:
        return None


def _as_blob(text: str, rate: int | None, measure: bool) -> Blob | None:
    if len(text) < MIN_BLOB_CHARS:
        return None
    prefix = ""
    head = _DATA_URI.match(text)
    if head:
        prefix = head.group(0)
    body = text[len(prefix) :]
    if len(body) % 4 or not _BASE64.fullmatch(body):
        return None
    try:
        data = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return None
    if base64.b64encode(data).decode() != body:  # must rebuild byte for byte
        return None
    return _blob(data, prefix or "b64", rate, measure)


def _blob(data: bytes, wrap: str | None, rate: int | None, measure: bool) -> Blob:
    if rate and len(data) % 2 == 0:
        return Blob(data, wrap, rate, len(data) / 2 / rate)
    return Blob(data, wrap, None, _seconds_of_container(data) if measure else None)


def _walk(
    value: Any,
    path: tuple[str, ...],
    rate_of: Callable[[tuple[str, ...]], int | None],
    sink: Sink,
    measure: bool,
) -> Any:
    if isinstance(value, dict):
        return {k: _walk(v, (*path, k), rate_of, sink, measure) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, path, rate_of, sink, measure) for v in value]
    if isinstance(value, str):
        blob = _as_blob(value, rate_of(path), measure)
        if blob is not None:
            return _blob_ref(blob, sink)
    return value


def _blob_ref(blob: Blob, sink: Sink) -> dict[str, Any]:
    desc = blob.descriptor()
    if sink is not None:
        desc.update(sink(blob))
    return {"$blob": desc}


def _rates_for(message: Any) -> Callable[[tuple[str, ...]], int | None]:
    kind = message.get("type") if isinstance(message, dict) else None

    def rate_of(path: tuple[str, ...]) -> int | None:
        if kind and len(path) == 1:
            return REALTIME_PCM.get((kind, path[0]))
        if path[:1] == ("choices",) and path[-2:] == ("audio", "data"):
            return AUDIO_MODALITIES_RATE
        return None

    return rate_of


def encode_json_text(text: str, sink: Sink, measure: bool) -> dict[str, Any]:
    """``{"json": …}`` when ``text`` is a JSON object or array, else ``{"text": text}``."""
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        try:
            value = json.loads(stripped)
        except ValueError:
            return {"text": text}
        out: dict[str, Any] = {"json": _walk(value, (), _rates_for(value), sink, measure)}
        if len(stripped) != len(text):
            out["pre"] = text[: len(text) - len(stripped)]
        return out
    return {"text": text}


def encode_ws(data: str | bytes, ctx: WsContext, *, client: bool, sink: Sink) -> dict[str, Any]:
    """A WebSocket frame's payload; a dialog ``Start`` updates ``ctx`` for later binary frames."""
    if isinstance(data, bytes):
        rate = ctx.client_rate if client else ctx.server_rate
        return {"bytes": _blob_ref(_blob(data, None, rate, client), sink)}
    payload = encode_json_text(data, sink, client)
    if client and "json" in payload:
        ctx.learn(payload["json"])
    return payload


def _form(content_type: str, body: bytes, sink: Sink, measure: bool) -> list[list[Any]] | None:
    raw = f"Content-Type: {content_type}\r\n\r\n".encode() + body
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    if not message.is_multipart():
        return None
    fields: list[list[Any]] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True)
        if not isinstance(name, str) or not isinstance(data, bytes):
            return None
        filename = part.get_filename()
        if filename is None:
            fields.append([name, {"text": data.decode("utf-8", "replace")}])
        else:
            ref = _blob_ref(_blob(data, None, None, measure), sink)
            fields.append(
                [name, {"file": ref, "filename": filename, "type": part.get_content_type()}]
            )
    return fields


def encode_body(content_type: str | None, body: bytes, *, sink: Sink, measure: bool) -> Any:
    """An HTTP body's payload by its content type (JSON, multipart form, text, else bytes)."""
    if not body:
        return None
    ctype = (content_type or "").lower()
    if ctype.startswith("multipart/form-data"):
        form = _form(content_type or "", body, sink, measure)
        if form is not None:
            return {"form": form}
    if "json" in ctype or ctype.startswith("text/"):
        try:
            return encode_json_text(body.decode("utf-8"), sink, measure)
        except UnicodeDecodeError:
            pass
    return {"bytes": _blob_ref(_blob(body, None, None, measure), sink)}


def encode_sse_event(event: str, sink: Sink) -> dict[str, Any]:
    """One SSE event (without its blank-line terminator) as ``{"sse": [[field, value], …]}``."""
    lines: list[list[Any]] = []
    for line in event.split("\n"):
        name, colon, rest = line.partition(":")
        if name == "data" and colon:
            lines.append([name, encode_json_text(rest, sink, False)])
        else:
            lines.append([name, rest if colon else None])
    return {"sse": lines}


# ----------------------------------------------------------------------------------------- decoding
def _unwalk(value: Any, source: Source) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$blob"}:
            desc = value["$blob"]
            data = source(desc)
            text = base64.b64encode(data).decode()
            return text if desc["wrap"] == "b64" else desc["wrap"] + text
        return {k: _unwalk(v, source) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwalk(v, source) for v in value]
    return value


def _text(payload: dict[str, Any], source: Source) -> str:
    if "json" in payload:
        value = _unwalk(payload["json"], source)
        return payload.get("pre", "") + json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(payload["text"])


def decode_payload(payload: Any, source: Source) -> str | bytes | None:
    """The message a payload stands for: str for text, bytes for binary, None for no body.

    Forms are not rebuilt: a replay never sends a request, it only compares them.
    """
    if payload is None:
        return None
    if "bytes" in payload:
        return source(payload["bytes"]["$blob"])
    if "sse" in payload:
        lines = []
        for name, value in payload["sse"]:
            if value is None:
                lines.append(name)
            else:
                lines.append(f"{name}:{value if isinstance(value, str) else _text(value, source)}")
        return "\n".join(lines) + "\n\n"
    return _text(payload, source)
