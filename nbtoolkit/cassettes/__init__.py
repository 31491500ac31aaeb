"""Record a session of any protocol into one cassette file, and replay it from a local server.

    with nbtoolkit.record("demo.cassette"):          # a proxy on 127.0.0.1 records everything
        reply = QwenAudio().ask(clip)                 # clients built with endpoints=None use it
    with nbtoolkit.replay("demo.cassette", pace="fast") as tape:
        again = QwenAudio().ask(clip)                 # the same answer, from the cassette
    assert not tape.mismatches

Inside either block :func:`nbtoolkit.connect` returns the proxy's / replay server's endpoints, in every
thread. The file format and the matching rules are in ``docs/cassettes.md``.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from nbtoolkit.cassettes.matching import DEFAULT_IGNORE, MatchRules, Mismatch
from nbtoolkit.cassettes.proxy import RecordingProxy
from nbtoolkit.cassettes.replay import Pace, ReplayServer
from nbtoolkit.cassettes.store import Cassette, CassetteWriter
from nbtoolkit.config import Endpoints
from nbtoolkit.errors import ConfigError

__all__ = [
    "DEFAULT_IGNORE",
    "Cassette",
    "MatchRules",
    "Mismatch",
    "Recording",
    "Replay",
    "record",
    "replay",
]


class Recording:
    """A running recording (see :func:`record`). ``endpoints`` point at the proxy; after the block,
    ``size`` is the cassette's size in bytes."""

    def __init__(self, path: str | Path, upstream: Endpoints | None) -> None:
        self.path = Path(path)
        self._upstream = upstream
        self.endpoints: Endpoints | None = None
        self.size: int | None = None
        self._proxy: RecordingProxy | None = None
        self._override: AbstractContextManager[Endpoints] | None = None

    def __enter__(self) -> Recording:
        from nbtoolkit.connection import connect, override_endpoints

        if not self.path.parent.is_dir():  # fail now, not after the whole session
            raise ConfigError(
                f"Cannot write a cassette to {self.path}: {self.path.parent} does not exist",
                "create the folder first or pick another path",
            )
        upstream = self._upstream or connect(quiet=True)
        meta = {
            "upstream": {
                "local": upstream.local,
                "region": upstream.region,
                "audio_modalities": upstream.audio_modalities_url is not None,
            }
        }
        self._proxy = RecordingProxy(CassetteWriter(meta), upstream)
        self.endpoints = self._proxy.start()
        self._override = override_endpoints(self.endpoints)
        self._override.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._proxy is not None and self._override is not None
        self._override.__exit__(None, None, None)
        self._proxy.stop()
        self.size = self._proxy.writer.save(self.path)

    def __repr__(self) -> str:
        return f"Recording({str(self.path)!r}, size={self.size})"


class Replay:
    """A running replay (see :func:`replay`). ``mismatches`` lists every request that did not match
    the cassette; ``unplayed`` the recorded exchanges nobody asked for."""

    def __init__(self, path: str | Path, pace: Pace, rules: MatchRules) -> None:
        if pace not in ("recorded", "fast"):
            raise ConfigError(f"Unknown pace {pace!r}", 'use pace="recorded" or pace="fast"')
        self.path = Path(path)
        self._server = ReplayServer(Cassette(self.path), rules, pace)
        self.endpoints: Endpoints | None = None
        self._override: AbstractContextManager[Endpoints] | None = None

    @property
    def mismatches(self) -> list[Mismatch]:
        """Every request refused so far, in order."""
        return list(self._server.mismatches)

    @property
    def unplayed(self) -> list[str]:
        """Recorded exchanges no client has asked for (e.g. ``"POST /api/v1/…"``)."""
        return self._server.unplayed

    @property
    def cassette(self) -> Cassette:
        """The cassette being replayed (``meta``, ``events``)."""
        return self._server.cassette

    def __enter__(self) -> Replay:
        from nbtoolkit.connection import override_endpoints

        self.endpoints = self._server.start()
        self._override = override_endpoints(self.endpoints)
        self._override.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._override is not None
        self._override.__exit__(None, None, None)
        self._server.stop()

    def __repr__(self) -> str:
        return f"Replay({str(self.path)!r}, mismatches={len(self._server.mismatches)})"


def record(path: str | Path, upstream: Endpoints | None = None) -> Recording:
    """Record every request and response made inside the ``with`` block into the cassette ``path``.

    A proxy on 127.0.0.1 forwards to ``upstream`` (default: what :func:`nbtoolkit.connect` gives — the
    cloud with a key, else the local engine) and :func:`nbtoolkit.connect` returns the proxy's
    endpoints inside the block. Keys, tokens and upload signatures are redacted before anything is
    written; the file is written when the block ends.
    """
    return Recording(_cassette_path(path), upstream)


def replay(
    path: str | Path,
    pace: Pace = "recorded",
    *,
    rules: MatchRules | None = None,
    **rule_options: Any,
) -> Replay:
    """Answer every request made inside the ``with`` block from the cassette ``path``.

    ``pace="recorded"`` sends answers with the recorded timing, ``"fast"`` at once. Requests are
    compared with the recording by ``rules`` (or :class:`MatchRules` built from ``rule_options``, e.g.
    ``audio="duration"``); one that differs is refused with a protocol error naming the first
    difference, which the client raises as :class:`~nbtoolkit.errors.ProtocolError`.
    """
    return Replay(_cassette_path(path), pace, rules or MatchRules(**rule_options))


def _cassette_path(path: Any) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(
            f"A cassette is a file: pass its path, not a {type(path).__name__}",
            'e.g. nbtoolkit.record("session.cassette")',
        )
    return Path(path)
