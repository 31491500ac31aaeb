"""One item's outcome (:class:`ItemResult`), the three kinds of backend, and running one item.

A backend is any of:

* a **client**: an object with ``ask(audio=..., text=...) -> Reply`` (e.g. ``QwenAudio()``);
* a **factory**: a callable taking no arguments that returns a client (e.g. the ``QwenAudio`` class
  itself, or ``lambda: QwenAudio(model="qwen-audio-turbo")``). Each thread (and each Dask worker)
  builds its own client, so nothing with a key in it has to travel between processes;
* a **function** ``(clip_or_path, question) -> str | Reply``.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from nbtoolkit import pricing
from nbtoolkit.batch.items import BatchItem
from nbtoolkit.batch.ratelimit import TokenBucket
from nbtoolkit.config import scrub_secrets
from nbtoolkit.errors import ConfigError
from nbtoolkit.results import Reply, Usage
from nbtoolkit.text import wer

__all__ = ["USAGE_FIELDS", "Backend", "ItemResult", "failure", "run_item"]

Caller = Callable[[Any, str | None], Any]
USAGE_FIELDS = ("input_text", "input_audio", "input_image", "output_text", "output_audio")


@dataclass(frozen=True)
class ItemResult:
    """What happened to one item: the reply text, or the error that stopped it.

    ``latency`` is the seconds the backend call took (upload, request and the client's own retries;
    not the time spent waiting for the rate limit). ``cost`` is in CNY, ``None`` when unknown.
    """

    id: str
    text: str | None
    reference: str | None = None
    usage: Usage | None = None
    cost: float | None = None
    latency: float | None = None
    request_id: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    finished_at: float = field(default_factory=time.time)

    @property
    def ok(self) -> bool:
        """True when the backend answered."""
        return self.error_type is None

    @property
    def tokens(self) -> int:
        """All tokens of the call, in and out (0 when the backend reported none)."""
        if self.usage is None:
            return 0
        return sum(getattr(self.usage, name) for name in USAGE_FIELDS)

    def hypothesis(self, extract: Callable[[str], str] | None = None) -> str | None:
        """The text scored against the reference: the reply, or ``extract(reply)``."""
        if self.text is None or extract is None:
            return self.text
        return extract(self.text)

    def word_error_rate(self, extract: Callable[[str], str] | None = None) -> float | None:
        """WER of the reply (or of ``extract(reply)``, e.g. :func:`~nbtoolkit.batch.quoted`)
        against the reference; None without both."""
        hypothesis = self.hypothesis(extract)
        if self.reference is None or hypothesis is None:
            return None
        return wer(self.reference, hypothesis)

    def to_record(self) -> dict[str, Any]:
        """A flat dict of plain values (one JSONL line / one Parquet row)."""
        usage = self.usage
        return {
            "id": self.id,
            "text": self.text,
            "reference": self.reference,
            "model": None if usage is None else usage.model,
            **{name: None if usage is None else getattr(usage, name) for name in USAGE_FIELDS},
            "local": None if usage is None else usage.local,
            "cost": self.cost,
            "latency": self.latency,
            "request_id": self.request_id,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "finished_at": self.finished_at,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ItemResult:
        """The inverse of :meth:`to_record`."""
        usage = None
        if record.get("model") is not None:
            counts = {name: int(record.get(name) or 0) for name in USAGE_FIELDS}
            usage = Usage(model=record["model"], local=bool(record.get("local")), **counts)
        return cls(
            id=str(record["id"]),
            text=record.get("text"),
            reference=record.get("reference"),
            usage=usage,
            cost=record.get("cost"),
            latency=record.get("latency"),
            request_id=record.get("request_id"),
            error_type=record.get("error_type"),
            error_message=record.get("error_message"),
            finished_at=float(record.get("finished_at") or 0.0),
        )


def _required_positional(fn: Any) -> int | None:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # some builtins have no signature
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in params if p.kind in kinds and p.default is inspect.Parameter.empty)


@dataclass(frozen=True)
class Backend:
    """A backend as given by the user, sorted into client, factory or function (see module doc)."""

    kind: Literal["client", "factory", "function"]
    target: Any

    @classmethod
    def of(cls, backend: Any) -> Backend:
        """Sort ``backend``: an object with ``.ask`` is a client, a callable needing no arguments
        (a class included) is a factory, any other callable is a function."""
        if isinstance(backend, Backend):
            return backend
        if not isinstance(backend, type) and callable(getattr(backend, "ask", None)):
            return cls("client", backend)
        if callable(backend):
            return cls("factory" if _required_positional(backend) == 0 else "function", backend)
        raise ConfigError(
            f"A {type(backend).__name__} cannot answer questions",
            "pass a client with .ask(audio=, text=) (e.g. QwenAudio()), a factory returning one "
            "(e.g. QwenAudio), or a function (clip_or_path, question) -> str",
        )

    def caller(self, built: threading.local) -> Caller:
        """The call to make for one item; a factory's client is built once per thread."""
        if self.kind == "function":
            fn: Caller = self.target
            return fn
        if self.kind == "client":
            client = self.target
        else:
            client = getattr(built, "client", None)
            if client is None:
                client = built.client = self.target()
            if not callable(getattr(client, "ask", None)):
                raise ConfigError(
                    f"The backend factory returned a {type(client).__name__}, which has no .ask()",
                    "return a client such as QwenAudio(...) from the factory",
                )
        return lambda source, question: client.ask(audio=source, text=question)


def _answer(out: Any) -> tuple[str, Usage | None, str | None]:
    if isinstance(out, Reply):
        return out.text, out.usage, out.request_id
    if isinstance(out, str):
        return out, None, None
    raise ConfigError(
        f"The backend returned a {type(out).__name__}, not a Reply or str",
        "return the reply text (or a nbtoolkit Reply) from the backend function",
    )


def failure(item: BatchItem, exc: BaseException, latency: float | None = None) -> ItemResult:
    """``item`` failed with ``exc``: its type and (secret-free) message are kept."""
    return ItemResult(
        item.id,
        None,
        item.reference,
        latency=latency,
        request_id=getattr(exc, "request_id", None),
        error_type=type(exc).__name__,
        error_message=scrub_secrets(str(exc)),
    )


def run_item(
    backend: Backend,
    built: threading.local,
    item: BatchItem,
    question: str | None,
    bucket: TokenBucket | None,
) -> ItemResult:
    """Ask about one item. Any ``Exception`` becomes a failed :class:`ItemResult`; ``BaseException``
    (KeyboardInterrupt, SystemExit) propagates and stops the batch."""
    if bucket is not None:
        bucket.acquire()
    started: float | None = None
    try:
        call = backend.caller(built)  # outside the latency: a factory may start a server first
        started = time.monotonic()
        text, usage, request_id = _answer(call(item.source, question))
    except Exception as exc:
        return failure(item, exc, None if started is None else time.monotonic() - started)
    return ItemResult(
        item.id,
        text,
        item.reference,
        usage=usage,
        cost=None if usage is None else pricing.cost(usage),
        latency=time.monotonic() - started,
        request_id=request_id,
    )
