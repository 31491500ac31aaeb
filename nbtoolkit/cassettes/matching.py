"""Does a replayed request match the recorded one? Field by field, with the first difference named.

Defaults (see docs/cassettes.md): ids and timestamps are ignored; audio must have the recorded
duration (± ``tolerance`` seconds) and, with ``audio="hash"``, the same bytes; other blobs (images,
files) must be byte-identical; a value redacted at recording time matches anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Literal

from nbtoolkit.cassettes.payload import REDACTED

__all__ = [
    "DEFAULT_IGNORE",
    "MatchRules",
    "Mismatch",
    "audio_seconds",
    "first_difference",
    "message_name",
    "payload_difference",
]

#: Keys ignored wherever they appear: every id a client or server makes up, and timestamps.
DEFAULT_IGNORE = frozenset(
    {
        "event_id",
        "task_id",
        "request_id",
        "id",
        "session_id",
        "response_id",
        "item_id",
        "previous_item_id",
        "conversation_id",
        "dialog_id",
        "round_id",
        "llm_request_id",
        "created",
        "created_at",
        "timestamp",
        "expires_at",
        "expiration",
    }
)
#: Request headers that change the answer (streaming, OSS resolution); the rest are not compared.
DEFAULT_HEADERS = frozenset({"x-dashscope-sse", "x-dashscope-ossresourceresolve"})


@dataclass(frozen=True)
class MatchRules:
    """How replayed requests are compared with the cassette.

    ``ignore``: key names ignored anywhere, or dotted paths (``"session.instructions"``, list indexes
    left out) ignored at that place. ``audio``: ``"hash"`` (duration and exact bytes) or
    ``"duration"`` (duration only, for audio recorded again from a microphone). ``tolerance``: allowed
    duration difference in seconds. ``headers``: request header names compared.
    """

    ignore: frozenset[str] = DEFAULT_IGNORE
    audio: Literal["hash", "duration"] = "hash"
    tolerance: float = 0.05
    headers: frozenset[str] = DEFAULT_HEADERS

    def ignoring(self, *names: str) -> MatchRules:
        """These rules with more keys or dotted paths ignored."""
        return replace(self, ignore=self.ignore | frozenset(names))


@dataclass(frozen=True)
class Mismatch:
    """One request that did not match: ``where`` (which request/message), ``field`` and ``detail``."""

    where: str
    field: str
    detail: str
    exchange: str = ""

    def __str__(self) -> str:
        if self.field:
            return f"{self.where} field {self.field}: {self.detail}"
        return f"{self.where}: {self.detail}"


def message_name(payload: Any) -> str:
    """A short name for a WebSocket message: realtime ``type``, dialog directive, or the frame kind."""
    if payload is None:
        return "close"
    if "bytes" in payload:
        return "binary audio" if payload["bytes"]["$blob"].get("rate") else "binary frame"
    value = payload.get("json")
    if isinstance(value, dict):
        if isinstance(value.get("type"), str):
            return str(value["type"])
        try:
            return str(value["payload"]["input"]["directive"])
        except (KeyError, TypeError):
            pass
        header = value.get("header")
        if isinstance(header, dict) and header.get("action"):
            return str(header["action"])
    return "text frame"


def audio_seconds(value: Any) -> float:
    """Seconds of audio in the blobs of a payload (0 when it carries none)."""
    if _is_blob(value):
        return float(value["$blob"].get("seconds") or 0.0)
    if isinstance(value, dict):
        return sum(audio_seconds(v) for v in value.values())
    if isinstance(value, list):
        return sum(audio_seconds(v) for v in value)
    return 0.0


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…"


def _is_blob(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"$blob"}


def _blob_difference(rec: dict[str, Any], act: dict[str, Any], rules: MatchRules) -> str | None:
    rs, as_ = rec.get("seconds"), act.get("seconds")
    if rs is not None and as_ is not None:
        if abs(rs - as_) > rules.tolerance:
            return f"duration {as_:.2f} s != recorded {rs:.2f} s"
        if rules.audio == "duration" or rec["sha"] == act["sha"]:
            return None
        if rec["bytes"] != act["bytes"]:
            return f"audio of {act['bytes']} bytes != recorded {rec['bytes']} bytes ({as_:.3f} s)"
        return (
            f"audio content differs at the same duration {as_:.2f} s "
            f"(sha {act['sha'][:8]} != {rec['sha'][:8]})"
        )
    if rec["sha"] != act["sha"]:
        return (
            f"content differs ({act['bytes']} bytes, sha {act['sha'][:8]} "
            f"!= recorded {rec['bytes']} bytes, sha {rec['sha'][:8]})"
        )
    return None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def first_difference(
    recorded: Any, actual: Any, rules: MatchRules, path: str = ""
) -> tuple[str, str] | None:
    """``(field, detail)`` of the first difference between two payload values, or None."""
    plain = re.sub(r"\[\d+\]", "", path)
    if plain in rules.ignore or recorded == REDACTED:
        return None
    if _is_blob(recorded) and _is_blob(actual):
        detail = _blob_difference(recorded["$blob"], actual["$blob"], rules)
        return (path, detail) if detail else None
    if isinstance(recorded, dict) and isinstance(actual, dict):
        for key in list(recorded) + [k for k in actual if k not in recorded]:
            if key in rules.ignore:
                continue
            sub = _join(path, key)
            if key not in actual:
                return sub, f"missing (recorded {_short(recorded[key])})"
            if key not in recorded:
                return sub, f"{_short(actual[key])} is not in the recording"
            diff = first_difference(recorded[key], actual[key], rules, sub)
            if diff:
                return diff
        return None
    if isinstance(recorded, list) and isinstance(actual, list):
        for i, (r, a) in enumerate(zip(recorded, actual, strict=False)):
            diff = first_difference(r, a, rules, f"{path}[{i}]")
            if diff:
                return diff
        if len(recorded) != len(actual):
            return path, f"{len(actual)} items != recorded {len(recorded)}"
        return None
    if recorded != actual:
        return path, f"{_short(_plain(actual))} != recorded {_short(_plain(recorded))}"
    return None


def _plain(value: Any) -> Any:
    if _is_blob(value):
        return f"<{value['$blob']['bytes']} bytes>"
    return value


def payload_difference(recorded: Any, actual: Any, rules: MatchRules) -> tuple[str, str] | None:
    """Like :func:`first_difference` for two payloads, with field names relative to the message."""
    rkind = _kind(recorded)
    akind = _kind(actual)
    if rkind != akind:
        return "", f"a {akind} where the recording has a {rkind}"
    if rkind == "json":
        return first_difference(recorded["json"], actual["json"], rules)
    if rkind == "binary frame":
        blob = first_difference(recorded["bytes"], actual["bytes"], rules)
        return (
            ("audio" if recorded["bytes"]["$blob"].get("rate") else "data", blob[1])
            if blob
            else None
        )
    if rkind == "form":
        return first_difference(_fields(recorded["form"]), _fields(actual["form"]), rules)
    return first_difference(recorded, actual, rules)


def _fields(form: list[list[Any]]) -> dict[str, Any]:
    """Form fields by name: text values, and the blob of each file part."""
    return {name: value["file"] if "file" in value else value["text"] for name, value in form}


def _kind(payload: Any) -> str:
    if payload is None:
        return "empty body"
    if "json" in payload:
        return "json"
    if "bytes" in payload:
        return "binary frame"
    if "form" in payload:
        return "form"
    return "text"
