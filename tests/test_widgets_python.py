"""Recorder and Player, Python side: a fake comm stands in for the browser view."""

from __future__ import annotations

import asyncio
import json
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from nbtoolkit.audio import Clip
from nbtoolkit.config import Secret
from nbtoolkit.errors import AudioError
from nbtoolkit.widgets import (
    Chunk,
    Player,
    Recorder,
    RecorderEvent,
    TakeEnded,
    TakeStarted,
)
from nbtoolkit.widgets.player import MAX_MESSAGE_BYTES
from tests.conftest import timeout

RATE = 16000


class FakeComm:
    """Records what the widget sends and delivers messages as the browser view would."""

    kernel = object()  # ipywidgets only sends on a comm that has a kernel

    def __init__(self) -> None:
        self.comm_id = uuid.uuid4().hex
        self.sent: list[tuple[dict[str, Any], list[Any]]] = []
        self._handler: Any = None

    def on_msg(self, callback: Any) -> None:
        self._handler = callback

    def send(self, data: Any = None, metadata: Any = None, buffers: Any = None) -> None:
        self.sent.append((data, list(buffers or [])))

    def close(self, *args: Any, **kwargs: Any) -> None:
        pass

    def from_view(self, content: dict[str, Any], buffers: list[bytes] | None = None) -> None:
        msg = {
            "content": {"data": {"method": "custom", "content": content}},
            "buffers": buffers or [],
        }
        self._handler(msg)

    def view_sets(self, **state: Any) -> None:
        self._handler({"content": {"data": {"method": "update", "state": state}}, "buffers": []})

    def custom(self) -> list[tuple[dict[str, Any], list[Any]]]:
        return [(d["content"], b) for d, b in self.sent if d.get("method") == "custom"]


@pytest.fixture
def recorder(tmp_path) -> Iterator[tuple[Recorder, FakeComm]]:  # type: ignore[no-untyped-def]
    rec = Recorder(save_dir=tmp_path)
    comm = FakeComm()
    rec.comm = comm
    try:
        yield rec, comm
    finally:
        rec.close()


@pytest.fixture
def player() -> Iterator[tuple[Player, FakeComm]]:
    p = Player()
    comm = FakeComm()
    p.comm = comm
    try:
        yield p, comm
    finally:
        p.close()


def tone(seconds: float, rate: int = RATE, hz: float = 440.0) -> Clip:
    t = np.arange(round(seconds * rate)) / rate
    return Clip.from_array(0.3 * np.sin(2 * np.pi * hz * t), rate)


def browser_chunks(clip: Clip, ms: int = 100) -> list[bytes]:
    return list(clip.chunks(ms))


def record_in_view(comm: FakeComm, chunks: list[bytes], *, stop: bool = True) -> None:
    comm.from_view({"type": "start", "rate": 44100, "t": time.time() * 1000})
    for seq, pcm in enumerate(chunks):
        comm.from_view({"type": "chunk", "seq": seq, "t": time.time() * 1000}, [pcm])
    if stop:
        comm.from_view({"type": "stop"})


# ---------------------------------------------------------------------- Recorder: the chunk path
def test_browser_chunks_reach_callbacks_and_become_the_clip(recorder) -> None:  # type: ignore[no-untyped-def]
    rec, comm = recorder
    got: list[bytes] = []
    rec.on_chunk(got.append)
    source = tone(1.0)
    chunks = browser_chunks(source)

    record_in_view(comm, [memoryview(c) for c in chunks])  # type: ignore[misc]

    assert got == chunks
    assert rec.clip == source
    assert rec.clips == [source]
    assert len(rec.chunk_latencies_ms) == len(chunks)
    assert not rec.recording


def test_each_take_is_kept_in_history(recorder) -> None:  # type: ignore[no-untyped-def]
    rec, comm = recorder
    first, second = tone(0.5, hz=300), tone(0.7, hz=600)
    record_in_view(comm, browser_chunks(first))
    record_in_view(comm, browser_chunks(second))
    assert rec.clips == [first, second]
    assert rec.clip == second


def test_duplicate_chunks_are_ignored_and_gaps_counted(recorder) -> None:  # type: ignore[no-untyped-def]
    rec, comm = recorder
    a, b, c = browser_chunks(tone(0.3))
    comm.from_view({"type": "start"})
    comm.from_view({"type": "chunk", "seq": 0}, [a])
    comm.from_view({"type": "chunk", "seq": 0}, [a])
    comm.from_view({"type": "chunk", "seq": 2}, [c])
    comm.from_view({"type": "stop"})
    assert rec.clip is not None
    assert rec.clip.to_pcm() == a + c
    assert rec.missing_chunks == 1
    del b


def test_failing_callback_does_not_stop_the_recording(recorder) -> None:  # type: ignore[no-untyped-def]
    rec, comm = recorder
    got: list[bytes] = []

    def broken(pcm: bytes) -> None:
        raise ValueError("consumer bug")

    rec.on_chunk(broken)
    rec.on_chunk(got.append)
    record_in_view(comm, browser_chunks(tone(0.5)))
    assert len(got) == 5
    assert rec.clip is not None and rec.clip.duration == pytest.approx(0.5)


def test_removed_callback_is_not_called(recorder) -> None:  # type: ignore[no-untyped-def]
    rec, comm = recorder
    got: list[bytes] = []
    rec.on_chunk(got.append)
    rec.on_chunk(got.append, remove=True)
    record_in_view(comm, browser_chunks(tone(0.2)))
    assert got == []


def test_stream_yields_live_chunks_and_ends_when_recording_stops(recorder) -> None:  # type: ignore[no-untyped-def]
    rec, comm = recorder
    chunks = browser_chunks(tone(0.5))

    async def main() -> list[bytes]:
        got: list[bytes] = []

        async def consume() -> None:
            async for pcm in rec.stream():
                got.append(pcm)

        task = asyncio.create_task(consume())
        await asyncio.sleep(0)  # let the consumer subscribe
        record_in_view(comm, chunks)
        await asyncio.wait_for(task, timeout(5))
        return got

    assert asyncio.run(main()) == chunks


def take_events(rec: Recorder, produce: Any) -> list[RecorderEvent]:
    """The take events a consumer on its own loop sees while ``produce()`` runs (from any thread)."""

    async def main() -> list[RecorderEvent]:
        events: list[RecorderEvent] = []
        with rec.events() as feed:
            await asyncio.to_thread(produce)
            feed.close()
            async with asyncio.timeout(timeout(5)):
                events = [event async for event in feed]
        return events

    return asyncio.run(main())


def test_take_events_are_take_started_then_each_chunk_then_take_ended(recorder) -> None:  # type: ignore[no-untyped-def]
    rec, comm = recorder
    chunks = browser_chunks(tone(0.3))

    events = take_events(rec, lambda: record_in_view(comm, chunks))

    assert [e.type for e in events] == ["take.started", *["take.chunk"] * 3, "take.ended"]
    started, *middle, ended = events
    assert isinstance(started, TakeStarted) and started.path == rec.path
    assert [e.pcm for e in middle if isinstance(e, Chunk)] == chunks
    assert isinstance(ended, TakeEnded) and ended.path == rec.path


def test_a_chunk_never_comes_before_the_start_of_its_take(recorder) -> None:  # type: ignore[no-untyped-def]
    # the view's "start" may be lost (or the take was opened elsewhere): the first chunk opens it
    rec, comm = recorder
    a, b = browser_chunks(tone(0.2))

    def chunks_without_start() -> None:
        comm.from_view({"type": "chunk", "seq": 0}, [a])
        comm.from_view({"type": "chunk", "seq": 1}, [b])
        comm.from_view({"type": "stop"})

    events = take_events(rec, chunks_without_start)

    assert [e.type for e in events] == ["take.started", "take.chunk", "take.chunk", "take.ended"]


def test_take_ended_carries_the_whole_take(recorder) -> None:  # type: ignore[no-untyped-def]
    rec, comm = recorder
    first, second = tone(0.5, hz=300), tone(0.7, hz=600)

    def two_takes() -> None:
        record_in_view(comm, browser_chunks(first))
        record_in_view(comm, browser_chunks(second))

    events = take_events(rec, two_takes)

    assert [e.clip for e in events if isinstance(e, TakeEnded)] == [first, second] == rec.clips


def test_a_take_without_audio_ends_with_no_clip_and_keeps_no_file(recorder) -> None:  # type: ignore[no-untyped-def]
    rec, comm = recorder

    events = take_events(rec, lambda: record_in_view(comm, []))

    assert [e.type for e in events] == ["take.started", "take.ended"]
    assert events[-1] == TakeEnded(None, "")
    assert rec.clips == []


def test_take_events_from_a_subshell_thread_keep_their_order_on_the_consumer_loop(recorder) -> None:  # type: ignore[no-untyped-def]
    # take_events() produces on a worker thread: every event hops to the consumer's loop
    rec, comm = recorder
    chunks = browser_chunks(tone(2.0), ms=20)

    events = take_events(rec, lambda: record_in_view(comm, chunks))

    assert [e.pcm for e in events if isinstance(e, Chunk)] == chunks
    assert isinstance(events[0], TakeStarted) and isinstance(events[-1], TakeEnded)


def test_a_closed_feed_receives_nothing_more(recorder) -> None:  # type: ignore[no-untyped-def]
    rec, comm = recorder

    async def main() -> list[RecorderEvent]:
        feed = rec.events()
        feed.close()
        record_in_view(comm, browser_chunks(tone(0.2)))
        return [event async for event in feed]

    assert asyncio.run(main()) == []
    assert rec.clip is not None  # the recording itself went on


def test_microphone_error_ends_the_take_and_keeps_what_arrived(recorder) -> None:  # type: ignore[no-untyped-def]
    rec, comm = recorder
    chunks = browser_chunks(tone(0.3))
    record_in_view(comm, chunks, stop=False)
    assert rec.recording
    comm.view_sets(status="error", error="The microphone stopped delivering sound — reconnect it")
    assert not rec.recording
    assert rec.clip is not None and rec.clip.to_pcm() == b"".join(chunks)


def test_page_reload_keeps_the_take_that_was_in_progress(recorder) -> None:  # type: ignore[no-untyped-def]
    rec, comm = recorder
    chunks = browser_chunks(tone(0.4))
    record_in_view(comm, chunks, stop=False)
    comm.from_view({"type": "ready"})  # the new view after a reload
    assert not rec.recording
    assert rec.clip is not None and rec.clip.to_pcm() == b"".join(chunks)


def test_start_without_a_view_or_source_says_how_to_fix() -> None:
    rec = Recorder()
    with pytest.raises(AudioError, match="pass source=Clip"):
        rec.start()
    rec.close()


def test_start_asks_a_rendered_view_to_record(recorder) -> None:  # type: ignore[no-untyped-def]
    rec, comm = recorder
    comm.from_view({"type": "ready"})
    rec.start()
    rec.stop()
    assert [c for c, _ in comm.custom()] == [{"type": "start"}, {"type": "stop"}]


# ---------------------------------------------------------------------- Recorder: WAV on disk
def test_recording_on_disk_is_readable_after_every_chunk(recorder) -> None:  # type: ignore[no-untyped-def]
    rec, comm = recorder
    chunks = browser_chunks(tone(0.5))
    record_in_view(comm, chunks[:3], stop=False)
    # as if the kernel died now: the file alone holds everything that arrived
    assert Recorder.recover(rec.path).to_pcm() == b"".join(chunks[:3])
    for seq, pcm in enumerate(chunks[3:], start=3):
        comm.from_view({"type": "chunk", "seq": seq}, [pcm])
    comm.from_view({"type": "stop"})
    assert Recorder.recover(rec.path) == rec.clip


def test_recover_trusts_the_file_length_when_the_header_lags(tmp_path) -> None:  # type: ignore[no-untyped-def]
    clip = tone(0.3)
    path = tmp_path / "cut.wav"
    header = clip.to_wav()[:44]
    # a header written for 0 bytes followed by audio: the process died before rewriting it
    path.write_bytes(header[:40] + struct.pack("<I", 0) + clip.to_pcm())
    assert Recorder.recover(path) == clip


def test_recover_reads_other_wav_files_too(tmp_path) -> None:  # type: ignore[no-untyped-def]
    clip = tone(0.3, rate=22050)
    assert Recorder.recover(clip.save(tmp_path / "x.wav")) == clip


def test_an_empty_take_leaves_no_file(recorder, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rec, comm = recorder
    comm.from_view({"type": "start"})
    comm.from_view({"type": "stop"})
    assert rec.clip is None
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- Recorder: simulated source
def test_simulated_source_feeds_the_same_path_at_16k(tmp_path) -> None:  # type: ignore[no-untyped-def]
    source = tone(1.0, rate=48000)
    rec = Recorder(source=source, realtime=False, save_dir=tmp_path)
    got: list[bytes] = []
    rec.on_chunk(got.append)
    clip = rec.start()
    assert isinstance(clip, Clip) and clip is rec.clip
    assert clip.rate == RATE
    assert clip == source.resample(RATE)
    assert len(got) == 10 and all(len(c) == 3200 for c in got)
    assert Recorder.recover(rec.path) == clip
    assert rec.status == "stopped" and rec.elapsed == pytest.approx(1.0)
    rec.close()


def test_realtime_simulation_streams_while_recording(tmp_path) -> None:  # type: ignore[no-untyped-def]
    source = tone(0.5)
    rec = Recorder(save_dir=tmp_path)

    async def main() -> tuple[list[bytes], list[bool]]:
        got: list[bytes] = []
        still_recording: list[bool] = []

        async def consume() -> None:
            async for pcm in rec.stream():
                got.append(pcm)
                still_recording.append(rec.recording)

        consumer = asyncio.create_task(consume())
        await asyncio.sleep(0)
        task = rec.simulate(source, realtime=True)
        assert isinstance(task, asyncio.Task)  # in a running loop the cell would return at once
        await asyncio.wait_for(task, timeout(10))
        await asyncio.wait_for(consumer, timeout(5))
        return got, still_recording

    got, still_recording = asyncio.run(main())
    assert b"".join(got) == source.to_pcm()
    # paced, not a burst: the consumer saw chunks while the take was still open
    assert still_recording[0]
    rec.close()


def test_record_button_of_a_simulated_recorder_plays_the_source_and_stop_cancels(tmp_path) -> None:  # type: ignore[no-untyped-def]
    source = tone(3.0)
    rec = Recorder(source=source, realtime=True, save_dir=tmp_path)
    comm = FakeComm()
    rec.comm = comm
    assert rec.simulated  # the view's Record button then asks the kernel instead of a microphone

    async def main() -> None:
        chunks = rec.stream()
        comm.from_view({"type": "record"})
        await asyncio.wait_for(anext(chunks), timeout(5))  # the first chunk is live
        comm.from_view({"type": "stop"})
        async for _ in chunks:  # the stream ends with the take
            pass

    asyncio.run(main())
    assert rec.clip is not None and 0 < rec.clip.duration < source.duration
    assert rec.clip.to_pcm() == source.to_pcm()[: rec.clip.nbytes]
    assert rec.status == "stopped"
    rec.close()


def test_record_and_stop_handled_on_a_subshell_thread_run_the_take_on_the_kernel_loop(
    tmp_path,
) -> None:  # type: ignore[no-untyped-def]
    # JupyterLab >= 4.4 with ipykernel 7 handles comm messages on a subshell: another thread with
    # its own running loop. The take must still run on the loop the Recorder was made on (the
    # kernel's), and Stop from that thread must reach it.
    source = tone(30.0)

    def subshell(message: dict[str, Any]) -> None:
        async def handle() -> None:
            comm.from_view(message)

        thread = threading.Thread(target=asyncio.run, args=(handle(),))
        thread.start()
        thread.join(timeout(5))

    async def main() -> Recorder:
        rec = Recorder(source=source, realtime=True, save_dir=tmp_path)  # made in a "cell"
        rec.comm = comm
        chunks = rec.stream()
        first = asyncio.ensure_future(anext(chunks))
        await asyncio.sleep(0)  # the stream is registered
        subshell({"type": "record"})
        await asyncio.wait_for(first, timeout(5))
        task = rec._sim_task
        assert task is not None and task.get_loop() is asyncio.get_running_loop()
        subshell({"type": "stop"})
        async with asyncio.timeout(timeout(5)):  # a 30 s source: only Stop ends it this soon
            async for _ in chunks:
                pass
        return rec

    comm = FakeComm()
    rec = asyncio.run(main())
    assert rec.clip is not None and 0 < rec.clip.duration < 5
    assert rec.clip.to_pcm() == source.to_pcm()[: rec.clip.nbytes]
    rec.close()


def test_ipywebrtc_recording_becomes_a_take(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ipywebrtc import AudioRecorder

    from nbtoolkit.audio.encode import encode

    source = tone(1.0, rate=48000, hz=500)
    webrtc = AudioRecorder()
    rec = Recorder.from_ipywebrtc(webrtc, save_dir=tmp_path)
    webrtc.audio.value = encode(source, "webm")
    assert rec.clip is not None and rec.clip.rate == RATE
    assert rec.clip.duration == pytest.approx(1.0, abs=0.1)
    expected = source.resample(RATE).to_float()
    n = min(len(expected), len(rec.clip))
    # Opus is lossy and may shift the start: compare the strongest cross-correlation
    corr = np.correlate(rec.clip.to_float()[:n], expected[:n], mode="full").max()
    assert corr / np.dot(expected[:n], expected[:n]) > 0.8
    assert Clip.from_ipywebrtc(webrtc).duration == pytest.approx(1.0, abs=0.1)
    rec.close()
    webrtc.close()


def test_ipywebrtc_without_a_recording_says_what_to_do() -> None:
    from ipywebrtc import AudioRecorder

    webrtc = AudioRecorder()
    with pytest.raises(AudioError, match="press the record button"):
        Clip.from_ipywebrtc(webrtc)
    webrtc.close()


# ---------------------------------------------------------------------- Player
def test_player_queues_until_the_view_is_ready_then_sends_in_order(player) -> None:  # type: ignore[no-untyped-def]
    p, comm = player
    a, b = tone(0.2, 24000).to_pcm(), tone(0.3, 24000).to_pcm()
    p.feed(a)
    p.feed(b)
    p.finish()
    assert comm.custom() == []  # no view yet: sending now would lose the audio
    comm.from_view({"type": "ready", "rate": 44100})
    sent = comm.custom()
    assert [c["type"] for c, _ in sent] == ["pcm", "pcm", "end"]
    assert [bytes(buf[0]) for _, buf in sent[:2]] == [a, b]
    p.feed(a, rate=16000)
    assert comm.custom()[-1][0] == {"type": "pcm", "rate": 16000}


def test_player_queue_before_ready_is_bounded(player) -> None:  # type: ignore[no-untyped-def]
    p, comm = player
    p.max_pending_bytes = 100_000
    chunks = [bytes([i]) * 40_000 for i in range(5)]
    for c in chunks:
        p.feed(c)
    comm.from_view({"type": "ready"})
    sent = [bytes(buf[0]) for _, buf in comm.custom()]
    assert sent == chunks[-2:]
    assert p.dropped_bytes == 120_000


def test_large_feeds_are_split_into_small_messages(player) -> None:  # type: ignore[no-untyped-def]
    p, comm = player
    comm.from_view({"type": "ready"})
    clip = tone(10.0, 24000)  # 480 000 bytes
    p.feed_clip(clip)
    sent = comm.custom()
    pcm = [bytes(buf[0]) for c, buf in sent if c["type"] == "pcm"]
    assert all(len(x) <= MAX_MESSAGE_BYTES for x in pcm) and len(pcm) == 2
    assert b"".join(pcm) == clip.to_pcm()
    assert sent[-1][0] == {"type": "end"}


def test_played_clip_is_what_was_fed_since_the_last_flush(player) -> None:  # type: ignore[no-untyped-def]
    p, _ = player
    first, second = tone(0.5, 24000), tone(0.25, 24000, hz=880)
    p.feed(first.to_pcm())
    p.flush()
    assert p.played_clip is None and p.fed_ms == 0
    p.feed(second.to_pcm())
    p.feed(first.to_pcm())
    assert p.played_clip == second + first
    assert p.fed_ms == pytest.approx(750)


def test_flush_before_ready_drops_the_queue(player) -> None:  # type: ignore[no-untyped-def]
    p, comm = player
    p.feed(tone(1.0, 24000).to_pcm())
    p.flush()
    comm.from_view({"type": "ready"})
    assert comm.custom() == []


def test_flush_is_sent_and_its_acknowledgement_recorded(player) -> None:  # type: ignore[no-untyped-def]
    p, comm = player
    comm.from_view({"type": "ready"})
    p.feed(tone(1.0, 24000).to_pcm())
    p.flush()
    assert comm.custom()[-1][0] == {"type": "flush", "epoch": 1}
    comm.from_view({"type": "flushed", "epoch": 1, "played_ms": 420.0})
    comm.view_sets(flushed=1, buffered_ms=0.0, playing=False)
    assert p.interrupted_at_ms == 420.0
    assert p.flushed == 1 and p.buffered_ms == 0


def test_feed_rejects_half_samples(player) -> None:  # type: ignore[no-untyped-def]
    p, _ = player
    with pytest.raises(AudioError, match="even number of bytes"):
        p.feed(b"\x00\x01\x02")


# ---------------------------------------------------------------------- what is synced
def _synced_state(widget: Any) -> str:
    state = {k: v for k, v in widget.get_state().items() if k not in ("_esm", "_css")}
    return json.dumps(state)


def test_no_synced_trait_holds_audio_or_secrets(recorder, player) -> None:  # type: ignore[no-untyped-def]
    canary = Secret("sk-canary-widgets-0123456789abcdef")
    rec, rcomm = recorder
    p, pcomm = player
    record_in_view(rcomm, browser_chunks(tone(5.0)))
    pcomm.from_view({"type": "ready"})
    p.feed_clip(tone(5.0, 24000))
    for widget in (rec, p):
        state = _synced_state(widget)
        assert len(state) < 2000, state  # small state only: 5 s of audio would be 160 kB
        assert canary.reveal() not in state and canary.reveal() not in repr(widget)
        assert not any(isinstance(v, (bytes, memoryview)) for v in widget.get_state().values())
    # every update the widgets pushed to the browser is small too
    for comm in (rcomm, pcomm):
        for data, buffers in comm.sent:
            if data.get("method") == "update":
                assert not buffers and len(json.dumps(data)) < 2000
