"""A bounded recordings folder: when a take starts, the oldest earlier takes beyond a count and a
total size are deleted, so ``~/.cache/nbtoolkit/recordings`` cannot grow without end.

Defaults: the newest :data:`DEFAULT_MAX_FILES` takes and at most :data:`DEFAULT_MAX_MB` MB of them
(a minute of 16 kHz PCM16 is 1.9 MB). Change them with the environment, read at every take:
``NBTOOLKIT_RECORDINGS_MAX_FILES`` and ``NBTOOLKIT_RECORDINGS_MAX_MB``; ``off`` lifts that bound
(both ``off``: nothing is ever deleted), ``0`` keeps only the take being recorded.

Only the Recorder's own files (``rec-*.wav``) are counted and deleted, oldest first (by modification
time); the take being recorded is never deleted. The bound holds when each take starts: the new
take then grows on top of it. Another Recorder recording into the same folder at the same moment is
not protected beyond being among the newest files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_MAX_FILES",
    "DEFAULT_MAX_MB",
    "PATTERN",
    "Retention",
    "prune",
]

log = logging.getLogger(__name__)

#: How many takes a recordings folder keeps by default (the current one included).
DEFAULT_MAX_FILES = 50
#: How many megabytes (10**6 bytes) of takes a recordings folder keeps by default.
DEFAULT_MAX_MB = 200.0
#: The names of the Recorder's takes; nothing else in the folder is touched.
PATTERN = "rec-*.wav"
_MAX_FILES_ENV = "NBTOOLKIT_RECORDINGS_MAX_FILES"
_MAX_MB_ENV = "NBTOOLKIT_RECORDINGS_MAX_MB"
_OFF = "off"


@dataclass(frozen=True)
class Retention:
    """How many takes (``max_files``) and how many bytes of them (``max_bytes``) a folder keeps;
    ``None`` lifts that bound."""

    max_files: int | None = DEFAULT_MAX_FILES
    max_bytes: int | None = int(DEFAULT_MAX_MB * 1e6)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Retention:
        """The bounds set by ``NBTOOLKIT_RECORDINGS_MAX_FILES`` / ``_MAX_MB`` (defaults otherwise).

        A value that is not a number or ``off`` is logged and the default used: a typo in the
        environment must not stop a recording."""
        env = os.environ if environ is None else environ
        files = _read(env, _MAX_FILES_ENV, int, DEFAULT_MAX_FILES)
        mb = _read(env, _MAX_MB_ENV, float, DEFAULT_MAX_MB)
        return cls(
            max_files=None if files is None else int(files),
            max_bytes=None if mb is None else int(mb * 1e6),
        )


def _read(
    env: Mapping[str, str], name: str, kind: type[int] | type[float], default: float
) -> float | None:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw == _OFF:
        return None
    try:
        value = kind(raw)
    except ValueError:
        value = -1
    if value < 0:
        log.warning(
            "%s=%r is not a count — set a number ≥ 0 or 'off'; using %s", name, raw, default
        )
        return default
    return value


def prune(folder: Path, current: Path, retention: Retention | None = None) -> list[Path]:
    """Delete the oldest takes in ``folder`` until it holds at most ``retention.max_files`` takes
    and ``retention.max_bytes`` bytes of them, counting ``current`` (which is never deleted).

    ``retention`` defaults to :meth:`Retention.from_env`. Returns the deleted paths. A file that
    cannot be read or deleted is skipped (logged): pruning never stops a recording."""
    bounds = Retention.from_env() if retention is None else retention
    if bounds.max_files is None and bounds.max_bytes is None:
        return []
    takes: list[tuple[float, str, int, Path]] = []
    kept_bytes = 0
    for path in folder.glob(PATTERN):
        try:
            stat = path.stat()
        except OSError:
            continue  # gone meanwhile (another kernel pruned it)
        if path == current:
            kept_bytes += stat.st_size
            continue
        takes.append((stat.st_mtime, path.name, stat.st_size, path))
    takes.sort(reverse=True)  # newest first: keep from the front, delete from the back
    kept_files = 1  # the current take
    keep = 0
    for _mtime, _name, size, _path in takes:
        if bounds.max_files is not None and kept_files + 1 > bounds.max_files:
            break
        if bounds.max_bytes is not None and kept_bytes + size > bounds.max_bytes:
            break
        kept_files += 1
        kept_bytes += size
        keep += 1
    deleted = []
    for *_, path in takes[keep:]:
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning(
                "could not delete the old recording %s (%s) — check its permissions", path, exc
            )
            continue
        deleted.append(path)
    if deleted:
        log.debug("deleted %d old recordings from %s", len(deleted), folder)
    return deleted
