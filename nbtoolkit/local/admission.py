"""Admission by capacity: the local server takes only the sessions its cores can answer in time, and
stops a client's engine work when the client goes.

**The capacity rule.** A realtime or dialog session costs the engine ``c`` CPU-seconds per
utterance (ASR, the answer, its TTS) and speaks once every ``T`` seconds, so it needs ``d = c / T``
cores on average (its *demand*). With ``f`` cores free for the engine, at a target load ``ρ``, the
server serves

    max_sessions = max(n, floor(ρ · f / d)) = max(n, floor(ρ · f · T / c))

sessions. ``ρ`` defaults to :data:`TARGET_LOAD` (0.75): turns land at random moments, and below
that load a turn seldom waits for more than one other turn's work, so first-audio latency stays
close to one session's. ``n`` sessions, one per engine thread, are always admitted: a
conversation at human pace never needs a whole core (real read speech measured 0.27 of one), so a
notebook can always hold a session or two however busy the machine is.

* ``d`` is **measured** while the server runs: the CPU time the server process used while sessions
  were open (``time.process_time``: ASR, TTS and answers on the engine threads, and the frames,
  JSON and VAD on the event loop; less the time spent loading models, which load on first use and
  would otherwise count 1–3 CPU-seconds against the first sessions — measured, that made a fresh
  server refuse the 9th of 10 eSpeak sessions after one warm-up session) divided by the seconds
  the sessions were connected, both
  averaged over the last :data:`WINDOW_S` seconds of activity (an exponential average that holds
  its value while no session is open). Before anything was measured the server assumes
  :data:`PRIOR_DEMAND` (real read speech: about one CPU-second per utterance, one utterance every
  six seconds), worth :data:`PRIOR_WEIGHT_S` session-seconds of measurement.
* ``f`` is the engine threads' count ``n`` (one per core), less what other programs take: the
  1-minute load average minus this process's own CPU use (its 1-minute average), never below
  :data:`MIN_FREE_CORES`. On a machine shared with other work the server admits fewer sessions
  rather than starve the ones it has. (Without ``os.getloadavg``, on Windows, ``f = n``.)

``create_app(..., max_sessions=N)`` / ``nbtoolkit serve --max-sessions N`` fixes the limit instead;
``target_load`` changes ``ρ``.

**Refused at connect, at once.** A WebSocket upgrade over the limit gets an HTTP **429** handshake
response — never an accepted socket that starves — with ``Retry-After`` and DashScope's error body
``{request_id, code: "Throttling.AllocationQuota", message}`` whose message names the limit. That is
how DashScope refuses any request before it is served (HTTP status + JSON ``{code, message,
request_id}``; codes per https://www.alibabacloud.com/help/en/model-studio/error-code); the
``websockets`` client raises ``InvalidStatus`` with the response, websocket-client (under the
dashscope SDK) ``WebSocketBadStatusException`` with ``status_code``, ``resp_headers`` and
``resp_body``. Unauthenticated upgrades pass through to the route, which refuses them (1008).

**HTTP generation** (Qwen-Audio and the audio-modalities route) runs at most ``n`` requests at once
with up to :data:`QUEUE_PER_WORKER` ``· n`` more waiting; beyond that a request gets 429
``Throttling.RateQuota`` with ``Retry-After`` (the queue's expected wait, from the measured cost of a
request).

**Work stops when its client goes.** Every admitted connection gets an engine
:class:`~nbtoolkit.local.routes.Lane`; the route's tasks inherit it. When the client disconnects
(a WebSocket close or drop, an HTTP disconnect during or after the body) the lane is closed — its
queued engine jobs are cancelled and nothing new starts for it, such as the TTS of the next clause —
and the route's task is cancelled. A job already inside pocketsphinx or eSpeak finishes (one C call
cannot be interrupted), and its result is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nbtoolkit.errors import ConfigError
from nbtoolkit.local.auth import _token_ok, origin_allowed
from nbtoolkit.local.engine._loading import load_cpu_seconds
from nbtoolkit.local.routes import ENGINE_WORKERS, Lane, current_lane

__all__ = [
    "MIN_FREE_CORES",
    "PRIOR_DEMAND",
    "PRIOR_WEIGHT_S",
    "QUEUE_PER_WORKER",
    "REQUEST_PATHS",
    "SESSION_PATHS",
    "SESSION_RETRY_AFTER_S",
    "TARGET_LOAD",
    "WINDOW_S",
    "AdmissionControl",
    "Capacity",
    "Refusal",
    "Seat",
    "work_cpu_seconds",
]

#: WebSocket paths whose connections are sessions (Qwen-Omni realtime, MultiModalDialog).
SESSION_PATHS = frozenset({"/api-ws/v1/realtime", "/api-ws/v1/inference"})
#: HTTP paths whose requests run engine work and wait in the request queue.
REQUEST_PATHS = frozenset(
    {"/api/v1/services/aigc/multimodal-generation/generation", "/audio/chat/completions"}
)
#: Default target load ρ of the engine threads.
TARGET_LOAD = 0.75
#: CPU-seconds per session-second assumed before anything is measured.
PRIOR_DEMAND = 1.0 / 6.0
#: The fewest cores the server counts on, however loaded the machine looks.
MIN_FREE_CORES = 0.25
#: How many session-seconds of measurement the prior is worth.
PRIOR_WEIGHT_S = 10.0
#: Time constant of the demand average, in seconds of session activity.
WINDOW_S = 30.0
#: Requests that may wait per engine thread before HTTP generation answers 429.
QUEUE_PER_WORKER = 2
#: The Retry-After of a refused session: sessions end at human pace, so this is a polite guess.
SESSION_RETRY_AFTER_S = 10


@dataclass(frozen=True)
class Refusal:
    """Why a connection was refused: the 429's code, message and Retry-After seconds."""

    code: str
    message: str
    retry_after: int


class Seat:
    """An admitted session: its engine lane, held until :meth:`Capacity.leave`."""

    def __init__(self, lane: Lane) -> None:
        self.lane = lane


class Capacity:
    """How many sessions and requests the engine threads can serve; see the module docstring.

    Thread-safe: requests end on the event loop, tests read it from their own threads.
    """

    def __init__(
        self,
        workers: int = ENGINE_WORKERS,
        *,
        max_sessions: int | None = None,
        target_load: float = TARGET_LOAD,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] | None = None,
        load_average: Callable[[], float | None] | None = None,
    ) -> None:
        """``clock``, ``cpu_clock`` (this process's CPU seconds, model loading left out: default
        :func:`work_cpu_seconds`) and ``load_average`` (the machine's 1-minute load average, None
        where unknown) are the measurements the rule reads; tests inject their own."""
        if max_sessions is not None and max_sessions < 1:
            raise ConfigError(
                f"max_sessions must be at least 1, not {max_sessions}",
                "leave it unset to derive the limit from the cores",
            )
        if not 0 < target_load <= 1:
            raise ConfigError(
                f"target_load must be above 0 and at most 1, not {target_load}",
                f"use the default {TARGET_LOAD}, or e.g. 0.5 for snappier answers to fewer sessions",
            )
        self.workers = workers
        self.fixed = max_sessions
        self.target_load = target_load
        self._clock, self._cpu_clock = clock, cpu_clock or work_cpu_seconds
        self._load_average = load_average or _load_average
        self._lock = threading.Condition()
        self.sessions = 0
        self.requests = 0
        self._cpu = PRIOR_DEMAND * PRIOR_WEIGHT_S  # decayed CPU-seconds of sessions' jobs
        self._session_s = PRIOR_WEIGHT_S  # decayed session-seconds
        self._t = clock()
        self._cpu_at = self._cpu_clock()
        self._own = 0.0  # this process's CPU use, cores (1-minute average)
        self._own_at = (self._t, self._cpu_at)
        self._request_cost = 1.0  # average engine-seconds of one HTTP request

    # ------------------------------------------------------------------ the estimate
    def _advance(self) -> None:
        now, cpu = self._clock(), self._cpu_clock()
        dt, used = now - self._t, cpu - self._cpu_at
        self._t, self._cpu_at = now, cpu
        if self.sessions and dt > 0:
            # both spread evenly over dt, decayed as they accrued
            f = math.exp(-dt / WINDOW_S)
            self._session_s = self._session_s * f + self.sessions * WINDOW_S * (1 - f)
            self._cpu = self._cpu * f + used / dt * WINDOW_S * (1 - f)

    @property
    def demand(self) -> float:
        """Cores one session needs on average (CPU-seconds of engine work per second)."""
        with self._lock:
            self._advance()
            return self._cpu / self._session_s

    @property
    def free_cores(self) -> float:
        """Cores the engine can count on: ``n`` less other programs' load (see the module doc)."""
        load = self._load_average()
        if load is None:
            return float(self.workers)
        with self._lock:
            now, cpu = self._clock(), self._cpu_clock()
            then, cpu_then = self._own_at
            if now - then >= 1.0:
                f = math.exp(-(now - then) / 60.0)  # the load average's own time constant
                self._own = self._own * f + (cpu - cpu_then) / (now - then) * (1 - f)
                self._own_at = (now, cpu)
            others = max(0.0, load - self._own)
        return min(float(self.workers), max(MIN_FREE_CORES, self.workers - others))

    @property
    def max_sessions(self) -> int:
        """The session limit now: the fixed one, or ``max(n, floor(ρ · f / d))``."""
        if self.fixed is not None:
            return self.fixed
        supply = self.target_load * self.free_cores
        return max(self.workers, math.floor(supply / max(self.demand, 1e-6)))

    @property
    def max_requests(self) -> int:
        """HTTP generation requests running or waiting at once."""
        return self.workers * (1 + QUEUE_PER_WORKER)

    def wait_for(self, predicate: Callable[[Capacity], bool], timeout: float) -> bool:
        """Block until ``predicate(self)`` holds (True) or ``timeout`` seconds pass (False); it is
        checked whenever a session or request starts or ends."""
        with self._lock:
            return self._lock.wait_for(lambda: predicate(self), timeout)

    # ------------------------------------------------------------------ sessions
    def join(self) -> Seat | Refusal:
        """A seat for a new session, or why there is none."""
        limit = self.max_sessions
        with self._lock:
            if self.sessions < limit:
                self._advance()
                self.sessions += 1
                self._lock.notify_all()
                return Seat(Lane())
            active = self.sessions
        return Refusal(
            "Throttling.AllocationQuota", self._full(active, limit), SESSION_RETRY_AFTER_S
        )

    def _full(self, active: int, limit: int) -> str:
        if self.fixed is not None:
            why = "the limit set with max_sessions / nbtoolkit serve --max-sessions"
        else:
            why = (
                f"what {self.free_cores:.2f} free cores of {self.workers} answer in time at "
                f"{self.target_load:.0%} load, each session needing {self.demand:.3f} of a core"
            )
        return (
            f"The local server is serving {active} realtime/dialog sessions, its limit of {limit} "
            f"({why}) — try again in {SESSION_RETRY_AFTER_S} s, end another session, or start "
            "another server"
        )

    def leave(self, seat: Seat) -> None:
        """The session is over: its lane is closed and its seat is free."""
        seat.lane.close()
        with self._lock:
            self._advance()
            self.sessions -= 1
            self._lock.notify_all()

    # ------------------------------------------------------------------ HTTP requests
    def start_request(self) -> Lane | Refusal:
        """A lane for an HTTP generation request, or why it must wait elsewhere."""
        with self._lock:
            if self.requests < self.max_requests:
                self.requests += 1
                self._lock.notify_all()
                return Lane()
            waiting = self.requests - self.workers + 1
            wait = max(1, math.ceil(self._request_cost * waiting / self.workers))
        message = (
            f"The local server has {self.requests} generation requests running or queued, its "
            f"limit of {self.max_requests} ({self.workers} engine threads, {QUEUE_PER_WORKER} "
            f"waiting per thread) — retry after {wait} s or send fewer requests at once"
        )
        return Refusal("Throttling.RateQuota", message, wait)

    def end_request(self, lane: Lane) -> None:
        lane.close()
        with self._lock:
            self.requests -= 1
            self._lock.notify_all()
            if lane.busy > 0:
                self._request_cost += 0.2 * (lane.busy - self._request_cost)


def work_cpu_seconds() -> float:
    """This process's CPU seconds less those spent loading models: a model loads once, on the
    first session that needs it, and is no session's steady cost."""
    return time.process_time() - load_cpu_seconds()


def _load_average() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


class AdmissionControl:
    """ASGI middleware applying a :class:`Capacity` to sessions and generation requests."""

    def __init__(self, app: ASGIApp, capacity: Capacity) -> None:
        self.app = app
        self.capacity = capacity

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind, path = scope["type"], scope.get("path", "")
        if kind == "websocket" and path in SESSION_PATHS and _authorized(scope):
            seat = self.capacity.join()
            if isinstance(seat, Refusal):
                await _refuse_upgrade(receive, send, seat)
                return
            try:
                await _run_until_gone(self.app, scope, receive, send, seat.lane)
            finally:
                self.capacity.leave(seat)
        elif kind == "http" and path in REQUEST_PATHS and _authorized(scope):
            lane = self.capacity.start_request()
            if isinstance(lane, Refusal):
                await _refuse_http(send, lane)
                return
            try:
                await _run_until_gone(self.app, scope, receive, send, lane)
            finally:
                self.capacity.end_request(lane)
        else:
            await self.app(scope, receive, send)


def _authorized(scope: Scope) -> bool:
    """Only clients the route will serve are counted; the route refuses the rest itself."""
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    token: str = scope["app"].state.token
    return _token_ok(token, headers.get("authorization")) and origin_allowed(headers.get("origin"))


async def _run_until_gone(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, lane: Lane
) -> None:
    """Run ``app`` for one connection on ``lane``; when the client goes, close the lane and cancel
    the app's task (its queued engine work is dropped, and nothing new starts for it)."""
    gone = asyncio.Event()
    body_read = asyncio.Event()

    async def watched_receive() -> Message:
        message = await receive()
        if message["type"] in ("websocket.disconnect", "http.disconnect"):
            gone.set()
        elif message["type"] == "http.request" and not message.get("more_body", False):
            body_read.set()
        return message

    # what it wraps, for those who must reach the server's transport (faults.abort_connection)
    watched_receive.__wrapped__ = receive  # type: ignore[attr-defined]

    async def serve() -> None:
        await app(scope, watched_receive, send)

    async def watch_http() -> None:
        # After the body, the next message of an HTTP connection is its disconnect (uvicorn sends
        # it when the client goes, or once the response is complete).
        await body_read.wait()
        if (await receive())["type"] == "http.disconnect":
            gone.set()

    token = current_lane.set(lane)
    try:  # the app's task copies the context, so every task it starts works on this lane
        task = asyncio.create_task(serve())
    finally:
        current_lane.reset(token)
    watchers: list[asyncio.Task[object]] = [asyncio.create_task(gone.wait())]
    if scope["type"] == "http":
        watchers.append(asyncio.create_task(watch_http()))
    try:
        await asyncio.wait([task, watchers[0]], return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            lane.close()
            task.cancel()
            await asyncio.wait([task])
            return  # the client is gone: nothing to answer and nobody to tell
        task.result()
    finally:
        for watcher in watchers:
            watcher.cancel()
        if not task.done():  # this middleware itself was cancelled (server shutdown)
            lane.close()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _error_body(refusal: Refusal) -> bytes:
    return json.dumps(
        {"request_id": secrets.token_hex(16), "code": refusal.code, "message": refusal.message}
    ).encode()


def _headers(body: bytes, refusal: Refusal) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(refusal.retry_after).encode()),
    ]


async def _refuse_upgrade(receive: Receive, send: Send, refusal: Refusal) -> None:
    """HTTP 429 instead of the WebSocket upgrade (the ASGI denial-response extension)."""
    await receive()  # websocket.connect
    body = _error_body(refusal)
    await send(
        {"type": "websocket.http.response.start", "status": 429, "headers": _headers(body, refusal)}
    )
    await send({"type": "websocket.http.response.body", "body": body})


async def _refuse_http(send: Send, refusal: Refusal) -> None:
    body = _error_body(refusal)
    # the body is never read, so the connection cannot be reused
    headers = [*_headers(body, refusal), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": 429, "headers": headers})
    await send({"type": "http.response.body", "body": body})
