"""Turning what the user passes (Clips, paths, a DataFrame) into numbered batch items with ids."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from nbtoolkit.audio.clip import Clip
from nbtoolkit.errors import ConfigError

__all__ = ["BatchItem", "to_items"]


@dataclass(frozen=True)
class BatchItem:
    """One unit of work: the audio ``source`` (a Clip or a path) and an optional reference text."""

    id: str
    source: Any
    reference: str | None = None


def _text(value: Any) -> str | None:
    """A reference cell as text; missing values (None, NaN, pd.NA) are None."""
    if value is None:
        return None
    try:
        if value != value:  # NaN is the one value not equal to itself
            return None
    except (TypeError, ValueError):  # pd.NA refuses to be a bool
        return None
    return str(value)


def _from_dataframe(frame: Any) -> list[BatchItem]:
    if "path" not in frame.columns:
        raise ConfigError(
            f"The DataFrame has no 'path' column (columns: {list(frame.columns)})",
            "name the audio column 'path'; 'reference' and 'id' columns are optional",
        )
    ids = frame["id"] if "id" in frame.columns else frame["path"]
    refs = frame["reference"] if "reference" in frame.columns else [None] * len(frame)
    return [
        BatchItem(str(i), p, _text(r)) for i, p, r in zip(ids, frame["path"], refs, strict=True)
    ]


def _item(index: int, value: Any) -> BatchItem:
    if isinstance(value, BatchItem):
        return value
    if isinstance(value, (str, os.PathLike)):
        return BatchItem(os.fspath(value), value)
    if isinstance(value, Clip):
        return BatchItem(str(index), value)
    raise ConfigError(
        f"Item {index} is a {type(value).__name__}, not a Clip or a path",
        "pass Clips, file paths, or a DataFrame with a 'path' column",
    )


def to_items(items: Any) -> list[BatchItem]:
    """Batch items from Clips, paths, BatchItems or a DataFrame (``path``, optional ``reference``
    and ``id`` columns). Ids default to the path, or the position for Clips; they must be unique."""
    if hasattr(items, "columns") and hasattr(items, "__getitem__"):
        found = _from_dataframe(items)
    elif isinstance(items, (str, os.PathLike, Clip)):
        found = [_item(0, items)]
    elif isinstance(items, Iterable):
        found = [_item(i, v) for i, v in enumerate(items)]
    else:
        raise ConfigError(
            f"Cannot make batch items from a {type(items).__name__}",
            "pass a list of Clips or paths, or a DataFrame with a 'path' column",
        )
    repeated = [i for i, n in Counter(item.id for item in found).items() if n > 1]
    if repeated:
        raise ConfigError(
            f"Item ids must be unique; repeated: {repeated[:5]}",
            "add an 'id' column to the DataFrame (results are resumed by id)",
        )
    return found
