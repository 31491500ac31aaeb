"""A canary key must never surface.

The canary is set as ``DASHSCOPE_API_KEY``, passed as ``api_key``, and used as the local server's
token. Then it is looked for, whole and as a prefix or suffix (a "masked" key that shows its first or
last characters still leaks), in every public repr/str/``_repr_html_``, in DEBUG logs of a failed and
a successful call of every client, in exception messages and formatted tracebacks, in widget state,
and in every notebook executed headless against a server whose token is the canary.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import timeout
from dashscope.multimodal.multimodal_dialog import MultiModalCallback, MultiModalDialog
from dashscope.multimodal.multimodal_request_params import (
    ClientInfo,
    Device,
    Downstream,
    RequestParameters,
    Upstream,
)

from nbtoolkit.audio import Clip
from nbtoolkit.backends.audio_modalities import AudioModalitiesClient
from nbtoolkit.backends.dialog import Dialog
from nbtoolkit.backends.omni import OmniRealtime
from nbtoolkit.backends.qwen_audio import QwenAudio
from nbtoolkit.config import (
    Secret,
    cloud_endpoints,
    get_api_key,
    local_endpoints,
    scrub_secrets,
)
from nbtoolkit.errors import AuthError, ConfigError
from nbtoolkit.ledger import Ledger
from nbtoolkit.local import LocalServer, start

CANARY = "sk-canary-7f3a9c1e5b2d4f6a8c0e"
REPO = Path(__file__).resolve().parents[1]


def leaks(text: str) -> list[str]:
    """The pieces of the canary found in ``text``: whole, or its first/last 10 characters."""
    pieces = {"whole": CANARY, "prefix": CANARY[:10], "suffix": CANARY[-10:]}
    return [name for name, piece in pieces.items() if piece in text]


def shown(obj: Any) -> str:
    """Everything a notebook could show of ``obj``."""
    parts = [repr(obj), str(obj), format(obj, "")]
    html = getattr(obj, "_repr_html_", None)
    if callable(html):
        parts.append(str(html()))
    return "\n".join(parts)


@pytest.fixture(scope="module")
def canary_server(engine: Any) -> Iterator[LocalServer]:
    """A local server whose token is the canary (the session server keeps its own token)."""
    server = start(token=CANARY, engine=engine)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def question(engine: Any) -> Clip:
    speech = np.asarray(engine.synthesize("what is one plus one", rate=16000), dtype=np.int16)
    return Clip(np.concatenate([speech, np.zeros(8000, np.int16)]), 16000)


@pytest.fixture
def debug_log() -> Iterator[list[str]]:
    """Every log line (formatted, with tracebacks) of every logger at DEBUG while the test runs."""
    lines: list[str] = []
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(formatter.format(record) + " " + repr(record.args))

    handler, root = Keep(logging.DEBUG), logging.getLogger()
    watched = [logging.getLogger(n) for n in ("nbtoolkit", "dashscope")]
    before = [(root.level, *(lg.level for lg in watched))]
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for lg in watched:
        lg.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(before[0][0])
        for lg, level in zip(watched, before[0][1:], strict=True):
            lg.setLevel(level)


def ours(lines: list[str]) -> list[str]:
    """Log lines of nbtoolkit and the dashscope SDK (the loggers this project answers for)."""
    return [line for line in lines if line.startswith(("nbtoolkit", "dashscope"))]


# --------------------------------------------------------------------------- reprs
def test_the_key_from_the_environment_shows_nowhere(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import nbtoolkit

    monkeypatch.setenv("DASHSCOPE_API_KEY", CANARY)
    monkeypatch.delenv("DASHSCOPE_HTTP_BASE_URL", raising=False)
    key = get_api_key()
    assert key is not None and key.reveal() == CANARY  # it is read, just never shown
    endpoints = nbtoolkit.connect()
    seen = [
        shown(key),
        shown(endpoints),
        shown(cloud_endpoints(key, "intl")),
        capsys.readouterr().out,
    ]
    with pytest.raises(TypeError) as pickled:
        __import__("pickle").dumps(key)
    seen.append(str(pickled.value))
    assert leaks("\n".join(seen)) == []


def test_clients_and_the_server_show_no_token(canary_server: LocalServer) -> None:
    endpoints = canary_server.endpoints
    clients = [
        QwenAudio(endpoints, ledger=Ledger()),
        Dialog(endpoints, ledger=Ledger()),
        OmniRealtime(endpoints, ledger=Ledger()),
        AudioModalitiesClient(endpoints.audio_modalities_url, api_key=CANARY, ledger=Ledger()),
    ]
    assert leaks("\n".join(shown(o) for o in [canary_server, endpoints, *clients])) == []


# --------------------------------------------------------------------------- calls, logs, errors
def _ask_all(endpoints: Any, question: Clip) -> list[Any]:
    """One call of every client; the Reply, or the exception it raised."""

    async def omni() -> Any:
        async with OmniRealtime(endpoints, turn_detection=None, ledger=Ledger()) as rt:
            return await rt.ask_async(question)

    def dialog() -> Any:
        with Dialog(endpoints, ledger=Ledger(), timeout=timeout(30)) as d:
            return d.ask(text="what is one plus one")

    calls = [
        lambda: QwenAudio(endpoints, ledger=Ledger()).ask(question),
        dialog,
        lambda: asyncio.run(omni()),
        lambda: AudioModalitiesClient(endpoints=endpoints, ledger=Ledger()).ask(
            text="what is one plus one"
        ),
    ]
    results: list[Any] = []
    for call in calls:
        try:
            results.append(call())
        except Exception as exc:  # collected, then checked below
            results.append(exc)
    return results


def test_successful_calls_with_the_token_leak_it_nowhere(
    canary_server: LocalServer, question: Clip, debug_log: list[str]
) -> None:
    results = _ask_all(canary_server.endpoints, question)
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert all("two" in r.text.lower() for r in results)  # really answered
    assert ours(debug_log), "nbtoolkit/dashscope logged nothing at DEBUG: the check would be empty"
    assert leaks("\n".join(shown(r) for r in results)) == []
    assert leaks("\n".join(ours(debug_log))) == []


def test_calls_refused_for_the_key_leak_it_nowhere(
    server: LocalServer, question: Clip, debug_log: list[str]
) -> None:
    # the canary is the *client's* key here; the session server has another token, so it refuses
    endpoints = local_endpoints(server.base_url, Secret(CANARY))
    results = _ask_all(endpoints, question)
    assert all(isinstance(r, AuthError) for r in results), results
    text = [shown(r) for r in results]
    text += ["".join(traceback.format_exception(r)) for r in results]
    text += [repr(r.partial) for r in results]
    assert leaks("\n".join(text)) == []
    assert leaks("\n".join(ours(debug_log))) == []


# --------------------------------------------------------------------------- widgets
def test_widget_state_holds_no_token(canary_server: LocalServer, question: Clip) -> None:
    from nbtoolkit.voice_chat import VoiceChat
    from nbtoolkit.widgets import Player, Recorder

    widgets: list[Any] = [Recorder(source=question), Player()]
    for backend in (
        QwenAudio(canary_server.endpoints, ledger=Ledger()),
        OmniRealtime(canary_server.endpoints, ledger=Ledger()),
    ):
        chat = VoiceChat(backend, source=question, realtime=False)
        widgets += [chat, chat.recorder, chat.player, *chat.children]
    try:
        states = [json.dumps(w.get_state(), default=repr) for w in widgets]
        assert leaks("\n".join(states + [shown(w) for w in widgets])) == []
    finally:
        for w in widgets:
            w.close()


# --------------------------------------------------------------------------- notebooks
def _serve(env: dict[str, str]) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """``nbtoolkit serve --token CANARY`` in a subprocess; it and the exports it prints."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbtoolkit.cli", "serve", "--port", "0", "--token", CANARY],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    printed: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            printed.append(line)
            if "Ctrl-C" in line:
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(timeout(120)) or proc.poll() is not None:
        proc.kill()
        raise AssertionError(f"nbtoolkit serve did not start: {''.join(printed)}")
    return proc, dict(re.findall(r"export (\w+)=(\S+)", "".join(printed)))


@pytest.mark.timeout(1800)
def test_slow_every_notebook_executed_against_a_canary_token_server_shows_no_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slow-ish (all notebooks, a few minutes): each cell is bounded by a 300 s timeout."""
    import nbformat
    from nbclient import NotebookClient

    env = {**os.environ, "PYTHONPATH": str(REPO), "NBTOOLKIT_HEADLESS": "1"}
    proc, exports = _serve(env)
    try:
        assert exports["DASHSCOPE_API_KEY"] == CANARY
        # each kernel inherits this process's environment: connect() there finds the served engine
        for name, value in {"NBTOOLKIT_HEADLESS": "1", **exports}.items():
            monkeypatch.setenv(name, value)
        notebooks = sorted((REPO / "notebooks").glob("*.ipynb"))
        assert notebooks
        failures: dict[str, str] = {}
        served: list[str] = []  # notebooks whose connect() reached the canary-token server
        errors: dict[str, str] = {}
        for path in notebooks:
            nb = nbformat.read(path, as_version=4)
            client = NotebookClient(
                nb,
                timeout=int(timeout(300)),
                kernel_name="python3",
                resources={"metadata": {"path": str(path.parent)}},
                store_widget_state=True,
                allow_errors=True,  # a failing cell's traceback must be scanned too
            )
            client.execute()
            executed = tmp_path / path.name
            nbformat.write(nb, executed)
            text = executed.read_text(encoding="utf-8")
            found = leaks(text)
            if found:
                failures[path.name] = ", ".join(found)
            if "points at a local server" in text:
                served.append(path.name)
            for cell in nb.cells:
                for out in cell.get("outputs", []):
                    if out.get("output_type") == "error":
                        errors.setdefault(path.name, f"{out['ename']}: {out['evalue']}"[:200])
    finally:
        proc.terminate()
        proc.wait(timeout(30))
    assert failures == {}
    # the sweep means something only if the notebooks really talked to the canary-token server
    assert len(served) >= len(notebooks) // 2, (served, errors)
    print(f"notebooks with a failing cell (their tracebacks were scanned too): {errors}")


# --------------------------------------------------------------------------- third-party logs
class _Listening(MultiModalCallback):
    """Sets ``ready`` once the SDK's dialog is Listening (or has failed)."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.state = ""

    def on_state_changed(self, state: Any) -> None:
        self.state = state.value
        if self.state == "Listening":
            self.ready.set()

    def on_error(self, error: Any) -> None:
        self.state = f"error {error}"
        self.ready.set()


def test_websocket_client_trace_of_the_sdk_dialog_shows_no_key(canary_server: LocalServer) -> None:
    import websocket

    key = Secret(CANARY)  # the client's key, alive while it is used, as in every client
    traced = io.StringIO()
    # the same path as websocket.enableTrace(True): its own handler on the "websocket" logger
    websocket.enableTrace(True, handler=logging.StreamHandler(traced))
    callback = _Listening()
    sdk = MultiModalDialog(
        app_id="your_app_id",
        request_params=RequestParameters(
            upstream=Upstream(type="AudioOnly", mode="push2talk", audio_format="pcm"),
            downstream=Downstream(voice="longxiaochun_v2", sample_rate=16000),
            client_info=ClientInfo(user_id="demo_user", device=Device(uuid="demo_device")),
        ),
        multimodal_callback=callback,
        url=canary_server.endpoints.websocket_base,
        api_key=key.reveal(),
        model="multimodal-dialog",
    )
    try:
        sdk.start("")
        assert callback.ready.wait(timeout(20)) and callback.state == "Listening", callback.state
    finally:
        websocket.enableTrace(False)
        sdk.close()
    text = traced.getvalue()
    assert "Authorization: Bearer" in text  # the trace did dump the handshake's headers
    assert leaks(text) == []


def test_child_loggers_of_http_libraries_are_scrubbed_too(debug_log: list[str]) -> None:
    key = Secret(CANARY)
    headers = [(b"Authorization", b"Bearer " + key.reveal().encode())]
    # httpcore logs headers on children of "httpcore": a filter on the parent would miss them
    logging.getLogger("httpcore.http11").debug("send_request_headers.started headers=%r", headers)
    logging.getLogger("websockets.client").debug("> Authorization: Bearer %s", key.reveal())
    try:
        raise RuntimeError(f"refused Bearer {key.reveal()}")
    except RuntimeError:
        logging.getLogger("urllib3.connectionpool").exception("request failed")
    seen = [line for line in debug_log if "Bearer" in line or "refused" in line]
    assert len(seen) == 3, debug_log
    assert leaks("\n".join(seen)) == []


# --------------------------------------------------------------------------- the mask
def test_a_key_is_masked_where_it_stands_as_a_whole_token_only() -> None:
    value = "k3y0123456789abcdef"
    key = Secret(value)
    for around in ("Bearer {}", "api_key={}&x=1", '{{"key": "{}"}}', "{}", "tok-{}_x", "({})"):
        text = around.format(key.reveal())
        assert value not in scrub_secrets(text), text
    for word in (f"x{value}", f"{value}9", f"contest{value}ants"):
        assert scrub_secrets(f"The {word} clip") == f"The {word} clip"
    assert scrub_secrets("The test clip is empty") == "The test clip is empty"


@pytest.mark.parametrize("short", ["test", "sk-123", "0123456789abcde"])
def test_a_key_too_short_to_be_real_is_refused_without_showing_it(
    short: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError) as info:
        Secret(short)
    assert short not in str(info.value)
    assert info.value.fix is not None and "32 hex digits" in info.value.fix
    monkeypatch.setenv("DASHSCOPE_API_KEY", short)
    with pytest.raises(ConfigError):
        get_api_key()
    assert Secret(short + "x" * (16 - len(short))).reveal().startswith(short)


def test_a_local_server_refuses_a_token_too_short_to_be_a_key() -> None:
    with pytest.raises(ConfigError) as info:
        start(token="short-token")
    assert "short-token" not in str(info.value) and "16" in str(info.value)


def test_another_servers_short_key_is_taken_by_the_audio_modalities_client_and_masked() -> None:
    from nbtoolkit import AudioModalitiesClient

    client = AudioModalitiesClient(
        "http://127.0.0.1:9/audio/chat/completions", api_key="any-api-key"
    )
    assert "any-api-key" not in repr(client)
    with pytest.raises(ConfigError):
        Secret("any-api-key")  # a DashScope key or our token that short is still refused
