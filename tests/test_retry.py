"""Retrying: the policy's decisions, a long Retry-After raised at once, WebSocket connects that
follow the policy (real sockets against the local server's injected faults)."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from conftest import timeout

from nbtoolkit.backends._dialog_sdk import error_from
from nbtoolkit.backends.dialog import Dialog
from nbtoolkit.backends.omni import OmniRealtime
from nbtoolkit.backends.qwen_audio import QwenAudio
from nbtoolkit.errors import (
    AuthError,
    BackendError,
    ConnectionLost,
    ProtocolError,
    RateLimited,
    ServerError,
)
from nbtoolkit.ledger import Ledger
from nbtoolkit.local import Faults
from nbtoolkit.retry import NO_RETRY, RetryPolicy, retrying, retrying_async

FAST = RetryPolicy(max_retries=3, initial=0.01, maximum=0.05)


def bounded(call: Callable[[], Any], seconds: float) -> Any:
    """``call()`` on a daemon thread; fails the test if it has not returned within ``seconds``
    (a client that sleeps out a long Retry-After would block for minutes)."""
    out: queue.Queue[tuple[bool, Any]] = queue.Queue()

    def run() -> None:
        try:
            out.put((True, call()))
        except BaseException as exc:  # handed to the test thread
            out.put((False, exc))

    threading.Thread(target=run, daemon=True).start()
    try:
        ok, value = out.get(timeout=timeout(seconds))
    except queue.Empty:
        pytest.fail(f"the call was still running after {seconds} s")
    if not ok:
        raise value
    return value


# ------------------------------------------------------------------------------- the policy
def test_a_retry_after_beyond_the_cap_means_give_up_now() -> None:
    policy = RetryPolicy(max_retries=5, retry_after_cap=120.0)
    too_long = RateLimited("slow down", "wait", retry_after=300.0, status=429)
    assert policy.gives_up(300.0) and not policy.gives_up(120.0) and not policy.gives_up(None)
    assert policy.next_wait(0, too_long) is None
    within = RateLimited("slow down", "wait", retry_after=7.0, status=429)
    assert policy.next_wait(0, within) == 7.0


def test_the_policy_retries_only_what_may_succeed_and_only_so_often() -> None:
    policy = RetryPolicy(max_retries=2, initial=1.0, maximum=1.0)
    assert policy.next_wait(0, ServerError("down", status=503)) is not None
    assert policy.next_wait(0, ConnectionLost("no route")) is not None  # a failed connect
    assert policy.next_wait(0, ServerError("closed", status=1011)) is not None
    assert policy.next_wait(2, ServerError("down", status=503)) is None  # retries spent
    assert policy.next_wait(0, AuthError("bad key", status=401)) is None
    assert policy.next_wait(0, ProtocolError("invalid", status=400)) is None
    assert policy.next_wait(0, ProtocolError("not JSON")) is None
    assert policy.next_wait(0, ServerError("down", status=503), retryable=False) is None


def test_retrying_raises_a_long_retry_after_on_the_first_attempt() -> None:
    calls = []

    def attempt() -> None:
        calls.append(1)
        raise RateLimited("slow down", "wait", retry_after=300.0, status=429)

    with pytest.raises(RateLimited) as info:
        bounded(lambda: retrying(attempt, RetryPolicy(max_retries=5)), 5)
    assert info.value.retry_after == 300.0 and len(calls) == 1


def test_retrying_async_retries_until_the_attempt_succeeds() -> None:
    calls = []

    async def attempt() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ServerError("down", status=503)
        return "open"

    assert asyncio.run(retrying_async(attempt, FAST)) == "open" and len(calls) == 3
    calls.clear()
    with pytest.raises(ServerError):
        asyncio.run(retrying_async(attempt, NO_RETRY))
    assert len(calls) == 1


# ------------------------------------------------------------------------------- on the wire
def test_qwen_audio_raises_rate_limited_at_once_when_told_to_wait_longer_than_the_cap(
    faulty_server: Any,
) -> None:
    faulty_server.faults = Faults(status=429, retry_after=300, fail_times=2)
    qa = QwenAudio(faulty_server.endpoints, ledger=Ledger(), retry=RetryPolicy(max_retries=3))
    with pytest.raises(RateLimited) as info:
        bounded(lambda: qa.ask(text="what is one plus one"), 20)
    assert info.value.retry_after == 300 and info.value.status == 429
    assert "wait 300 s" in str(info.value)
    assert faulty_server.faults.fail_times == 1  # one request, no second one refused again


@pytest.mark.parametrize("status", [429, 500])
def test_omni_connect_refused_with_a_retryable_status_follows_the_policy(
    faulty_server: Any, status: int
) -> None:
    faulty_server.faults = Faults(status=status, fail_times=2)

    async def main() -> str:
        async with OmniRealtime(faulty_server.endpoints, retry=FAST, ledger=Ledger()) as rt:
            return rt.session_id or ""

    assert bounded(lambda: asyncio.run(main()), 30).startswith("sess")
    assert faulty_server.faults.fail_times == 0  # both refusals were met and retried


def test_omni_connect_without_retries_reports_the_refusal(faulty_server: Any) -> None:
    faulty_server.faults = Faults(status=429, fail_times=1)

    async def main() -> None:
        async with OmniRealtime(faulty_server.endpoints, retry=NO_RETRY, ledger=Ledger()):
            pass

    with pytest.raises(RateLimited) as info:
        bounded(lambda: asyncio.run(main()), 30)
    assert "quota" in str(info.value)


@pytest.mark.parametrize("status", [429, 503])
def test_dialog_connect_refused_with_a_retryable_status_follows_the_policy(
    faulty_server: Any, status: int
) -> None:
    faulty_server.faults = Faults(status=status, fail_times=2)

    def open_and_close() -> str:
        with Dialog(faulty_server.endpoints, retry=FAST, ledger=Ledger(), timeout=timeout(20)) as d:
            return d.state

    assert bounded(open_and_close, 60) == "Listening"
    assert faulty_server.faults.fail_times == 0


def test_dialog_rate_limit_says_what_it_means_and_what_to_do(faulty_server: Any) -> None:
    faulty_server.faults = Faults(status=429, fail_times=1)

    def open_dialog() -> None:
        with Dialog(faulty_server.endpoints, retry=NO_RETRY, ledger=Ledger(), timeout=timeout(20)):
            pass

    with pytest.raises(RateLimited) as info:
        bounded(open_dialog, 60)
    err: BackendError = info.value
    assert "check the request" not in str(err)
    assert "rate limiting" in err.problem and "quota" in err.problem
    assert err.fix is not None and "wait" in err.fix and "fewer requests" in err.fix


def _busy_server(attempts: list[int]) -> Any:
    """A WebSocket server on 127.0.0.1 that refuses every upgrade with 429 and Retry-After: 300."""
    from websockets.asyncio.server import serve

    def refuse(connection: Any, request: Any) -> Any:
        attempts.append(1)
        response = connection.respond(429, "busy\n")
        response.headers["Retry-After"] = "300"
        return response

    async def never(ws: Any) -> None:  # every upgrade is refused before it gets here
        await ws.close()

    return serve(never, "127.0.0.1", 0, process_request=refuse)


def test_omni_connect_told_to_wait_longer_than_the_cap_raises_at_once(server: Any) -> None:
    attempts: list[int] = []

    async def main() -> None:
        async with _busy_server(attempts) as busy:
            port = busy.sockets[0].getsockname()[1]
            url = f"ws://127.0.0.1:{port}/api-ws/v1/realtime"
            endpoints = replace(server.endpoints, realtime_url=url)
            async with OmniRealtime(endpoints, retry=RetryPolicy(max_retries=5), ledger=Ledger()):
                pass

    with pytest.raises(RateLimited) as info:
        bounded(lambda: asyncio.run(main()), 20)
    assert info.value.retry_after == 300 and info.value.status == 429
    assert len(attempts) == 1


def test_dialog_handshake_refusal_keeps_the_servers_retry_after() -> None:
    from websocket import WebSocketBadStatusException

    refused = WebSocketBadStatusException(
        "Handshake status %d %s", 429, "Too Many Requests", {"retry-after": "300"}
    )
    err = error_from(refused, None)
    assert isinstance(err, RateLimited) and err.retry_after == 300 and err.status == 429
    assert RetryPolicy(max_retries=5).next_wait(0, err) is None


def test_a_long_wait_before_a_retry_is_a_warning_that_says_why_and_how_long(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    import nbtoolkit.retry

    monkeypatch.setattr(nbtoolkit.retry, "NOTICEABLE_WAIT_S", 0.1)  # 2 s in use; shorter here
    calls: list[int] = []

    def busy_then_free() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RateLimited("the server is busy", "try later", status=429, retry_after=0.2)
        if len(calls) == 2:
            raise RateLimited("the server is busy", "try later", status=429, retry_after=0.01)
        return "answered"

    with caplog.at_level(logging.INFO, logger="nbtoolkit.retry"):
        assert retrying(busy_then_free, RetryPolicy(max_retries=2)) == "answered"
    levels = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert levels == [
        (logging.WARNING, "the server is busy — retry 1 of 2 in 0.20 s"),
        (logging.INFO, "the server is busy — retry 2 of 2 in 0.01 s"),
    ]
