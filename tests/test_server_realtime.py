"""The local server's Qwen-Omni realtime route, driven by real clients over real sockets:
the unmodified dashscope SDK, the Omni realtime page's sample client, and raw ``websockets``."""

from __future__ import annotations

import asyncio
import base64
import json
import queue
import re
from typing import Any

import numpy as np
import pytest
from conftest import timeout

from nbtoolkit.audio.clip import Clip

MODEL = "qwen-omni-turbo-realtime"
QUESTION = "one plus one equals what"


@pytest.fixture(scope="module")
def question_pcm(engine: Any) -> bytes:
    """The spoken question as PCM16 16 kHz, with a little silence around it."""
    speech = np.asarray(engine.synthesize(QUESTION, rate=16000), dtype=np.int16)
    pad = np.zeros(3200, dtype=np.int16)
    return np.concatenate([pad, speech, pad]).astype("<i2").tobytes()


def words_in_audio(engine: Any, pcm24k: bytes) -> str:
    """What the engine's open-vocabulary ASR hears in answer audio (PCM16 24 kHz). The default
    ("auto") search prefers the engine's grammar of *questions*, which drops the answer's last word."""
    clip = Clip.from_pcm(pcm24k, 24000).resample(16000)
    text: str = engine.recognize(clip.samples, 16000, mode="auto").text
    return text


#: A server-VAD turn's events, in the order the server sends them.
TURN_ORDER = (
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "conversation.item.created",
    "conversation.item.input_audio_transcription.completed",
    "response.created",
    "response.audio.delta",
    "response.done",
)


def assert_in_order(kinds: list[str], names: tuple[str, ...]) -> None:
    """Each of ``names`` is in ``kinds``, first occurrences in this order."""
    positions = [kinds.index(k) for k in names]
    assert positions == sorted(positions), kinds


def transcripts(events: list[dict[str, Any]]) -> list[str]:
    """What the server heard, one transcript per committed turn."""
    return [
        e["transcript"]
        for e in events
        if e["type"] == "conversation.item.input_audio_transcription.completed"
    ]


def check_answer(engine: Any, events: list[dict[str, Any]]) -> None:
    """The turn heard the question and answered "two", in words and in speech."""
    kinds = [e["type"] for e in events]
    heard = transcripts(events)
    assert heard and all(w in heard[0].split() for w in ("one", "plus")), heard
    transcript = "".join(
        e["delta"] for e in events if e["type"] == "response.audio_transcript.delta"
    )
    assert "two" in transcript.lower(), transcript
    audio = b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.audio.delta"
    )
    assert "two" in words_in_audio(engine, audio).split()
    done = next(e for e in events if e["type"] == "response.done")
    assert done["response"]["status"] == "completed"
    usage = done["response"]["usage"]
    assert usage["input_tokens_details"]["audio_tokens"] > 0
    assert usage["output_tokens_details"]["audio_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    # ids link the response events together (docs/protocols.md#realtime-events)
    rid = next(e for e in events if e["type"] == "response.created")["response"]["id"]
    assert {e["response_id"] for e in events if "response_id" in e} == {rid}
    assert kinds.index("response.created") < kinds.index("response.audio.delta")
    assert kinds.index("response.audio.done") < kinds.index("response.done")


# ------------------------------------------------------------------ the unmodified SDK
class _Callback:
    """An OmniRealtimeCallback that queues every event for the test thread."""

    def __init__(self) -> None:
        from dashscope.audio.qwen_omni import OmniRealtimeCallback

        outer = self
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()

        class Callback(OmniRealtimeCallback):  # type: ignore[misc]
            def on_event(self, message: dict[str, Any]) -> None:
                outer.events.put(message)

        self.callback = Callback()

    def until(self, kind: str, seconds: float) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        while True:
            event = self.events.get(timeout=timeout(seconds))
            seen.append(event)
            if event["type"] == kind:
                return seen


def _sdk(server: Any, callback: _Callback) -> Any:
    from dashscope.audio.qwen_omni import OmniRealtimeConversation

    conv = OmniRealtimeConversation(
        model=MODEL,
        callback=callback.callback,
        url=server.endpoints.realtime_url,
        api_key=server.token.reveal(),
    )
    conv.connect()
    return conv


def test_sdk_manual_mode_answers_spoken_arithmetic(
    server: Any, engine: Any, question_pcm: bytes
) -> None:
    from dashscope.audio.qwen_omni import MultiModality

    cb = _Callback()
    conv = _sdk(server, cb)
    try:
        conv.update_session(
            output_modalities=[MultiModality.AUDIO, MultiModality.TEXT],
            voice="Chelsie",
            enable_turn_detection=False,
        )
        conv.append_audio(base64.b64encode(question_pcm).decode())
        conv.commit()
        conv.create_response()
        events = cb.until("response.done", 60)
        conv.end_session(timeout=int(timeout(10)))
    finally:
        conv.close()
    assert events[0]["type"] == "session.created"
    assert conv.get_session_id() == events[0]["session"]["id"]
    assert conv.get_last_response_id() == events[-1]["response"]["id"]
    check_answer(engine, events)


def _sdk_server_vad_turn(server: Any, *clips: bytes) -> list[dict[str, Any]]:
    """The SDK in server-VAD mode, streaming ``clips`` in 100 ms appends: events to response.done."""
    from dashscope.audio.qwen_omni import MultiModality

    cb = _Callback()
    conv = _sdk(server, cb)
    try:
        conv.update_session(
            output_modalities=[MultiModality.AUDIO, MultiModality.TEXT], voice="Serena"
        )
        for clip in clips:
            for i in range(0, len(clip), 3200):
                conv.append_audio(base64.b64encode(clip[i : i + 3200]).decode())
        events = cb.until("response.done", 60)
    finally:
        conv.close()
    return events


def test_sdk_server_vad_mode_answers_without_response_create(
    server: Any, engine: Any, question_pcm: bytes
) -> None:

    events = _sdk_server_vad_turn(server, question_pcm, bytes(16000 * 2 * 3 // 2))
    kinds = [e["type"] for e in events]
    assert "response.create" not in kinds
    started = next(e for e in events if e["type"] == "input_audio_buffer.speech_started")
    stopped = next(e for e in events if e["type"] == "input_audio_buffer.speech_stopped")
    committed = next(e for e in events if e["type"] == "input_audio_buffer.committed")
    assert started["item_id"] == stopped["item_id"] == committed["item_id"]
    assert started["audio_start_ms"] < stopped["audio_end_ms"]
    assert kinds.index("input_audio_buffer.speech_stopped") < kinds.index("response.created")
    check_answer(engine, events)


# ------------------------------------------------------------------ the seed's sample client
def _seed_client(server: Any, mode: str, **callbacks: Any) -> Any:
    from seed_clients.omni_realtime_client import OmniRealtimeClient, TurnDetectionMode

    return OmniRealtimeClient(
        base_url=server.endpoints.realtime_url,
        api_key=server.token.reveal(),
        model=MODEL,
        voice="Ethan",
        turn_detection_mode=TurnDetectionMode[mode],
        **callbacks,
    )


async def _seed_turn(server: Any, mode: str, pcm: bytes) -> tuple[list[str], str, bytes, int]:
    """One turn with the sample's OmniRealtimeClient; returns heard, output transcript, audio, interrupts."""
    heard: list[str] = []
    said: list[str] = []
    audio = bytearray()
    interrupts: list[int] = []
    done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    def finished(event: dict[str, Any]) -> None:
        # The sample's own "response.done" handler never fires (docs/protocols.md#realtime-sdk-client), but handlers for
        # events its if/elif chain does not consume do: output_item.done follows the last audio.
        if not done.done():
            done.set_result(event)

    client = _seed_client(
        server,
        mode,
        on_audio_delta=audio.extend,
        on_input_transcript=heard.append,
        on_output_transcript=said.append,
        on_interrupt=lambda: interrupts.append(1),
        extra_event_handlers={"response.output_item.done": finished},
    )
    await client.connect()
    handler = asyncio.create_task(client.handle_messages())
    try:
        if mode == "MANUAL":
            await client.stream_audio(pcm)  # the whole recording in one append, as the sample does
            await client.commit_audio_buffer()
            await client.create_response()
        else:
            for chunk in (pcm, bytes(16000 * 2 * 3 // 2)):
                for i in range(0, len(chunk), 3200):
                    await client.stream_audio(chunk[i : i + 3200])
        item = await asyncio.wait_for(done, timeout(60))
    finally:
        await client.close()
        await asyncio.wait_for(handler, timeout(10))
    assert item["item"]["content"][0]["transcript"] == "".join(said)
    return heard, "".join(said), bytes(audio), len(interrupts)


@pytest.mark.parametrize("mode", ["MANUAL", "SERVER_VAD"])
def test_seed_client_gets_spoken_answer(
    server: Any, engine: Any, question_pcm: bytes, mode: str
) -> None:
    heard, said, audio, interrupts = asyncio.run(_seed_turn(server, mode, question_pcm))
    assert heard and "plus" in heard[0].split()
    assert "two" in said.lower()
    assert "two" in words_in_audio(engine, audio).split()
    assert interrupts == (1 if mode == "SERVER_VAD" else 0)  # on_interrupt runs on speech_started


# ------------------------------------------------------------------ raw websockets
async def _raw(server: Any, frames: list[dict[str, Any]], until: str) -> list[dict[str, Any]]:
    from websockets.asyncio.client import connect

    url = f"{server.endpoints.realtime_url}?model={MODEL}"
    headers = {"Authorization": f"Bearer {server.token.reveal()}"}
    async with connect(url, additional_headers=headers, max_size=None, proxy=None) as ws:
        for frame in frames:
            await ws.send(json.dumps(frame))
        events: list[dict[str, Any]] = []
        while not events or events[-1]["type"] != until:
            events.append(json.loads(await asyncio.wait_for(ws.recv(), timeout(60))))
        return events


def test_session_update_with_bad_modalities_gets_error_event(server: Any) -> None:
    frames = [
        {"event_id": "event_bad", "type": "session.update", "session": {"modalities": ["audio"]}}
    ]
    events = asyncio.run(_raw(server, frames, "error"))
    assert [e["type"] for e in events] == ["session.created", "error"]
    error = events[-1]["error"]
    assert error["param"] == "session.modalities"
    assert error["event_id"] == "event_bad"
    assert "modalities" in error["message"]


def test_text_only_modalities_answer_with_text_events(server: Any, question_pcm: bytes) -> None:
    frames = [
        {"type": "session.update", "session": {"modalities": ["text"], "turn_detection": None}},
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(question_pcm).decode()},
        {"type": "input_audio_buffer.commit"},
        {"type": "response.create"},
    ]
    events = asyncio.run(_raw(server, frames, "response.done"))
    kinds = {e["type"] for e in events}
    assert "response.audio.delta" not in kinds and "response.audio_transcript.delta" not in kinds
    text = "".join(e["delta"] for e in events if e["type"] == "response.text.delta")
    assert "two" in text.lower()
    assert next(e for e in events if e["type"] == "response.text.done")["text"] == text
    usage = events[-1]["response"]["usage"]
    assert usage["output_tokens_details"]["audio_tokens"] == 0


def test_frames_of_several_megabytes_are_accepted(server: Any) -> None:
    big = bytes(16000 * 2 * 59)  # 59 s of PCM16 (under the 60 s buffer cap): 2.5 MB of base64
    frames = [
        {"type": "session.update", "session": {"turn_detection": None}},
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(big).decode()},
        {"type": "input_audio_buffer.clear"},
    ]
    events = asyncio.run(_raw(server, frames, "input_audio_buffer.cleared"))
    assert [e["type"] for e in events] == [
        "session.created",
        "session.updated",
        "input_audio_buffer.cleared",
    ]


def test_response_cancel_without_response_gets_error_and_session_finish_ends(server: Any) -> None:
    frames = [
        {"event_id": "event_c", "type": "response.cancel"},
        {"type": "session.finish"},
    ]
    events = asyncio.run(_raw(server, frames, "session.finished"))
    assert [e["type"] for e in events] == ["session.created", "error", "session.finished"]
    assert events[1]["error"]["code"] == "response_cancel_not_active"


def test_wrong_token_is_refused(server: Any) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async def attempt() -> None:
        url = f"{server.endpoints.realtime_url}?model={MODEL}"
        async with connect(
            url, additional_headers={"Authorization": "Bearer nope"}, proxy=None
        ) as ws:
            await asyncio.wait_for(ws.recv(), timeout(10))

    with pytest.raises(ConnectionClosed) as info:
        asyncio.run(attempt())
    assert info.value.rcvd is not None and info.value.rcvd.code == 1008


def test_server_vad_pause_inside_a_question_is_transcribed_whole_in_protocol_order(
    server: Any, engine: Any
) -> None:
    """A pause makes the server start recognising "what is two" early; when the
    speech resumes that guess must be dropped and the whole question heard and answered."""
    rate, pad = 16000, np.zeros(3200, dtype=np.int16)
    first = np.asarray(engine.synthesize("what is two", rate=rate), dtype=np.int16)
    second = np.asarray(engine.synthesize("times three", rate=rate), dtype=np.int16)
    # 0.2 s, plus eSpeak's own ~0.3 s around words: under the 800 ms window, over the VAD tail
    pcm = np.concatenate([pad, first, np.zeros(rate // 5, np.int16), second, pad])

    events = _sdk_server_vad_turn(server, pcm.astype("<i2").tobytes(), bytes(rate * 3))
    kinds = [e["type"] for e in events]
    assert kinds.count("input_audio_buffer.speech_stopped") == 1
    assert_in_order(kinds, TURN_ORDER[1:-1])
    assert transcripts(events)[0] == "what is two times three"
    answer = "".join(e["delta"] for e in events if e["type"] == "response.audio_transcript.delta")
    assert "six" in re.findall(r"[a-z]+", answer.lower())
