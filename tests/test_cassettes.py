"""Record and replay (``nbtoolkit.record`` / ``nbtoolkit.replay``) over real sockets on 127.0.0.1:
every protocol through the recording proxy to the local server, then answered from the cassette."""

from __future__ import annotations

import asyncio
import base64
import json
import zipfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from nbtoolkit.audio.clip import Clip
from nbtoolkit.backends.audio_modalities import AudioModalitiesClient
from nbtoolkit.backends.dialog import Dialog
from nbtoolkit.backends.omni import OmniRealtime
from nbtoolkit.backends.qwen_audio import QwenAudio
from nbtoolkit.cassettes import Cassette, MatchRules, record, replay
from nbtoolkit.cassettes.matching import first_difference
from nbtoolkit.cassettes.payload import REDACTED
from nbtoolkit.connection import connect
from nbtoolkit.errors import ProtocolError
from nbtoolkit.ledger import Ledger
from nbtoolkit.results import Reply
from tests.conftest import text_deltas, timeout

T = TypeVar("T")
CANARY = "sk-canary-0123456789abcdef0123"
QUESTION = "one plus one equals what"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout(60)))


def words(text: str) -> list[str]:
    return "".join(c if c.isalnum() else " " for c in text.lower()).split()


@pytest.fixture(scope="module")
def question(engine: Any) -> Clip:
    return Clip.from_array(engine.synthesize(QUESTION, rate=16000), 16000)


# ------------------------------------------------------------------ one session of every protocol
async def omni_turn(clip: Clip, turn_detection: str | None = None) -> Reply:
    async with OmniRealtime(turn_detection=turn_detection, ledger=Ledger()) as rt:  # type: ignore[arg-type]
        return await rt.ask_async(clip)


def dialog_turn(clip: Clip) -> Reply:
    with Dialog(ledger=Ledger(), timeout=timeout(20)) as d:
        return d.ask(clip)


def session(clip: Clip) -> dict[str, Any]:
    """One call of each protocol, all through ``connect()`` (clients built with endpoints=None)."""
    with AudioModalitiesClient(ledger=Ledger()) as am:
        spoken = am.ask(text=QUESTION)
    return {
        "qwen": QwenAudio(ledger=Ledger()).ask(audio=clip),
        "qwen_stream": list(text_deltas(QwenAudio(ledger=Ledger()).stream(audio=clip))),
        "omni": run(omni_turn(clip)),
        "dialog": dialog_turn(clip),
        "audio_modalities": spoken,
    }


@pytest.fixture(scope="module")
def recorded(server: Any, question: Clip, tmp_path_factory: Any) -> tuple[Path, dict[str, Any]]:
    path = tmp_path_factory.mktemp("cassettes") / "session.cassette"
    with record(path, upstream=server.endpoints) as rec:
        results = session(question)
    assert rec.size == path.stat().st_size
    return path, results


def same_turn(a: Reply, b: Reply) -> None:
    assert (a.heard, a.text, a.status, a.usage) == (b.heard, b.text, b.status, b.usage)
    assert a.audio == b.audio


# ------------------------------------------------------------------ record, replay
def test_recording_passes_every_protocol_through_with_the_right_answers(recorded: Any) -> None:
    _, got = recorded
    assert "two" in words(got["qwen"].text)
    assert "two" in words("".join(got["qwen_stream"]))
    for name in ("omni", "dialog"):
        assert "plus" in words(got[name].heard) and "two" in words(got[name].text)
        assert got[name].audio is not None and got[name].audio.duration > 0.3
    assert "two" in words(got["audio_modalities"].text)


@pytest.mark.parametrize("pace", ["fast", "recorded"])
def test_replay_gives_every_protocol_the_recorded_answers(
    recorded: Any, question: Clip, engine: Any, pace: str
) -> None:
    path, before = recorded
    with replay(path, pace=pace) as tape:  # type: ignore[arg-type]
        after = session(question)
    assert tape.mismatches == [] and tape.unplayed == []
    assert (after["qwen"].text, after["qwen"].usage) == (before["qwen"].text, before["qwen"].usage)
    assert after["qwen_stream"] == before["qwen_stream"]
    same_turn(after["omni"], before["omni"])
    same_turn(after["dialog"], before["dialog"])
    assert after["audio_modalities"].text == before["audio_modalities"].text
    assert after["audio_modalities"].audio == before["audio_modalities"].audio
    # the replayed speech is the recorded speech: it still says the answer
    heard = engine.transcribe(after["omni"].audio.resample(16000).samples, 16000)
    assert {"one", "plus"} <= set(words(heard))


def test_cassette_is_jsonl_events_with_audio_in_flac_tracks(recorded: Any, question: Clip) -> None:
    path, _ = recorded
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        events = [json.loads(line) for line in zf.read("events.jsonl").splitlines()]
    assert names[:2] == ["cassette.json", "events.jsonl"]
    assert any(n.startswith("tracks/") and n.endswith(".flac") for n in names)
    kinds = {e["k"] for e in events}
    assert {
        "http.request",
        "http.response",
        "http.chunk",
        "ws.open",
        "ws.client",
        "ws.server",
    } <= kinds
    assert [e["t"] for e in events] == sorted(e["t"] for e in events)
    # the uploads went through the proxy: policy, then the form POST to the rewritten upload_host
    paths = [e["path"] for e in events if e["k"] == "http.request"]
    first = paths.index("/api/v1/uploads")
    assert paths[first : first + 3] == [
        "/api/v1/uploads",
        "/_upload/0",
        "/api/v1/services/aigc/multimodal-generation/generation",
    ]
    # the realtime appends are PCM blobs whose track holds exactly the audio the client sent
    tape = Cassette(path)
    realtime = next(x for x in tape.exchanges() if x[0].get("path") == "/api-ws/v1/realtime")
    appended = b"".join(
        tape.blob(e["body"]["json"]["audio"]["$blob"])
        for e in realtime
        if e["k"] == "ws.client" and e["body"]["json"].get("type") == "input_audio_buffer.append"
    )
    assert appended == question.to_pcm()


# ------------------------------------------------------------------ redaction
def test_canary_key_never_reaches_the_cassette(tmp_path: Path, question: Clip) -> None:
    from nbtoolkit.config import Secret, local_endpoints
    from nbtoolkit.local import start

    with start(token=CANARY) as upstream_server:
        upstream = local_endpoints(upstream_server.base_url, Secret(CANARY))
        path = tmp_path / "canary.cassette"
        with record(path, upstream=upstream) as rec:
            # the client mentions the key in its own request body as well
            reply = QwenAudio(ledger=Ledger()).ask(audio=question, text=f"my key is {CANARY}")
            turn = run(omni_turn(question))
        assert rec.endpoints is not None and rec.endpoints.api_key.reveal() != CANARY
    # the engine describes the clip ("the words sound like: one plus one…") and answers the turn
    assert "plus" in words(reply.text) and "two" in words(turn.text)
    raw = path.read_bytes()
    assert CANARY.encode() not in raw
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            assert CANARY.encode() not in zf.read(name), name
        events = [json.loads(line) for line in zf.read("events.jsonl").splitlines()]
    auth = [
        e["headers"]["authorization"] for e in events if "authorization" in e.get("headers", {})
    ]
    assert auth and set(auth) == {REDACTED}


# ------------------------------------------------------------------ mismatches
async def raw_realtime_turn(endpoints: Any, pcm: bytes) -> list[dict[str, Any]]:
    """A manual turn from a raw ``websockets`` client: one append, commit, response.create."""
    from websockets.asyncio.client import connect as ws_connect

    url = f"{endpoints.realtime_url}?model=qwen-omni-turbo-realtime"
    headers = {"Authorization": f"Bearer {endpoints.api_key.reveal()}"}
    events: list[dict[str, Any]] = []
    async with ws_connect(url, additional_headers=headers, proxy=None, max_size=2**24) as ws:
        events.append(json.loads(await ws.recv()))  # session.created
        update = {"modalities": ["text", "audio"], "turn_detection": None}
        for n, (kind, extra) in enumerate(
            [
                ("session.update", {"session": update}),
                ("input_audio_buffer.append", {"audio": base64.b64encode(pcm).decode()}),
                ("input_audio_buffer.commit", {}),
                ("response.create", {}),
            ]
        ):
            await ws.send(
                json.dumps({"event_id": f"event_{n}_{id(events)}", "type": kind, **extra})
            )
        while events[-1]["type"] not in ("response.done", "error"):
            events.append(json.loads(await ws.recv()))
    return events


@pytest.fixture(scope="module")
def raw_cassette(server: Any, question: Clip, tmp_path_factory: Any) -> tuple[Path, list[Any]]:
    path = tmp_path_factory.mktemp("cassettes") / "raw.cassette"
    with record(path, upstream=server.endpoints) as rec:
        assert rec.endpoints is not None
        events = run(raw_realtime_turn(rec.endpoints, question[:1.2].to_pcm()))
    assert events[-1]["type"] == "response.done"
    return path, events


def test_shorter_audio_is_refused_naming_message_field_and_durations(
    raw_cassette: Any, question: Clip
) -> None:
    path, _ = raw_cassette
    with replay(path, pace="fast") as tape:
        assert tape.endpoints is not None
        events = run(raw_realtime_turn(tape.endpoints, question[:0.8].to_pcm()))
    expected = (
        "message 2 (input_audio_buffer.append) field audio: duration 0.80 s != recorded 1.20 s"
    )
    assert events[-1]["type"] == "error"
    assert events[-1]["error"]["code"] == "CassetteMismatch"
    assert events[-1]["error"]["message"].startswith(expected)
    assert [str(m) for m in tape.mismatches] == [expected]


def test_same_length_but_different_audio_fails_by_hash_and_passes_by_duration(
    raw_cassette: Any, engine: Any
) -> None:
    path, recorded_events = raw_cassette
    other = Clip.from_array(engine.synthesize("two plus two", rate=16000), 16000)
    pcm = (other.to_pcm() + bytes(38400))[:38400]  # exactly 1.2 s at 16 kHz, other words
    with replay(path, pace="fast") as strict:
        assert strict.endpoints is not None
        refused = run(raw_realtime_turn(strict.endpoints, pcm))
    assert refused[-1]["type"] == "error"
    assert "field audio: audio content differs at the same duration 1.20 s" in str(
        strict.mismatches[0]
    )
    with replay(path, pace="fast", audio="duration") as loose:
        assert loose.endpoints is not None
        answered = run(raw_realtime_turn(loose.endpoints, pcm))
    assert loose.mismatches == []
    assert [e["type"] for e in answered] == [e["type"] for e in recorded_events]


def test_our_clients_raise_protocol_error_carrying_the_mismatch(
    recorded: Any, question: Clip
) -> None:
    path, _ = recorded
    short = question[:0.5]
    with replay(path, pace="fast") as tape:
        with pytest.raises(
            ProtocolError, match=r"request 2 \(POST /_upload/0\) field body\.file: duration"
        ):
            QwenAudio(ledger=Ledger()).ask(audio=short)
        with pytest.raises(
            ProtocolError, match=r"message \d+ \(input_audio_buffer\.commit\): the recording"
        ):
            run(omni_turn(short))
        with pytest.raises(
            ProtocolError, match=r"message \d+ \(StopSpeech\): the recording has binary audio"
        ):
            dialog_turn(short)
    assert len(tape.mismatches) == 3
    assert "audio sent so far 0.50 s" in str(tape.mismatches[1])


def test_a_request_beyond_the_cassette_is_refused_not_forwarded(
    recorded: Any, question: Clip
) -> None:
    path, _ = recorded
    with replay(path, pace="fast") as tape:
        session(question)
        with pytest.raises(ProtocolError, match="is not in the cassette"):
            QwenAudio(ledger=Ledger()).ask(audio=question)
    assert "not in the cassette" in str(tape.mismatches[0])


# ------------------------------------------------------------------ connect() and rules
def test_connect_returns_the_proxy_or_replay_server_only_inside_the_block(
    server: Any, recorded: Any, tmp_path: Path
) -> None:
    key = "sk-test-not-used"  # with a key connect() would pick the cloud: the block still wins
    with record(tmp_path / "empty.cassette", upstream=server.endpoints) as rec:
        inside = connect(key, quiet=True)
        assert inside == rec.endpoints and inside.http_base != server.endpoints.http_base
        with replay(recorded[0]) as tape:
            assert connect(key, quiet=True) == tape.endpoints
        assert connect(key, quiet=True) == rec.endpoints
    assert connect(key, quiet=True).http_base == "https://dashscope.aliyuncs.com/api/v1"
    assert Cassette(tmp_path / "empty.cassette").events == []


def test_rules_ignore_ids_and_timestamps_and_named_paths_but_not_content() -> None:
    rules = MatchRules()
    a = {
        "event_id": "event_1",
        "type": "session.update",
        "session": {"voice": "Chelsie", "instructions": "x"},
    }
    b = {
        "event_id": "event_2",
        "type": "session.update",
        "session": {"voice": "Ethan", "instructions": "y"},
    }
    assert first_difference(a, b, rules) == ("session.voice", "'Ethan' != recorded 'Chelsie'")
    assert first_difference(a, b, rules.ignoring("session.voice", "instructions")) is None
    assert first_difference({"k": REDACTED}, {"k": "anything"}, rules) is None
    assert first_difference({"k": [1, 2]}, {"k": [1]}, rules) == ("k", "1 items != recorded 2")
