"""The glue between :class:`~nbtoolkit.backends.dialog.Dialog` and the ``dashscope`` SDK's
``MultiModalDialog``: the callbacks that put what the SDK's thread reports on an inbox, an observing
subclass that reports what the SDK's parser drops, the SDK's errors as ours, and images as the
JPEGs the service takes.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from dashscope.multimodal.multimodal_dialog import MultiModalCallback, MultiModalDialog

from nbtoolkit.audio.clip import Clip
from nbtoolkit.errors import (
    BackendError,
    ConnectionLost,
    ImageError,
    ProtocolError,
)
from nbtoolkit.protocols.dialog import MAX_IMAGE_BYTES
from nbtoolkit.protocols.errors import error_class, error_for, error_for_close, parse_error_body
from nbtoolkit.results import Reply
from nbtoolkit.retry import parse_retry_after

__all__ = [
    "LOST_FIX",
    "Callback",
    "Inbox",
    "ObservedDialog",
    "Owner",
    "call_hook",
    "closed_error",
    "error_from",
    "image_param",
    "is_error_event",
    "to_jpeg",
]

log = logging.getLogger("nbtoolkit.dialog")

KNOWN_EVENTS = {
    "Started",
    "Stopped",
    "DialogStateChanged",
    "RequestAccepted",
    "SpeechStarted",
    "SpeechEnded",
    "SpeechContent",
    "RespondingStarted",
    "RespondingEnded",
    "RespondingContent",
    "Error",
    "HeartBeat",
}


# --------------------------------------------------------------------------- images
def to_jpeg(image: Any, limit: int = MAX_IMAGE_BYTES) -> bytes:
    """JPEG bytes of ``image`` (bytes, path or PIL image) no larger than ``limit``.

    A JPEG already under the limit is sent unchanged; anything else is re-encoded with Pillow at
    falling quality, then at smaller sizes, until it fits.
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        img = image
    else:
        if isinstance(image, (str, Path)):
            try:
                raw = Path(image).read_bytes()
            except OSError as exc:
                raise ImageError(
                    f"Cannot read the image {str(image)!r}: {exc}", "check the path"
                ) from exc
        elif isinstance(image, (bytes, bytearray, memoryview)):
            raw = bytes(image)
        else:
            raise ImageError(
                f"A {type(image).__name__} is not an image",
                "pass JPEG/PNG bytes, a path or a PIL image",
            )
        if raw[:3] == b"\xff\xd8\xff" and len(raw) <= limit:
            return raw
        try:
            img = Image.open(io.BytesIO(raw))
            img.load()
        except (UnidentifiedImageError, OSError) as exc:
            raise ImageError(
                "The data is not an image Pillow can read", "pass a JPEG or PNG"
            ) from exc
    img = img.convert("RGB")
    for scale in (1.0, 0.75, 0.5, 0.35, 0.25, 0.15):
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        scaled = img if scale == 1.0 else img.resize(size, Image.Resampling.LANCZOS)
        for quality in (85, 70, 55, 40):
            buf = io.BytesIO()
            scaled.save(buf, "JPEG", quality=quality, optimize=True)
            if buf.tell() <= limit:
                return buf.getvalue()
    raise ImageError(
        f"The image does not fit in {limit // 1024} KB even at 15 % size",
        "crop it or send a simpler picture",
    )


def image_param(jpeg: bytes) -> dict[str, str]:
    return {"type": "base64", "value": base64.b64encode(jpeg).decode("ascii")}


# --------------------------------------------------------------------------- SDK glue
class Inbox:
    """What the SDK's thread reports: ``(kind, *data)`` tuples on a queue."""

    def __init__(self) -> None:
        self.items: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.closed = threading.Event()

    def put(self, *item: Any) -> None:
        self.items.put(item)


def call_hook(fn: Callable[..., None] | None, *args: Any) -> None:
    if fn is None:
        return
    try:
        fn(*args)
    except Exception:  # a user's hook must not kill the SDK's thread
        log.exception("Dialog hook %r failed", fn)


class Owner(Protocol):
    """What the SDK's callbacks update: the dialog client (its state, hooks and inbox)."""

    dialog_id: str | None
    state: str
    sample_rate: int
    on_audio: Callable[[Clip], None] | None
    on_state: Callable[[str], None] | None
    on_text: Callable[[str, str, bool], None] | None
    on_speech_started: Callable[[], None] | None
    _inbox: Inbox


class Callback(MultiModalCallback):
    """SDK callbacks → the dialog's inbox (and the user's hooks)."""

    def __init__(self, dialog: Owner) -> None:
        self.dialog = dialog
        self.inbox = dialog._inbox

    def on_started(self, dialog_id: str) -> None:
        self.dialog.dialog_id = dialog_id
        self.inbox.put("event", "Started", {"dialog_id": dialog_id})

    def on_state_changed(self, state: Any) -> None:
        self.dialog.state = state.value
        self.inbox.put("event", "DialogStateChanged", {"state": state.value})
        call_hook(self.dialog.on_state, state.value)

    def on_speech_started(self) -> None:
        self.inbox.put("event", "SpeechStarted", {})
        call_hook(self.dialog.on_speech_started)

    def on_speech_ended(self) -> None:
        self.inbox.put("event", "SpeechEnded", {})

    def on_speech_content(self, payload: Any) -> None:
        out = (payload or {}).get("output") or {}
        self.inbox.put("event", "SpeechContent", out)
        call_hook(
            self.dialog.on_text, "user", str(out.get("text") or ""), bool(out.get("finished"))
        )

    def on_responding_started(self) -> None:
        self.inbox.put("event", "RespondingStarted", {})

    def on_responding_content(self, payload: Any) -> None:
        out = (payload or {}).get("output") or {}
        self.inbox.put("event", "RespondingContent", out)
        text, final = str(out.get("text") or ""), bool(out.get("finished"))
        call_hook(self.dialog.on_text, "assistant", text, final)

    def on_responding_ended(self, payload: Any) -> None:
        payload = payload or {}
        self.inbox.put("event", "RespondingEnded", {**(payload.get("output") or {}), **payload})

    def on_request_accepted(self) -> None:
        self.inbox.put("event", "RequestAccepted", {})

    def on_speech_audio_data(self, data: bytes) -> None:
        self.inbox.put("audio", bytes(data))
        # a frame of an answer the server has just abandoned (barge-in) must not reach a player
        responding = self.dialog.state == "Responding"
        if self.dialog.on_audio is not None and len(data) >= 2 and responding:
            clip = Clip.from_pcm(data[: len(data) // 2 * 2], self.dialog.sample_rate)
            call_hook(self.dialog.on_audio, clip)

    def on_stopped(self) -> None:
        self.inbox.put("event", "Stopped", {})

    def on_error(self, error: Any) -> None:
        self.inbox.put("error", error)

    def on_close(self, close_status_code: int, close_msg: str) -> None:
        self.inbox.closed.set()
        self.inbox.put("close", close_status_code, close_msg)


class ObservedDialog(MultiModalDialog):
    """The SDK's dialog, reporting what its parser drops silently (bad JSON, unknown events,
    HeartBeat) so a Reply's timeline shows it."""

    def __init__(self, inbox: Inbox, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._inbox = inbox

    def _wait_for_connection(self) -> None:
        # The SDK polls 5 s even when the handshake was refused; stop at the refusal.
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            sock = getattr(self.ws, "sock", None)
            if (sock is not None and sock.connected) or self._inbox.closed.wait(0.02):
                return

    def request_to_respond_prompt(self, text: str) -> None:
        """Ask in text (the SDK declares this but leaves it abstract)."""
        self.request_to_respond("prompt", text)

    def _on_message(self, ws: Any, message: Any) -> None:
        if isinstance(message, str):
            try:
                doc = json.loads(message)
                event = ((doc.get("payload") or {}).get("output") or {}).get("event")
            except (ValueError, AttributeError):
                self._inbox.put("warning", "malformed_frame", {"size": len(message)})
                return
            if event == "HeartBeat":
                self._inbox.put("event", "HeartBeat", {})
            elif event is not None and event not in KNOWN_EVENTS:
                self._inbox.put("warning", "unknown_event", {"event": str(event)[:64]})
        super()._on_message(ws, message)


def error_from(error: Any, partial: Reply | None, *, local: bool = False) -> BackendError:
    """Our exception for what the SDK passed to ``on_error``: a JSON string (Error event or
    task-failed) or a transport exception, mapped by the one status/code table."""
    if isinstance(error, str):
        try:
            doc = json.loads(error)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            header = doc.get("header") or {}
            output = (doc.get("payload") or {}).get("output") or {}
            status = header.get("status_code")
            return error_for(
                status if isinstance(status, int) else None,
                output.get("error_code") or header.get("error_code"),
                output.get("error_message") or header.get("error_message"),
                where="The dialog server",
                request_id=header.get("task_id"),
                partial=partial,
                local=local,
            )
    # websocket-client puts the HTTP status of a refused handshake, or the close code, here
    status = getattr(error, "status_code", None)
    if isinstance(status, int) and error_class(status) is not ProtocolError:
        headers = getattr(error, "resp_headers", None) or {}
        message, code = parse_error_body(getattr(error, "resp_body", None))
        return error_for(
            status,
            code,
            message,
            where="The dialog server",
            retry_after=parse_retry_after(headers.get("retry-after")),
            partial=partial,
            local=local,
        )
    return ConnectionLost(
        f"The dialog connection failed: {type(error).__name__}: {error}",
        LOST_FIX,
        status=status if isinstance(status, int) else None,
        partial=partial,
    )


#: The fix for a dialog connection that dropped.
LOST_FIX = "check the network and open a new Dialog; the partial turn is in err.partial"


def closed_error(
    code: int, reason: str, partial: Reply | None, *, local: bool = False
) -> BackendError:
    """Our exception for the server closing the socket with ``code`` (1008 auth, 1011 server…)."""
    return error_for_close(
        code, reason, where="The dialog server", fix=LOST_FIX, partial=partial, local=local
    )


def is_error_event(error: Any) -> bool:
    """True for an ``Error`` event (the session goes on), False for task-failed or a transport
    failure (the session is over)."""
    if not isinstance(error, str):
        return False
    try:
        doc = json.loads(error)
    except ValueError:
        return False
    output = (doc.get("payload") or {}).get("output") if isinstance(doc, dict) else None
    return isinstance(output, dict) and output.get("event") == "Error"
