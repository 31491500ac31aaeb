"""The recording proxy: a loopback server that forwards every protocol to the upstream endpoints and
writes what passes, both ways, into a :class:`~nbtoolkit.cassettes.store.CassetteWriter`.

Clients authenticate with the proxy's own token; the proxy sends the upstream key (a
:class:`~nbtoolkit.config.Secret`, revealed only in the forwarded Authorization header). Upload
policies are rewritten so the SDK posts its ``file://`` uploads through the proxy too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import replace
from typing import Any

import httpx
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import Response, StreamingResponse
from starlette.websockets import WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from nbtoolkit.cassettes.payload import (
    WsContext,
    encode_body,
    encode_sse_event,
    encode_ws,
    redact_fields,
    redact_headers,
)
from nbtoolkit.cassettes.serving import (
    HOP_HEADERS,
    UPLOAD_PREFIX,
    WS_DIALOG,
    WS_REALTIME,
    dashscope_error,
    new_app,
    refuse_unauthorised,
    rewrite_upload_host,
    start_app,
)
from nbtoolkit.cassettes.store import CassetteWriter
from nbtoolkit.config import Endpoints, local_endpoints
from nbtoolkit.local.auth import check_websocket
from nbtoolkit.local.server import MAX_WS_MESSAGE, LocalServer

__all__ = ["RecordingProxy", "sendable_close_code"]

_UNSENDABLE = {1005: 1000, 1006: 1011, 1015: 1011}


def sendable_close_code(code: int | None) -> int:
    """A close code that may go on the wire (1005/1006/1015 only describe a close)."""
    return _UNSENDABLE.get(code or 1005, code or 1000)


def _forward_headers(headers: Any) -> dict[str, str]:
    return {
        k: v
        for k, v in headers.items()
        if k.lower() not in HOP_HEADERS and not k.lower().startswith("sec-websocket")
    }


class RecordingProxy:
    """Forwards to ``upstream`` and records into ``writer``; :meth:`start` serves it on 127.0.0.1."""

    def __init__(self, writer: CassetteWriter, upstream: Endpoints) -> None:
        self.writer = writer
        self.upstream = upstream
        self._upload_hosts: list[str] = []
        self._server: LocalServer | None = None
        self.app = self._build_app()

    # ------------------------------------------------------------------ life cycle
    def start(self) -> Endpoints:
        """Serve and return the endpoints clients use (same ``local``/``region`` as upstream)."""
        self._server = start_app(self.app)
        mine = local_endpoints(self._server.base_url, self._server.token)
        return replace(
            mine,
            local=self.upstream.local,
            region=self.upstream.region,
            audio_modalities_url=mine.audio_modalities_url
            if self.upstream.audio_modalities_url
            else None,
        )

    def stop(self) -> None:
        """Stop serving (open connections are dropped)."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return self._server.base_url

    # ------------------------------------------------------------------ routing
    def _build_app(self) -> FastAPI:
        app = new_app("nbtoolkit recording proxy")
        app.add_api_route(
            "/{path:path}", self._http_route, methods=["GET", "POST", "PUT", "DELETE"]
        )
        app.add_api_websocket_route("/{path:path}", self._ws_route)
        return app

    def _http_target(self, request: Request) -> str | None:
        path, query = request.url.path, request.url.query
        up = self.upstream
        if path.startswith(UPLOAD_PREFIX):
            index = path[len(UPLOAD_PREFIX) :]
            if not index.isdigit() or int(index) >= len(self._upload_hosts):
                return None
            url = self._upload_hosts[int(index)]
        elif path == "/audio/chat/completions" and up.audio_modalities_url:
            url = up.audio_modalities_url
        elif path.startswith("/api/v1/"):
            url = up.http_base + path[len("/api/v1") :]
        else:
            return None
        return f"{url}?{query}" if query else url

    # ------------------------------------------------------------------ HTTP
    async def _http_route(self, request: Request) -> Response:
        refusal = refuse_unauthorised(request)
        if refusal is not None:
            return refusal
        target = self._http_target(request)
        if target is None:
            return dashscope_error(
                404,
                "NotFound",
                f"{request.url.path} has no upstream — the proxy forwards DashScope paths only",
            )
        body = await request.body()
        x = self.writer.exchange()
        headers = _forward_headers(request.headers)
        encoded = encode_body(
            request.headers.get("content-type"),
            body,
            sink=self.writer.sink(x, "client"),
            measure=True,
        )
        self.writer.add(
            x,
            "http.request",
            method=request.method,
            path=request.url.path,
            query=request.url.query,
            headers=redact_headers(headers),
            body=redact_fields(encoded),
        )
        if not request.url.path.startswith(UPLOAD_PREFIX):
            headers["authorization"] = f"Bearer {self.upstream.api_key.reveal()}"
        headers["accept-encoding"] = "identity"
        # one client per request: the stream outlives this handler and closes its client itself
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(60.0, read=600.0), trust_env=not self.upstream.local
        )
        upstream_request = client.build_request(
            request.method, target, headers=headers, content=body
        )
        try:
            response = await client.send(upstream_request, stream=True)
        except httpx.HTTPError as exc:
            await client.aclose()
            self.writer.add(x, "http.failed", error=type(exc).__name__)
            return dashscope_error(
                502, "UpstreamUnreachable", f"The upstream did not answer ({type(exc).__name__})"
            )
        out_headers = _forward_headers(response.headers)
        ctype = response.headers.get("content-type", "")
        if "text/event-stream" in ctype:
            self.writer.add(
                x,
                "http.response",
                status=response.status_code,
                headers=redact_headers(out_headers),
                stream=True,
            )
            return StreamingResponse(
                self._relay(client, response, x),
                status_code=response.status_code,
                headers=out_headers,
            )
        content = await response.aread()
        await client.aclose()
        recorded = encode_body(ctype, content, sink=self.writer.sink(x, "server"), measure=False)
        if request.url.path == "/api/v1/uploads" and recorded and "json" in recorded:
            content = self._rewrite_policy(content)
        self.writer.add(
            x,
            "http.response",
            status=response.status_code,
            headers=redact_headers(out_headers),
            body=redact_fields(recorded),
        )
        return Response(content, status_code=response.status_code, headers=out_headers)

    def _rewrite_policy(self, content: bytes) -> bytes:
        body = json.loads(content)
        new_host = f"{self.base_url}{UPLOAD_PREFIX}{len(self._upload_hosts)}"
        old = rewrite_upload_host(body, new_host)
        if old is None:
            return content
        self._upload_hosts.append(old)
        return json.dumps(body).encode()

    async def _relay(self, client: httpx.AsyncClient, response: httpx.Response, x: int) -> Any:
        """Pass the stream through as it comes; record it event by event."""
        pending = b""
        try:
            async for chunk in response.aiter_bytes():
                yield chunk
                pending += chunk.replace(b"\r\n", b"\n")
                *events, pending = pending.split(b"\n\n")
                for event in events:
                    self._record_sse(x, event)
            if pending.strip():
                self._record_sse(x, pending)
            self.writer.add(x, "http.end")
        except httpx.HTTPError as exc:
            self.writer.add(x, "http.end", error=type(exc).__name__)
            raise
        finally:
            await client.aclose()

    def _record_sse(self, x: int, event: bytes) -> None:
        text = event.decode("utf-8", "replace")
        self.writer.add(x, "http.chunk", body=encode_sse_event(text, self.writer.sink(x, "server")))

    # ------------------------------------------------------------------ WebSocket
    async def _ws_route(self, ws: WebSocket) -> None:
        if not await check_websocket(ws):
            return
        path, query = ws.url.path, ws.url.query
        base = {
            WS_DIALOG: self.upstream.websocket_base,
            WS_REALTIME: self.upstream.realtime_url,
        }.get(path)
        if base is None:
            await ws.close(code=1008, reason=f"no upstream for {path}")
            return
        x = self.writer.exchange()
        headers = _forward_headers(ws.headers)
        self.writer.add(x, "ws.open", path=path, query=query, headers=redact_headers(headers))
        headers["authorization"] = f"Bearer {self.upstream.api_key.reveal()}"
        agent = headers.pop("user-agent", None)
        try:
            upstream = await connect(
                f"{base}?{query}" if query else base,
                additional_headers=headers,
                user_agent_header=agent,
                max_size=MAX_WS_MESSAGE,
                ping_interval=None,
                compression=None,
                proxy=None if self.upstream.local else True,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            self.writer.add(x, "ws.refused", status=status)
            await ws.close(
                code=1008 if status in (401, 403) else 1011, reason=f"upstream answered {status}"
            )
            return
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            self.writer.add(x, "ws.refused", status=None, error=type(exc).__name__)
            await ws.close(code=1011, reason="upstream unreachable")
            return
        await ws.accept()
        self.writer.add(x, "ws.accept")
        await _Pump(self.writer, x, WsContext(path), ws, upstream).run()


class _Pump:
    """Both directions of one proxied WebSocket; the first side to close ends both."""

    def __init__(
        self,
        writer: CassetteWriter,
        x: int,
        ctx: WsContext,
        client: WebSocket,
        upstream: ClientConnection,
    ) -> None:
        self.writer, self.x, self.ctx = writer, x, ctx
        self.client, self.upstream = client, upstream
        self.closed = False

    def _close(self, by: str, code: int | None, reason: str) -> bool:
        if self.closed:
            return False
        self.closed = True
        self.writer.add(self.x, "ws.close", by=by, code=code, reason=reason)
        return True

    async def run(self) -> None:
        tasks = [
            asyncio.ensure_future(self._from_client()),
            asyncio.ensure_future(self._from_upstream()),
        ]
        _done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.upstream.close()

    async def _from_client(self) -> None:
        sink = self.writer.sink(self.x, "client")
        while True:
            message = await self.client.receive()
            if message["type"] == "websocket.disconnect":
                code = int(message.get("code") or 1000)
                if self._close("client", code, str(message.get("reason") or "")):
                    await self.upstream.close(sendable_close_code(code))
                return
            data = message.get("text")
            if data is None:
                data = message.get("bytes") or b""
            encoded = encode_ws(data, self.ctx, client=True, sink=sink)
            self.writer.add(self.x, "ws.client", body=redact_fields(encoded))
            try:
                await self.upstream.send(data)
            except ConnectionClosed:
                return

    async def _from_upstream(self) -> None:
        sink = self.writer.sink(self.x, "server")
        try:
            async for data in self.upstream:
                encoded = encode_ws(data, self.ctx, client=False, sink=sink)
                self.writer.add(self.x, "ws.server", body=redact_fields(encoded))
                if isinstance(data, str):
                    await self.client.send_text(data)
                else:
                    await self.client.send_bytes(data)
        except ConnectionClosed:
            pass
        except (WebSocketDisconnect, RuntimeError):
            return  # the client went away while we were sending
        code, reason = self.upstream.close_code, self.upstream.close_reason or ""
        if self._close("server", code, reason):
            with contextlib.suppress(RuntimeError):  # the client already closed
                await self.client.close(code=sendable_close_code(code), reason=reason)
