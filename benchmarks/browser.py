"""Widgets in a real browser: mic chunk latency browser → kernel, and 30 s of streamed playback.

Runs the two widget browser tests (headless Debian Chromium driving an isolated JupyterLab, see
tests/browser/) and reads the figures they write to tests/artifacts/:

* ``recorder_metrics.json`` — for each PCM chunk the Recorder sends, the time from the browser
  stamping it (``performance.timeOrigin + now()``) to the kernel receiving it (``time.time()``);
  same machine, same wall clock. Goal: p95 ≤ 150 ms.
* ``player_metrics.json`` — the Player fed 30 s of 24 kHz PCM from the kernel in chunks; the
  AudioWorklet counts underruns (a render quantum with nothing queued). Goal: 0.

Files older than this run are not read: a failed or skipped test shows as MISS, not as old figures.
Run: ``.venv/bin/python benchmarks/browser.py`` (about a minute; needs /usr/bin/chromium).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import REPO, Row, print_table, quiet_environment

ARTIFACTS = REPO / "tests" / "artifacts"
TESTS = [
    "tests/browser/test_recorder_browser.py::"
    "test_recorder_streams_the_microphone_to_the_kernel_with_the_words_intact",
    "tests/browser/test_player_browser.py::"
    "test_player_streams_30_s_gaplessly_and_flush_stops_it_at_once",
]
P95_GOAL_MS = 150.0


def fresh(path: Path, since: float) -> dict[str, Any] | None:
    """The JSON at ``path`` if it was written after ``since`` (epoch seconds), else None."""
    if not path.exists() or path.stat().st_mtime < since:
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def main() -> None:
    if not Path("/usr/bin/chromium").exists():
        print("SKIP: /usr/bin/chromium is missing (make system-deps installs it)")
        return
    since = time.time()
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "browser", *TESTS]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=quiet_environment(), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        print(done.stdout[-3000:], done.stderr[-2000:], sep="\n")
    recorder = fresh(ARTIFACTS / "recorder_metrics.json", since)
    player = fresh(ARTIFACTS / "player_metrics.json", since)

    rows = []
    if recorder is None:
        rows.append(Row("mic chunk latency browser → kernel", "no figures", "—", "", "", False))
    else:
        p95 = recorder["latency_p95_ms"]
        rows += [
            Row(
                f"mic chunk latency browser → kernel, p95 of {recorder['chunks']} chunks",
                f"{p95:.0f} ms",
                "—",
                "",
                f"p95 ≤ {P95_GOAL_MS:.0f} ms",
                p95 <= P95_GOAL_MS,
            ),
            Row(
                "  p50 / max",
                f"{recorder['latency_p50_ms']:.0f} / {recorder['latency_max_ms']:.0f} ms",
                "",
                "",
                "",
                None,
            ),
            Row(
                "  words heard in the kernel",
                repr(recorder["heard"]),
                f"said {recorder['phrase']!r}",
                "",
                "",
                None,
            ),
        ]
    if player is None:
        rows.append(Row("streamed playback underruns", "no figures", "—", "", "", False))
    else:
        rows.append(
            Row(
                f"underruns in {player['fed_ms'] / 1000:.0f} s of streamed playback",
                str(player["underruns"]),
                "—",
                "",
                "0",
                player["underruns"] == 0,
            )
        )
    print_table(
        f"browser widgets (headless Chromium + JupyterLab; tests ran {seconds:.0f} s)", rows
    )


if __name__ == "__main__":
    main()
