"""Server-sent events: encode frames and decode a byte stream incrementally (sans-I/O).

DashScope's SDK parser is strict (docs/protocols.md#sse-framing): a field is ``name:value`` with *no* space
after the colon (``event: error`` is not recognised), and each ``data:`` line must hold one whole JSON
document. :func:`encode` writes exactly that form; :class:`SSEDecoder` accepts both forms, as browsers do.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["SSEDecoder", "SSEEvent", "encode"]

_LINE_END = re.compile(rb"\r\n|\n|\r")


def encode(
    data: str,
    *,
    id: str | None = None,
    event: str | None = None,
    fields: Iterable[tuple[str, str]] = (),
    comments: Iterable[str] = (),
    space: bool = False,
) -> bytes:
    """One SSE frame. ``data`` must be a single line (JSON without newlines).

    ``space=True`` writes ``data: …`` as OpenAI's and Agora's samples do; the default ``name:value`` form
    is what DashScope's parser needs.
    """
    if "\n" in data or "\r" in data:
        raise ValueError("SSE data must be one line: serialise JSON without newlines")
    lines: list[str] = []
    if id is not None:
        lines.append(f"id:{id}")
    if event is not None:
        lines.append(f"event:{event}")
    lines.extend(f"{name}:{value}" for name, value in fields)
    lines.extend(f":{c}" for c in comments)
    lines.append(f"data: {data}" if space else f"data:{data}")
    return ("\n".join(lines) + "\n\n").encode("utf-8")


@dataclass
class SSEEvent:
    """One decoded event. ``data`` joins multi-line data with newlines, per the SSE spec."""

    data: str
    event: str = "message"
    id: str | None = None
    fields: dict[str, str] = field(default_factory=dict)


class SSEDecoder:
    """Feed bytes as they arrive; get complete events. Handles CR, LF and CRLF line ends, UTF-8
    split across chunks, and refuses events larger than ``max_event_bytes``."""

    def __init__(self, max_event_bytes: int = 16 * 1024 * 1024) -> None:
        self._buf = b""
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._fields: dict[str, str] = {}
        self._size = 0
        self.max_event_bytes = max_event_bytes

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Events completed by ``chunk``."""
        self._buf += chunk
        out: list[SSEEvent] = []
        while True:
            match = _LINE_END.search(self._buf)
            if match is None:
                break
            if match.group() == b"\r" and match.end() == len(self._buf):
                break  # a CR at the very end may be the first half of a CRLF still in transit
            raw, self._buf = self._buf[: match.start()], self._buf[match.end() :]
            ev = self._line(raw.decode("utf-8", errors="replace"))
            if ev is not None:
                out.append(ev)
        if len(self._buf) + self._size > self.max_event_bytes:
            raise ValueError(f"SSE event larger than {self.max_event_bytes} bytes")
        return out

    def _line(self, line: str) -> SSEEvent | None:
        if line == "":
            if not self._data:
                self._event, self._fields = "", {}
                return None
            ev = SSEEvent("\n".join(self._data), self._event or "message", self._id, self._fields)
            self._data, self._event, self._fields, self._size = [], "", {}, 0
            return ev
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        self._size += len(value)
        if self._size > self.max_event_bytes:
            raise ValueError(f"SSE event larger than {self.max_event_bytes} bytes")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = value
        else:
            self._fields[name] = value
        return None
