"""The cassette file: a zip holding ``cassette.json``, ``events.jsonl``, FLAC audio tracks and blobs.

Every event line is scrubbed of registered secrets (:func:`nbtoolkit.config.scrub_secrets`) the moment
it is recorded, so nothing unredacted is ever held for writing, let alone written. PCM audio of one
connection and direction is appended to one track and stored losslessly as FLAC (a blob points at its
byte range); other blobs (images, uploaded files, encoded audio) are stored deflated.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
import zipfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from nbtoolkit.cassettes.payload import Blob
from nbtoolkit.config import scrub_secrets
from nbtoolkit.errors import ConfigError

__all__ = ["FORMAT", "VERSION", "Cassette", "CassetteWriter"]

FORMAT = "nbtoolkit-cassette"
VERSION = 1


def _flac(pcm: bytes, rate: int) -> bytes:
    import av

    samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
    buf = io.BytesIO()
    with av.open(buf, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=rate, layout="mono")
        stream.format = "s16"
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def _unflac(data: bytes) -> bytes:
    import av

    with av.open(io.BytesIO(data), "r") as container:
        parts = [f.to_ndarray().reshape(-1) for f in container.decode(audio=0)]
    return np.concatenate(parts).astype("<i2").tobytes() if parts else b""


def _scrub_bytes(data: bytes) -> bytes:
    # latin-1 maps bytes 1:1 to code points, so the text scrubber works on any bytes
    return scrub_secrets(data.decode("latin-1")).encode("latin-1")


class CassetteWriter:
    """Collects events (thread-safe) while a recording runs; :meth:`save` writes the file."""

    def __init__(self, meta: dict[str, Any]) -> None:
        self._meta = meta
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._lines: list[str] = []
        self._tracks: dict[str, bytearray] = {}
        self._track_rates: dict[str, int] = {}
        self._blobs: dict[str, bytes] = {}
        self._next_exchange = 0

    def exchange(self) -> int:
        """A new exchange number (one HTTP request/response or one WebSocket connection)."""
        with self._lock:
            self._next_exchange += 1
            return self._next_exchange

    def add(self, x: int, kind: str, **fields: Any) -> None:
        """Record one event of exchange ``x`` at the current relative time."""
        with self._lock:  # stamp and append together, so the lines stay in time order
            event = {"t": round(time.monotonic() - self._t0, 4), "x": x, "k": kind, **fields}
            line = scrub_secrets(json.dumps(event, ensure_ascii=False, separators=(",", ":")))
            self._lines.append(line)

    def sink(self, x: int, side: str) -> Any:
        """A blob sink for payloads of exchange ``x`` sent by ``side`` ("client" or "server")."""

        def put(blob: Blob) -> dict[str, Any]:
            with self._lock:
                if blob.rate:
                    name = f"tracks/x{x}-{side}-{blob.rate}.flac"
                    track = self._tracks.setdefault(name, bytearray())
                    self._track_rates[name] = blob.rate
                    at = len(track)
                    track += blob.data
                    return {"src": name, "at": at}
                name = f"blobs/{len(self._blobs):05d}.bin"
                self._blobs[name] = _scrub_bytes(blob.data)
                return {"src": name}

        return put

    def save(self, path: str | Path) -> int:
        """Write the cassette atomically; returns its size in bytes."""
        path = Path(path)
        with self._lock:
            lines, tracks, blobs = list(self._lines), dict(self._tracks), dict(self._blobs)
            rates = dict(self._track_rates)
        meta = {
            **self._meta,
            "format": FORMAT,
            "version": VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "events": len(lines),
            "seconds": round(time.monotonic() - self._t0, 3),
            "tracks": {
                name: {"rate": rates[name], "bytes": len(pcm)} for name, pcm in tracks.items()
            },
        }
        tmp = path.with_name(path.name + ".part")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("cassette.json", json.dumps(meta, indent=1))
            zf.writestr("events.jsonl", "".join(line + "\n" for line in lines))
            for name, pcm in tracks.items():
                zf.writestr(name, _flac(bytes(pcm), rates[name]), zipfile.ZIP_STORED)
            for name, data in blobs.items():
                zf.writestr(name, data)
        os.replace(tmp, path)
        return path.stat().st_size


class Cassette:
    """A cassette read back: ``meta``, ``events`` (dicts in recorded order) and blob bytes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(
                f"No cassette at {self.path}",
                "record one first with `with nbtoolkit.record(path):`",
            )
        try:
            with zipfile.ZipFile(self.path) as zf:
                self.meta: dict[str, Any] = json.loads(zf.read("cassette.json"))
                text = zf.read("events.jsonl").decode("utf-8")
                self._tracks = {name: _unflac(zf.read(name)) for name in self.meta["tracks"]}
                self._blobs = {n: zf.read(n) for n in zf.namelist() if n.startswith("blobs/")}
        except (zipfile.BadZipFile, KeyError, ValueError) as exc:
            raise ConfigError(
                f"{self.path} is not an nbtoolkit cassette ({type(exc).__name__})",
                "record it again with nbtoolkit.record",
            ) from None
        if self.meta.get("format") != FORMAT or self.meta.get("version") != VERSION:
            raise ConfigError(
                f"{self.path} is a {self.meta.get('format')} v{self.meta.get('version')} file",
                f"record it again with this nbtoolkit (format {FORMAT} v{VERSION})",
            )
        self.events: list[dict[str, Any]] = [json.loads(ln) for ln in text.splitlines() if ln]

    def blob(self, desc: dict[str, Any]) -> bytes:
        """The bytes a blob descriptor points at."""
        src = desc["src"]
        if src in self._tracks:
            at = int(desc["at"])
            return self._tracks[src][at : at + int(desc["bytes"])]
        return self._blobs[src]

    def exchanges(self) -> Iterator[list[dict[str, Any]]]:
        """The events grouped by exchange, in the order the exchanges began."""
        groups: dict[int, list[dict[str, Any]]] = {}
        for event in self.events:
            groups.setdefault(event["x"], []).append(event)
        yield from groups.values()
