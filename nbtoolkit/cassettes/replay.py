"""The replay server: answers every protocol from a cassette, comparing each request with the recording.

A request that does not match is refused in the protocol's own error shape (HTTP 400
``CassetteMismatch``; a realtime ``error`` event; a dialog ``task-failed``) carrying the mismatch text,
and is added to :attr:`ReplayServer.mismatches`. Nothing is ever answered from anywhere else.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import Response, StreamingResponse
from starlette.websockets import WebSocketDisconnect

from nbtoolkit.cassettes.matching import (
    MatchRules,
    Mismatch,
    audio_seconds,
    first_difference,
    message_name,
    payload_difference,
)
from nbtoolkit.cassettes.payload import (
    REDACTED,
    WsContext,
    decode_payload,
    encode_body,
    encode_ws,
)
from nbtoolkit.cassettes.proxy import sendable_close_code
from nbtoolkit.cassettes.serving import (
    HOP_HEADERS,
    UPLOAD_PREFIX,
    WS_REALTIME,
    dashscope_error,
    new_app,
    refuse_unauthorised,
    rewrite_upload_host,
    start_app,
)
from nbtoolkit.cassettes.store import Cassette
from nbtoolkit.config import Endpoints, scrub_secrets
from nbtoolkit.local.auth import check_websocket
from nbtoolkit.local.server import LocalServer

__all__ = ["MISMATCH_CODE", "Pace", "ReplayServer"]

log = logging.getLogger("nbtoolkit.cassettes")

MISMATCH_CODE = "CassetteMismatch"
Pace = Literal["recorded", "fast"]
#: After a mismatch the connection stays open (so the client reads the error, not a drop) this long.
_DRAIN_SECONDS = 30.0
#: Messages that end a session (realtime ``session.finish``, dialog ``Stop``): answered by closing.
_GOODBYES = frozenset({"session.finish", "Stop"})


@dataclass
class _Exchange:
    events: list[dict[str, Any]]
    used: bool = False
    opening: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.opening = self.events[0]

    @property
    def is_ws(self) -> bool:
        return self.opening["k"] == "ws.open"

    @property
    def label(self) -> str:
        o = self.opening
        return f"WebSocket {o['path']}" if self.is_ws else f"{o['method']} {o['path']}"

    def first(self, kind: str) -> dict[str, Any] | None:
        return next((e for e in self.events if e["k"] == kind), None)


class _Clock:
    """Recorded pacing: an event recorded at ``t`` goes out ``t - anchor`` after the anchor."""

    def __init__(self, pace: Pace, recorded_t: float) -> None:
        self.pace = pace
        self.set(recorded_t)

    def set(self, recorded_t: float) -> None:
        self.real, self.recorded = asyncio.get_running_loop().time(), recorded_t

    async def wait(self, t: float) -> None:
        if self.pace == "recorded":
            delay = self.real + (t - self.recorded) - asyncio.get_running_loop().time()
            if delay > 0:
                await asyncio.sleep(delay)


def _query(text: str) -> dict[str, list[str]]:
    return parse_qs(text, keep_blank_values=True)


class ReplayServer:
    """Serves one cassette on 127.0.0.1; :attr:`mismatches` lists every refused request."""

    def __init__(self, cassette: Cassette, rules: MatchRules, pace: Pace) -> None:
        self.cassette = cassette
        self.rules = rules
        self.pace = pace
        self.mismatches: list[Mismatch] = []
        self._exchanges = [_Exchange(events) for events in cassette.exchanges()]
        self._requests = 0
        self._policies = 0
        self._server: LocalServer | None = None
        self.app = self._build_app()

    def start(self) -> Endpoints:
        """Serve, and return endpoints laid out like the local server's."""
        self._server = start_app(self.app)
        return self._server.endpoints

    def stop(self) -> None:
        """Stop serving (open connections are dropped)."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    @property
    def unplayed(self) -> list[str]:
        """The recorded exchanges no client asked for (yet)."""
        return [e.label for e in self._exchanges if not e.used]

    def _build_app(self) -> FastAPI:
        app = new_app("nbtoolkit replay server")
        app.add_api_route(
            "/{path:path}", self._http_route, methods=["GET", "POST", "PUT", "DELETE"]
        )
        app.add_api_websocket_route("/{path:path}", self._ws_route)
        return app

    def _take(self, ws: bool, key: tuple[str, ...]) -> _Exchange | None:
        """The first unused exchange with this route, else the first unused one of the same kind."""
        free = [e for e in self._exchanges if not e.used and e.is_ws == ws]
        same = [e for e in free if _route(e.opening) == key]
        if not (same or free):
            return None
        chosen = (same or free)[0]
        chosen.used = True
        return chosen

    def _refuse(self, mismatch: Mismatch) -> str:
        self.mismatches.append(mismatch)
        log.info("cassette mismatch: %s", mismatch)
        return (
            f"{mismatch} — the request differs from {self.cassette.path.name}; "
            "record it again or loosen the rules"
        )

    # ------------------------------------------------------------------ HTTP
    async def _http_route(self, request: Request) -> Response:
        refusal = refuse_unauthorised(request)
        if refusal is not None:
            return refusal
        self._requests += 1
        method, path = request.method, request.url.path
        where = f"request {self._requests} ({method} {path})"
        body = await request.body()
        exchange = self._take(False, (method, path))
        if exchange is None:
            text = self._refuse(
                Mismatch(where, "", "is not in the cassette (every recorded request was answered)")
            )
            return dashscope_error(400, MISMATCH_CODE, text)
        actual = {
            "method": method,
            "path": path,
            "query": _query(request.url.query),
            "headers": {h: request.headers.get(h) for h in sorted(self.rules.headers)},
        }
        rec = exchange.opening
        recorded = {
            "method": rec["method"],
            "path": rec["path"],
            "query": _query(rec["query"]),
            "headers": {h: rec["headers"].get(h) for h in sorted(self.rules.headers)},
        }
        diff = first_difference(recorded, actual, self.rules)
        if diff is None:
            encoded = encode_body(
                request.headers.get("content-type"), body, sink=None, measure=True
            )
            diff = payload_difference(rec["body"], encoded, self.rules)
            if diff is not None:
                diff = (f"body.{diff[0]}" if diff[0] else "body", diff[1])
        if diff is not None:
            text = self._refuse(Mismatch(where, diff[0], diff[1], exchange.label))
            return dashscope_error(400, MISMATCH_CODE, text)
        return self._answer(exchange, request)

    def _answer(self, exchange: _Exchange, request: Request) -> Response:
        response = exchange.first("http.response")
        if response is None:
            return dashscope_error(
                502, "UpstreamUnreachable", "The upstream did not answer when this was recorded"
            )
        headers = {
            k: v for k, v in response["headers"].items() if k not in HOP_HEADERS and v != REDACTED
        }
        if response.get("stream"):
            return StreamingResponse(
                self._stream(exchange), status_code=response["status"], headers=headers
            )
        content = decode_payload(response.get("body"), self.cassette.blob)
        if request.url.path == "/api/v1/uploads" and isinstance(content, str):
            body = json.loads(content)
            base = str(request.base_url).rstrip("/")
            if rewrite_upload_host(body, f"{base}{UPLOAD_PREFIX}{self._policies}") is not None:
                self._policies += 1
                content = json.dumps(body)
        return Response(content or b"", status_code=response["status"], headers=headers)

    async def _stream(self, exchange: _Exchange) -> AsyncIterator[bytes]:
        clock = _Clock(self.pace, exchange.opening["t"])
        for event in exchange.events:
            if event["k"] == "http.chunk":
                await clock.wait(event["t"])
                data = decode_payload(event["body"], self.cassette.blob)
                yield data.encode() if isinstance(data, str) else (data or b"")
            elif event["k"] == "http.end" and event.get("error"):
                await clock.wait(event["t"])
                # the recorded stream broke here: break this one the same way
                raise ConnectionResetError(f"recorded stream ended with {event['error']}")

    # ------------------------------------------------------------------ WebSocket
    async def _ws_route(self, ws: WebSocket) -> None:
        if not await check_websocket(ws):
            return
        path, query = ws.url.path, ws.url.query
        ctx = WsContext(path)
        exchange = self._take(True, (path,))
        if exchange is None:
            text = self._refuse(
                Mismatch(
                    f"WebSocket {path}",
                    "",
                    "is not in the cassette (every recorded connection was played)",
                )
            )
            await ws.accept()
            await self._fail(ws, ctx, text)
            return
        refused = exchange.first("ws.refused")
        if refused is not None:
            status = refused.get("status")
            await ws.close(
                code=1008 if status in (401, 403) else 1011, reason="refused when recorded"
            )
            return
        await ws.accept()
        recorded = {"path": exchange.opening["path"], "query": _query(exchange.opening["query"])}
        diff = first_difference(recorded, {"path": path, "query": _query(query)}, self.rules)
        if diff is not None:
            text = self._refuse(Mismatch(f"WebSocket {path}", diff[0], diff[1], exchange.label))
            await self._fail(ws, ctx, text)
            return
        await self._play(ws, ctx, exchange)

    async def _play(self, ws: WebSocket, ctx: WsContext, exchange: _Exchange) -> None:
        clock = _Clock(self.pace, exchange.opening["t"])
        sent = 0
        heard = [0.0, 0.0]  # seconds of client audio so far: replayed, recorded
        script = [e for e in exchange.events if e["k"] in ("ws.client", "ws.server", "ws.close")]
        for event in script:
            kind = event["k"]
            if kind == "ws.server":
                await clock.wait(event["t"])
                data = decode_payload(event["body"], self.cassette.blob)
                if not await _send(ws, data):
                    return
            elif kind == "ws.close":
                if event["by"] == "server":
                    await clock.wait(event["t"])
                    await ws.close(
                        code=sendable_close_code(event["code"]), reason=event.get("reason") or ""
                    )
                    return
                break
            else:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                sent += 1
                actual = _scrubbed(encode_ws(_data(message), ctx, client=True, sink=None))
                heard[0] += audio_seconds(actual)
                heard[1] += audio_seconds(event["body"])
                diff = _message_difference(event["body"], actual, self.rules, heard)
                if diff is not None:
                    where = f"message {sent} ({message_name(actual)})"
                    await self._fail(
                        ws, ctx, self._refuse(Mismatch(where, diff[0], diff[1], exchange.label))
                    )
                    return
                clock.set(event["t"])
        message = await ws.receive()
        if message["type"] != "websocket.disconnect":
            actual = encode_ws(_data(message), ctx, client=True, sink=None)
            where = f"message {sent + 1} ({message_name(actual)})"
            detail = "is not in the cassette: the recorded session ended before it"
            await self._fail(ws, ctx, self._refuse(Mismatch(where, "", detail, exchange.label)))

    async def _fail(self, ws: WebSocket, ctx: WsContext, text: str) -> None:
        """Send the protocol's error frame, then let the client close (bounded)."""
        if ctx.path == WS_REALTIME:
            frame: dict[str, Any] = {
                "event_id": "event_cassette_mismatch",
                "type": "error",
                "error": {"type": "invalid_request_error", "code": MISMATCH_CODE, "message": text},
            }
        else:
            frame = {
                "header": {
                    "task_id": ctx.extra.get("task_id", ""),
                    "event": "task-failed",
                    "error_code": MISMATCH_CODE,
                    "error_message": text,
                    "attributes": {},
                },
                "payload": {},
            }
        if not await _send(ws, json.dumps(frame)):
            return
        try:
            async with asyncio.timeout(_DRAIN_SECONDS):
                while (message := await ws.receive())["type"] != "websocket.disconnect":
                    actual = encode_ws(_data(message), ctx, client=True, sink=None)
                    if message_name(actual) in _GOODBYES:  # the client is closing: let it go
                        await ws.close(code=1000)
                        return
                return
        except TimeoutError:
            await ws.close(code=1008, reason=MISMATCH_CODE)


def _scrubbed(payload: Any) -> Any:
    """A replayed request as it would have been recorded (registered secrets masked)."""
    return json.loads(scrub_secrets(json.dumps(payload, ensure_ascii=False)))


def _message_difference(
    recorded: Any, actual: Any, rules: MatchRules, heard: list[float]
) -> tuple[str, str] | None:
    """A different kind of message is named as such, with the audio sent so far when it differs
    (a shorter clip shows up as fewer audio messages, not as a shorter one)."""
    if message_name(recorded) != message_name(actual):
        detail = f"the recording has {message_name(recorded)} here"
        if abs(heard[0] - heard[1]) > rules.tolerance:
            detail += f" (audio sent so far {heard[0]:.2f} s != recorded {heard[1]:.2f} s)"
        return "", detail
    return payload_difference(recorded, actual, rules)


def _route(opening: dict[str, Any]) -> tuple[str, ...]:
    if opening["k"] == "ws.open":
        return (opening["path"],)
    return (opening["method"], opening["path"])


def _data(message: Any) -> str | bytes:
    text = message.get("text")
    return text if text is not None else (message.get("bytes") or b"")


async def _send(ws: WebSocket, data: str | bytes | None) -> bool:
    try:
        if isinstance(data, bytes):
            await ws.send_bytes(data)
        else:
            await ws.send_text(data or "")
    except (WebSocketDisconnect, RuntimeError, OSError):
        return False  # the client has gone
    return True
