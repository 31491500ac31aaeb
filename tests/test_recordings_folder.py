"""The recordings folder is bounded by count and size, oldest takes first, never the current take;
the bounds come from the environment and can be lifted."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from nbtoolkit.audio import Clip
from nbtoolkit.widgets import Recorder
from nbtoolkit.widgets.recordings import (
    DEFAULT_MAX_FILES,
    DEFAULT_MAX_MB,
    Retention,
    prune,
)


def takes(folder: Path, sizes: list[int]) -> list[Path]:
    """Takes named and dated oldest first (one second apart), each ``size`` bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, size in enumerate(sizes):
        path = folder / f"rec-20260101-0000{i:02d}-000000.wav"
        path.write_bytes(b"\0" * size)
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
        paths.append(path)
    return paths


def left(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_count_bound_deletes_the_oldest_takes_first(tmp_path: Path) -> None:
    paths = takes(tmp_path, [10] * 6)
    deleted = prune(tmp_path, current=paths[-1], retention=Retention(max_files=3, max_bytes=None))
    assert sorted(deleted) == paths[:3]
    assert left(tmp_path) == [p.name for p in paths[3:]]


def test_size_bound_counts_the_current_take_and_deletes_oldest_first(tmp_path: Path) -> None:
    paths = takes(tmp_path, [100, 100, 100, 100, 250])
    # 250 (current) + 100 + 100 = 450 fits under 500; one more would not
    prune(tmp_path, current=paths[-1], retention=Retention(max_files=None, max_bytes=500))
    assert left(tmp_path) == [p.name for p in paths[2:]]


def test_the_current_take_survives_even_when_it_alone_breaks_both_bounds(tmp_path: Path) -> None:
    # the current take is also the oldest file here (a clock set back): still never deleted
    current, *others = takes(tmp_path, [1000, 10, 10])
    prune(tmp_path, current=current, retention=Retention(max_files=0, max_bytes=1))
    assert left(tmp_path) == [current.name]
    assert [p.exists() for p in others] == [False, False]


def test_files_that_are_not_takes_are_never_touched(tmp_path: Path) -> None:
    paths = takes(tmp_path, [10, 10, 10])
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "interview.wav").write_bytes(b"\0" * 10)
    prune(tmp_path, current=paths[-1], retention=Retention(max_files=1, max_bytes=None))
    assert left(tmp_path) == ["interview.wav", "notes.txt", paths[-1].name]


def test_environment_sets_the_bounds_and_off_lifts_them() -> None:
    assert Retention.from_env({}) == Retention(DEFAULT_MAX_FILES, int(DEFAULT_MAX_MB * 1e6))
    assert Retention.from_env(
        {"NBTOOLKIT_RECORDINGS_MAX_FILES": "5", "NBTOOLKIT_RECORDINGS_MAX_MB": "1.5"}
    ) == Retention(5, 1_500_000)
    assert Retention.from_env(
        {"NBTOOLKIT_RECORDINGS_MAX_FILES": "off", "NBTOOLKIT_RECORDINGS_MAX_MB": "OFF"}
    ) == Retention(None, None)


def test_both_bounds_off_deletes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBTOOLKIT_RECORDINGS_MAX_FILES", "off")
    monkeypatch.setenv("NBTOOLKIT_RECORDINGS_MAX_MB", "off")
    paths = takes(tmp_path, [10] * (DEFAULT_MAX_FILES + 5))
    assert prune(tmp_path, current=paths[-1]) == []
    assert len(left(tmp_path)) == DEFAULT_MAX_FILES + 5


@pytest.mark.parametrize("bad", ["ten", "-3"])
def test_a_bad_value_is_logged_and_the_default_used(
    bad: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="nbtoolkit.widgets.recordings"):
        retention = Retention.from_env({"NBTOOLKIT_RECORDINGS_MAX_FILES": bad})
    assert retention.max_files == DEFAULT_MAX_FILES
    assert "NBTOOLKIT_RECORDINGS_MAX_FILES" in caplog.text and "'off'" in caplog.text


def test_recorder_keeps_the_folder_bounded_and_the_last_take_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NBTOOLKIT_RECORDINGS_MAX_FILES", "2")
    tone = Clip.from_array(
        (8000 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000)).astype(np.int16), 16000
    )
    rec = Recorder(save_dir=tmp_path)
    paths = []
    for _ in range(4):
        assert rec.simulate(tone) is not None
        paths.append(Path(rec.path))
    assert len(set(paths)) == 4
    assert left(tmp_path) == sorted(p.name for p in paths[-2:])
    assert np.array_equal(Recorder.recover(paths[-1]).samples, tone.samples)
