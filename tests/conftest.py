"""Shared fixtures. Every wait in a test is bounded; no test sleeps to wait for something."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

#: Multiply every bounded wait in the tests by this (slow CI machines may set it higher).
TIMEOUT_FACTOR = float(os.environ.get("NBTOOLKIT_TEST_TIMEOUT_FACTOR", "1"))


def timeout(seconds: float) -> float:
    """A bounded wait, scaled by NBTOOLKIT_TEST_TIMEOUT_FACTOR."""
    return seconds * TIMEOUT_FACTOR


@pytest.fixture(scope="session")
def server() -> Iterator:
    """One local server (real sockets on 127.0.0.1, the real offline engine) for the whole run.

    Tests that change ``server.faults`` must restore ``Faults()`` (use the ``faulty_server`` fixture).
    """
    from nbtoolkit.local import start

    srv = start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def faulty_server(server) -> Iterator:  # type: ignore[no-untyped-def]
    """The session server with faults reset before and after the test."""
    from nbtoolkit.local import Faults

    server.faults = Faults()
    try:
        yield server
    finally:
        server.faults = Faults()


@pytest.fixture(scope="session")
def engine(server):  # type: ignore[no-untyped-def]
    """The engine the session server uses (TTS for test speech, ASR for checking words)."""
    return server.engine


def text_deltas(events: Iterable[Any]) -> Iterator[str]:
    """The text pieces of a ``client.stream(...)``, in order (the other events are skipped)."""
    for event in events:
        if event.type == "text.delta":
            yield event.delta
