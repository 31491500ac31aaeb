"""Where finished items go as they finish, so a crash or kernel restart loses none of them.

* ``.jsonl``: one JSON object per line, flushed and fsync'ed per line. A line cut short by a crash is
  dropped when the file is opened again (that item is simply run again).
* ``.parquet``: a directory of Parquet parts (``part-00000.parquet``…) that pandas/pyarrow read as
  one dataset. Parquet files cannot grow after they are written, so finished items first go to a
  journal (``_pending.jsonl`` in the directory, ignored by Parquet readers as its name starts with
  ``_``) and every ``part_size`` items, and at the end of a run, the journal becomes a new part.

Loading keeps the last record of each id, so an item retried after a failure shows its new outcome.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol

from nbtoolkit.batch.outcome import USAGE_FIELDS, ItemResult
from nbtoolkit.errors import ConfigError

__all__ = ["JsonlStore", "ParquetStore", "Store", "open_store"]


class Store(Protocol):
    """Durable results of one output path."""

    path: Path

    def load(self) -> dict[str, ItemResult]:
        """The stored results by id (the last record of each id)."""
        ...

    def append(self, result: ItemResult) -> None:
        """Store one finished item; it is on disk when this returns."""
        ...

    def close(self) -> None:
        """Finish writing (and release the file)."""
        ...


class JsonlStore:
    """Append-only JSON lines, durable per line."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._drop_partial_tail()
        self._file = self.path.open("a", encoding="utf-8")

    def _drop_partial_tail(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with self.path.open("r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)

    def records(self) -> list[dict[str, Any]]:
        """Every complete record in the file, in order."""
        if not self.path.exists():
            return []
        found = []
        with self.path.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    found.append(json.loads(line))
        return found

    def load(self) -> dict[str, ItemResult]:
        return {r.id: r for r in map(ItemResult.from_record, self.records())}

    def append(self, result: ItemResult) -> None:
        self._file.write(json.dumps(result.to_record(), ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def clear(self) -> None:
        self._file.truncate(0)
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def _schema() -> Any:
    import pyarrow as pa

    text, count, number = pa.string(), pa.int64(), pa.float64()
    return pa.schema(
        [
            ("id", text),
            ("text", text),
            ("reference", text),
            ("model", text),
            *((name, count) for name in USAGE_FIELDS),
            ("local", pa.bool_()),
            ("cost", number),
            ("latency", number),
            ("request_id", text),
            ("error_type", text),
            ("error_message", text),
            ("finished_at", number),
        ]
    )


class ParquetStore:
    """A Parquet dataset directory written in parts, with a durable journal for the latest items."""

    def __init__(self, path: str | os.PathLike[str], part_size: int = 100) -> None:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ConfigError(
                "Writing .parquet needs pyarrow", "pip install 'nbtoolkit[batch]' or use a .jsonl"
            ) from None
        self.path = Path(path)
        if self.path.is_file():
            raise ConfigError(
                f"{self.path} is a file, but batch Parquet output is a directory of parts",
                "choose another name, or delete the file",
            )
        self.path.mkdir(parents=True, exist_ok=True)
        self.part_size = part_size
        self._journal = JsonlStore(self.path / "_pending.jsonl")
        self._pending = len(self._journal.records())
        self._flush()

    def _parts(self) -> list[Path]:
        return sorted(self.path.glob("part-*.parquet"))

    def _flush(self) -> None:
        """Write the journal's records as a new part, then empty the journal."""
        records = self._journal.records()
        if not records:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        parts = self._parts()
        number = int(parts[-1].stem.split("-")[1]) + 1 if parts else 0
        final = self.path / f"part-{number:05d}.parquet"
        tmp = self.path / f".{final.name}.tmp"  # a leading dot keeps readers off it
        pq.write_table(pa.Table.from_pylist(records, schema=_schema()), tmp)
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        # a crash between the rename and the truncation leaves records twice; load() keeps one
        self._journal.clear()
        self._pending = 0

    def load(self) -> dict[str, ItemResult]:
        import pyarrow.parquet as pq

        found: dict[str, ItemResult] = {}
        for part in self._parts():
            for record in pq.read_table(part).to_pylist():
                found[str(record["id"])] = ItemResult.from_record(record)
        found.update(self._journal.load())
        return found

    def append(self, result: ItemResult) -> None:
        self._journal.append(result)
        self._pending += 1
        if self._pending >= self.part_size:
            self._flush()

    def close(self) -> None:
        self._flush()
        self._journal.close()


def open_store(path: str | os.PathLike[str]) -> Store:
    """The store for ``path`` by its suffix: ``.jsonl`` or ``.parquet``."""
    suffix = Path(path).suffix.lower()
    if suffix == ".jsonl":
        return JsonlStore(path)
    if suffix == ".parquet":
        return ParquetStore(path)
    raise ConfigError(
        f"Cannot store batch results in {os.fspath(path)!r}",
        "give output= a path ending in .jsonl or .parquet",
    )
