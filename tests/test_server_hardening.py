"""The local server's defences, over real sockets on 127.0.0.1.

Loopback only; a bearer token on every route (HTTP 401 in DashScope's shape, WebSocket close 1008);
browser Origins must be loopback pages (403 / 1008); a WebSocket message may be 16 MiB and one byte
more closes the connection with 1009 (also when it arrives compressed); an HTTP body over the cap is
refused with 413 before it is read.
"""

from __future__ import annotations

import json
import select
import socket
from collections.abc import Iterable, Iterator
from typing import Any

import httpx
import pytest
from conftest import timeout
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from nbtoolkit.errors import ConfigError
from nbtoolkit.local import start
from nbtoolkit.local.limits import ROUTE_LIMITS, BodyLimit
from nbtoolkit.local.server import MAX_HTTP_BODY, MAX_WS_MESSAGE, LocalServer

CANARY = "sk-canary-7f3a9c1e5b2d4f6a8c0e"
GENERATION = "/api/v1/services/aigc/multimodal-generation/generation"
AUDIO_CHAT = "/audio/chat/completions"
HTTP_ROUTES = [("POST", GENERATION), ("GET", "/api/v1/uploads"), ("POST", AUDIO_CHAT)]
WS_ROUTES = ["/api-ws/v1/inference", "/api-ws/v1/realtime?model=qwen-omni-turbo-realtime"]


@pytest.fixture(scope="module")
def guarded(engine: Any) -> Iterator[LocalServer]:
    """A server of its own (its token is the canary), with the body limit in front of every route.

    The middleware is added here only if ``create_app`` does not install it yet (see
    :func:`test_create_app_installs_the_body_limit`); a Starlette app accepts middleware until its
    first request.
    """
    server = start(token=CANARY, engine=engine)
    if not any(m.cls is BodyLimit for m in server.app.user_middleware):
        server.app.add_middleware(BodyLimit, default=MAX_HTTP_BODY)
    try:
        yield server
    finally:
        server.stop()


def ws_url(server: LocalServer, route: str) -> str:
    return f"ws://127.0.0.1:{server.port}{route}"


def open_ws(server: LocalServer, route: str, **kw: Any) -> ClientConnection:
    headers = kw.pop("headers", {"Authorization": f"Bearer {CANARY}"})
    return connect(
        ws_url(server, route),
        additional_headers=headers,
        proxy=None,
        open_timeout=timeout(10),
        max_size=None,
        **kw,
    )


def close_code(ws: ClientConnection) -> int | None:
    """Read until the server closes; the code it sent."""
    with pytest.raises(ConnectionClosed) as closed:
        for _ in range(100):  # bounded: a refused session sends at most a couple of frames
            ws.recv(timeout=timeout(20))
    return closed.value.rcvd.code if closed.value.rcvd is not None else None


def oversized(piece: str | bytes) -> Iterator[str | bytes]:
    """One message of ``MAX_WS_MESSAGE + 1`` units sent as 16 fragments of 1 MiB plus one unit.

    Each fragment is well under the limit, their total is not (case 24). It also keeps the test
    honest about the close code: the server has read all but the last byte when it refuses, so no
    unread data makes its TCP stack reset the connection before the client reads the close frame.
    """
    mib = MAX_WS_MESSAGE // 16
    return iter([piece * mib] * 16 + [piece])


# --------------------------------------------------------------------------- loopback only
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com"])
def test_start_refuses_any_non_loopback_host_with_a_config_error_naming_the_fix(host: str) -> None:
    with pytest.raises(ConfigError) as info:
        start(host=host)
    assert "loopback" in str(info.value) and "127.0.0.1" in (info.value.fix or "")


def test_the_server_listens_on_127_0_0_1_only(guarded: LocalServer) -> None:
    assert guarded.host == "127.0.0.1"
    outside = [
        a[4][0]
        for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
        if not a[4][0].startswith("127.")
    ]
    for address in outside[:1]:  # a LAN address of this machine, when it has one
        with pytest.raises(OSError), socket.create_connection((address, guarded.port), 2):
            pass


# --------------------------------------------------------------------------- token
BAD_AUTH = {
    "missing": {},
    "wrong token": {"Authorization": "Bearer sk-not-the-token"},
    "not bearer": {"Authorization": f"Basic {CANARY}"},
    "bare token": {"Authorization": CANARY},
}


@pytest.mark.parametrize("auth", BAD_AUTH.values(), ids=BAD_AUTH.keys())
@pytest.mark.parametrize(("method", "path"), HTTP_ROUTES, ids=[p for _, p in HTTP_ROUTES])
def test_http_route_without_the_token_answers_401_in_dashscope_shape(
    guarded: LocalServer, method: str, path: str, auth: dict[str, str]
) -> None:
    response = httpx.request(
        method, guarded.base_url + path, headers=auth, json={}, timeout=timeout(10)
    )
    assert response.status_code == 401
    body = response.json()
    assert body["code"] == "InvalidApiKey" and body["request_id"] and "nbtoolkit" in body["message"]
    assert CANARY not in response.text


@pytest.mark.parametrize("auth", BAD_AUTH.values(), ids=BAD_AUTH.keys())
@pytest.mark.parametrize("route", WS_ROUTES, ids=["dialog", "realtime"])
def test_websocket_without_the_token_is_closed_with_1008(
    guarded: LocalServer, route: str, auth: dict[str, str]
) -> None:
    with open_ws(guarded, route, headers=auth) as ws:
        assert close_code(ws) == 1008


# --------------------------------------------------------------------------- Origin
FOREIGN = [
    "http://evil.example",
    "https://127.0.0.1.evil.example",
    "null",
    "http://192.168.1.10:8888",
]
LOOPBACK = ["http://localhost:8888", "http://127.0.0.1:8888", "http://[::1]:8888"]


@pytest.mark.parametrize("origin", FOREIGN)
def test_a_page_from_a_foreign_origin_gets_403_and_websocket_close_1008(
    guarded: LocalServer, origin: str
) -> None:
    headers = {"Authorization": f"Bearer {CANARY}", "Origin": origin}
    response = httpx.get(guarded.base_url + "/api/v1/uploads", headers=headers, timeout=timeout(10))
    assert response.status_code == 403 and response.json()["code"] == "AccessDenied"
    for route in WS_ROUTES:
        with open_ws(guarded, route, headers=headers) as ws:
            assert close_code(ws) == 1008


@pytest.mark.parametrize("origin", LOOPBACK)
def test_a_jupyterlab_page_on_loopback_is_let_through(guarded: LocalServer, origin: str) -> None:
    headers = {"Authorization": f"Bearer {CANARY}", "Origin": origin}
    response = httpx.get(
        guarded.base_url + "/api/v1/uploads",
        params={"action": "getPolicy", "model": "qwen-audio-turbo-latest"},
        headers=headers,
        timeout=timeout(10),
    )
    assert response.status_code == 200
    with open_ws(guarded, WS_ROUTES[1], headers=headers) as ws:
        assert json.loads(ws.recv(timeout=timeout(10)))["type"] == "session.created"


# --------------------------------------------------------------------------- WebSocket size
@pytest.mark.parametrize("compression", [None, "deflate"], ids=["raw", "compressed"])
def test_realtime_message_of_16_mib_is_read_and_one_byte_more_closes_1009(
    guarded: LocalServer, compression: str | None
) -> None:
    with open_ws(guarded, WS_ROUTES[1], compression=compression) as ws:
        assert json.loads(ws.recv(timeout=timeout(10)))["type"] == "session.created"
        ws.send("x" * MAX_WS_MESSAGE)  # exactly the limit: read, and refused as not JSON
        error = json.loads(ws.recv(timeout=timeout(30)))
        assert error["type"] == "error" and error["error"]["code"] == "invalid_json"
        # one byte over; compressed, its ~16 KiB of frames inflate past the limit (a small bomb)
        ws.send(oversized("x"))
        assert close_code(ws) == 1009


def test_dialog_binary_frame_of_16_mib_is_read_and_one_byte_more_closes_1009(
    guarded: LocalServer,
) -> None:
    with open_ws(guarded, WS_ROUTES[0], compression=None) as ws:
        ws.send(b"\0" * MAX_WS_MESSAGE)  # audio before Start is ignored, as the cloud does
        ws.send("not json")  # so the connection must still answer this one
        failed = json.loads(ws.recv(timeout=timeout(30)))
        assert failed["header"]["event"] == "task-failed"
    with open_ws(guarded, WS_ROUTES[0], compression=None) as ws:
        ws.send(oversized(b"\0"))
        assert close_code(ws) == 1009


# --------------------------------------------------------------------------- HTTP body size
def _raw_http(port: int, head: str, chunks: Iterable[bytes] = ()) -> tuple[int, dict]:
    """Send ``head`` and then ``chunks`` until the server answers; its status and JSON body."""
    with socket.create_connection(("127.0.0.1", port), timeout(10)) as sock:
        sock.sendall(head.encode())
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:
                break  # the server answered before the body was complete
            try:
                sock.sendall(chunk)
            except OSError:  # it stopped reading (and closed): its answer is already here
                break
        reply = b""
        while b"\r\n\r\n" not in reply or len(reply) < _expected_length(reply):
            more = sock.recv(65536)
            if not more:
                break
            reply += more
    head_bytes, _, body = reply.partition(b"\r\n\r\n")
    return int(head_bytes.split()[1]), json.loads(body)


def _expected_length(reply: bytes) -> int:
    head, _, _ = reply.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(head) + 4 + int(line.split(b":")[1])
    return 0


def _head(path: str, extra: str) -> str:
    kind = "multipart/form-data; boundary=b0undary" if path == "/oss" else "application/json"
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {CANARY}\r\n"
        f"Content-Type: {kind}\r\n{extra}\r\n"
    )


ROUTE_CAPS = [
    (AUDIO_CHAT, MAX_HTTP_BODY),
    (GENERATION, ROUTE_LIMITS[GENERATION]),
    ("/oss", ROUTE_LIMITS["/oss"]),
]


@pytest.mark.parametrize(("path", "cap"), ROUTE_CAPS, ids=[p for p, _ in ROUTE_CAPS])
def test_declared_body_over_the_cap_is_refused_413_without_being_read(
    guarded: LocalServer, path: str, cap: int
) -> None:
    status, body = _raw_http(guarded.port, _head(path, f"Content-Length: {cap + 1}\r\n"))
    assert status == 413
    assert body["code"] == "InvalidParameter" and body["request_id"]
    assert "MiB" in body["message"] and "shorter" in body["message"]


@pytest.mark.parametrize(("path", "cap"), ROUTE_CAPS, ids=[p for p, _ in ROUTE_CAPS])
def test_chunked_body_is_cut_off_with_413_once_it_passes_the_cap(
    guarded: LocalServer, path: str, cap: int
) -> None:
    def frame(data: bytes) -> bytes:
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    # /oss is multipart: open a file part so the parser keeps reading what follows
    part = b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
    piece = b"x" * 65536
    # bounded: twice the cap is more than enough for the server to answer
    chunks = iter([frame(part)] + [frame(piece)] * (2 * cap // len(piece)))
    status, body = _raw_http(guarded.port, _head(path, "Transfer-Encoding: chunked\r\n"), chunks)
    assert status == 413 and "over" in body["message"]


def test_body_at_the_audio_route_cap_reaches_the_route(guarded: LocalServer) -> None:
    body = b" " * (MAX_HTTP_BODY - 2) + b"{}"  # valid JSON of exactly the cap, but no messages
    response = httpx.post(
        guarded.base_url + AUDIO_CHAT,
        content=body,
        headers={"Authorization": f"Bearer {CANARY}", "Content-Type": "application/json"},
        timeout=timeout(30),
    )
    assert response.status_code == 400 and "messages" in response.json()["message"]


def test_create_app_installs_the_body_limit() -> None:
    """The one line the lead adds to ``create_app``: ``app.add_middleware(BodyLimit, default=MAX_HTTP_BODY)``."""
    from nbtoolkit.local.server import create_app

    app = create_app("t", engine=object())
    assert [m.kwargs for m in app.user_middleware if m.cls is BodyLimit] == [
        {"default": MAX_HTTP_BODY}
    ]
