"""Our ``Dialog`` client against the local server: the three modes, speech/VQA/video requests, and
what it keeps when the server misbehaves (faults injected by ``faulty_server``)."""

from __future__ import annotations

import asyncio
import io
import re
import threading
from collections.abc import AsyncIterator, Coroutine
from contextlib import aclosing
from typing import Any, TypeVar

import numpy as np
import pytest
from conftest import timeout

from nbtoolkit.audio.clip import Clip
from nbtoolkit.backends.dialog import Dialog, DialogLive, to_jpeg
from nbtoolkit.config import Secret, local_endpoints
from nbtoolkit.errors import (
    AudioError,
    AuthError,
    ConfigError,
    ConnectionLost,
    ImageError,
    ServerError,
)
from nbtoolkit.events import (
    AudioDelta,
    Cancelled,
    Done,
    Failed,
    Heard,
    StateChanged,
    StreamEvent,
    TextDelta,
)
from nbtoolkit.ledger import Ledger
from nbtoolkit.local import Faults
from nbtoolkit.protocols.dialog import MAX_IMAGE_BYTES

T = TypeVar("T")

LONG_TEXT = (
    "this is a long answer that keeps going for a while so that there is time to interrupt it "
    "before the end of the sentence is reached by the speaker"
)


@pytest.fixture(scope="module")
def question(engine: Any) -> Clip:
    return Clip(engine.synthesize("one plus one equals what", rate=16000), 16000)


def words(text: str) -> list[str]:
    return re.sub(r"[^\w\s]", " ", text.lower()).split()


def spoken_words(engine: Any, clip: Clip) -> list[str]:
    """Words in TTS audio, by the engine's open-vocabulary ASR (its command grammar would stop at
    "... equals")."""
    return words(engine.recognize(clip.resample(16000).samples, 16000, mode="auto").text)


def dialog(server: Any, **kw: Any) -> Dialog:
    kw.setdefault("ledger", Ledger())
    kw.setdefault("timeout", timeout(20))
    return Dialog(server.endpoints, **kw)


def png(colour: tuple[int, int, int], size: tuple[int, int] = (160, 120)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------- modes
@pytest.mark.parametrize("mode", ["push2talk", "tap2talk", "duplex"])
def test_say_hears_the_question_and_answers_two_in_text_and_audio(server, engine, question, mode):
    ledger = Ledger()
    with dialog(server, mode=mode, sample_rate=24000, ledger=ledger) as d:
        turn = d.ask(question)
        assert d.state == "Listening"
    assert "plus" in words(turn.heard)
    assert "two" in words(turn.text)
    assert turn.status == "completed" and turn.local
    assert turn.audio is not None and turn.audio.rate == 24000
    assert "two" in spoken_words(engine, turn.audio)
    assert turn.usage.input_audio > 0 and turn.usage.output_text > 0
    assert [e.name for e in turn.timeline if e.lane == "state"][-1] == "Listening"
    assert turn.timeline.first("first_audio") is not None
    assert [(e.backend, e.kind) for e in ledger.entries] == [("dialog", "turn")]


def test_say_with_real_time_pacing_gives_the_same_answer(server, question):
    with dialog(server, mode="tap2talk") as d:
        turn = d.ask(question, pace=True)
    assert "two" in words(turn.text)


@pytest.mark.parametrize("mode", ["push2talk", "tap2talk", "duplex"])
def test_a_silent_clip_raises_audio_error_at_once_and_the_dialog_goes_on(server, mode):
    with dialog(server, mode=mode) as d:
        with pytest.raises(AudioError, match=r"No speech was heard in the 1\.0 s sent"):
            d.ask(Clip.silence(1.0))
        assert d.speak("hello").text == "hello"


def test_speak_says_the_text_verbatim(server, engine):
    with dialog(server, sample_rate=16000) as d:
        turn = d.speak("hello from the offline engine")
    assert turn.text == "hello from the offline engine" and turn.heard == ""
    assert turn.audio is not None
    assert "hello" in spoken_words(engine, turn.audio)


def test_ask_answers_a_typed_question(server):
    with dialog(server) as d:
        turn = d.ask(text="one plus one equals what")
    assert "two" in words(turn.text)


# ----------------------------------------------------------------------------- images, video
def test_asking_with_an_image_follows_the_visual_qa_command_then_sends_the_image(server):
    with dialog(server) as d:
        turn = d.ask(text="what is in front of me", images=[png((220, 20, 20))])
    client_marks = [e.name for e in turn.timeline if e.lane == "client"]
    assert client_marks == ["ask", "visual_qa", "send_image"]
    assert "red" in words(turn.text)
    assert turn.heard == "what is in front of me"
    assert turn.usage.input_image > 0


def test_to_jpeg_reencodes_a_large_image_under_the_limit():
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 255, (900, 1200, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "PNG")
    assert len(buf.getvalue()) > MAX_IMAGE_BYTES
    out = to_jpeg(buf.getvalue())
    assert len(out) <= MAX_IMAGE_BYTES
    assert Image.open(io.BytesIO(out)).format == "JPEG"


def test_small_jpeg_is_sent_unchanged_and_non_images_are_refused(tmp_path):
    small = to_jpeg(png((1, 2, 3)))
    assert to_jpeg(small) == small
    with pytest.raises(ImageError, match="JPEG or PNG"):
        to_jpeg(b"not an image")
    with pytest.raises(ImageError, match="check the path"):
        to_jpeg(tmp_path / "missing.jpg")


def test_live_video_question_is_about_the_latest_frame_and_frames_are_limited_to_2_fps(
    server, engine
):
    question = Clip(engine.synthesize("what is in front of me", rate=16000), 16000)
    with dialog(server, mode="duplex", video=True) as d:
        now = [100.0]
        d._clock = lambda: now[0]
        d.connect_video()
        assert d.send_frame(png((220, 20, 20)))
        now[0] += 0.2
        assert not d.send_frame(png((20, 220, 20)))  # too soon: dropped
        now[0] += 0.5
        assert d.send_frame(png((20, 20, 220)))
        turn = d.ask(question)
    assert "blue" in words(turn.text) and "green" not in words(turn.text)


def test_connect_video_needs_a_video_dialog(server):
    with dialog(server) as d, pytest.raises(ConfigError, match="video=True"):
        d.connect_video()


# ----------------------------------------------------------------------------- control
def test_interrupt_from_the_audio_hook_cancels_the_answer_and_keeps_what_arrived(server, engine):
    full = len(engine.synthesize(LONG_TEXT, rate=16000)) / 16000
    chunks: list[Clip] = []
    holder: dict[str, Dialog] = {}

    def on_audio(clip: Clip) -> None:
        chunks.append(clip)
        if len(chunks) == 2:
            holder["d"].interrupt()

    with dialog(server, sample_rate=16000, on_audio=on_audio) as d:
        holder["d"] = d
        turn = d.speak(LONG_TEXT)
        d.heartbeat()
        after = d.speak("still here")
    assert turn.status == "cancelled"
    assert turn.audio is not None and turn.audio.duration < full
    assert "RequestToSpeak" in [e.name for e in turn.timeline if e.lane == "client"]
    assert after.status == "completed" and after.text == "still here"


def test_hooks_see_states_and_growing_text(server, question):
    states: list[str] = []
    texts: list[tuple[str, str, bool]] = []
    with dialog(server, on_state=states.append, on_text=lambda *a: texts.append(a)) as d:
        d.ask(question)
    assert states[:1] == ["Listening"] and "Thinking" in states and "Responding" in states
    assert any(role == "user" and final and "plus" in words(t) for role, t, final in texts)
    assert any(role == "assistant" and final and "two" in words(t) for role, t, final in texts)


# ----------------------------------------------------------------------------- faults
def _audio_frames_before_drop(text: str, audio_frames: int) -> int:
    """Answer frames of a TTS-only round before its audio: Thinking, Responding,
    RespondingStarted and one growing RespondingContent per word."""
    return 3 + len(text.split()) + audio_frames


def test_abrupt_drop_mid_answer_raises_connection_lost_with_partial_text_and_audio(faulty_server):
    faulty_server.faults = Faults(drop_after=_audio_frames_before_drop(LONG_TEXT, 3))
    ledger = Ledger()
    with dialog(faulty_server, sample_rate=16000, ledger=ledger) as d:
        with pytest.raises(ConnectionLost) as err:
            d.speak(LONG_TEXT)
        with pytest.raises(ConnectionLost, match="not connected"):
            d.speak("again")
    partial = err.value.partial
    assert partial.text == LONG_TEXT and partial.status == "failed"
    assert partial.audio is not None and partial.audio.duration == pytest.approx(0.3)
    assert [e.usage.output_audio > 0 for e in ledger.entries] == [True]  # the partial is counted


def test_close_1011_mid_answer_raises_server_error_with_partial(faulty_server):
    faulty_server.faults = Faults(
        drop_after=_audio_frames_before_drop(LONG_TEXT, 2), close_code=1011
    )
    with dialog(faulty_server, sample_rate=16000) as d, pytest.raises(ServerError) as err:
        d.speak(LONG_TEXT)
    assert err.value.partial.text == LONG_TEXT
    assert err.value.partial.audio.duration == pytest.approx(0.2)


def test_malformed_and_unknown_frames_are_noted_and_the_turn_completes(faulty_server):
    faulty_server.faults = Faults(malformed_after=2, unknown_event_after=4)
    with dialog(faulty_server) as d:
        turn = d.speak("hello there")
    assert turn.text == "hello there" and turn.status == "completed"
    marks = [e.name for e in turn.timeline if e.lane == "client"]
    assert "malformed_frame" in marks and "unknown_event" in marks


def test_slow_server_still_completes_the_turn(faulty_server):
    faulty_server.faults = Faults(delay=0.02)
    with dialog(faulty_server) as d:
        turn = d.speak("hello there")
    assert turn.text == "hello there" and turn.audio is not None


def test_server_that_never_answers_times_out_as_connection_lost(faulty_server):
    with dialog(faulty_server, timeout=timeout(2)) as d:
        faulty_server.faults = Faults(never_answer=True)
        with pytest.raises(ConnectionLost, match="within"):
            d.speak("hello")


def test_refused_start_raises_server_error_after_the_retries(faulty_server):
    faulty_server.faults = Faults(status=503, fail_times=3)  # the default policy tries 3 times
    with pytest.raises(ServerError, match="ServiceUnavailable"):
        dialog(faulty_server).open()


def test_wrong_token_raises_auth_error_without_showing_it(server):
    secret = "wrong-token-value"
    d = Dialog(
        local_endpoints(server.base_url, Secret(secret)), ledger=Ledger(), timeout=timeout(10)
    )
    with pytest.raises(AuthError) as err:
        d.open()
    assert secret not in str(err.value)


def test_unknown_mode_is_refused_before_connecting(server):
    with pytest.raises(ConfigError, match="push2talk"):
        Dialog(server.endpoints, mode="walkie-talkie")


def test_hooks_run_off_the_callers_thread(server):
    threads: set[str] = set()
    with dialog(server, on_audio=lambda clip: threads.add(threading.current_thread().name)) as d:
        d.speak("hi")
    assert threads and threading.current_thread().name not in threads


def test_usage_is_counted_by_the_engine_rule_when_the_service_reports_none(server):
    from nbtoolkit.protocols.dialog import DialogTurnCollector

    answer = DialogTurnCollector()
    answer.heard, answer.text, answer.sent_seconds = "one plus one", "two", 1.5
    answer.audio += bytes(2 * 24000)  # 1 s at 24 kHz
    usage = dialog(server, sample_rate=24000)._usage(answer)
    assert usage.input_audio > 0 and usage.input_text == 0
    assert usage.output_text > 0 and usage.output_audio > 0


# ----------------------------------------------------------------------------- streaming
def speech(engine: Any, text: str) -> Clip:
    return Clip(engine.synthesize(text, rate=16000), 16000)


def test_stream_reports_two_continuously_spoken_questions_as_two_turns(server, engine):
    first = speech(engine, "one plus one equals what")
    second = speech(engine, "two plus two equals what")
    engine.transcribe(first.samples)  # loaded now, so the first answer fits in the pause
    # one live microphone: speech, a pause long enough to be answered, speech again
    mic = Clip.silence(0.3) + first + Clip.silence(3.0) + second
    ledger, hooked = Ledger(), []
    with dialog(server, mode="duplex", ledger=ledger, on_turn=hooked.append) as d:
        with d.live() as s:
            s.send_audio(mic, pace=True)  # the stream's zero frames end the second utterance
            one, two = s.next_turn(timeout(20)), s.next_turn(timeout(20))
        assert d.speak("still here").text == "still here"  # the dialog outlives its stream
    assert "plus" in words(one.heard) and "two" in words(one.text)
    assert words(two.heard)[:2] == ["two", "plus"] and "four" in words(two.text)
    assert [t.status for t in (one, two)] == ["completed", "completed"]
    assert hooked == [one, two]
    assert two.audio is not None and spoken_words(engine, two.audio)[:4] == [
        "two",
        "plus",
        "two",
        "equals",
    ]
    assert [e.kind for e in ledger.entries] == ["turn", "turn", "turn"]
    assert all(e.usage.input_audio > 0 for e in ledger.entries[:2])


def test_stream_barge_in_cancels_the_answer_and_flushes(server, engine, question):
    responding = threading.Event()
    flushes: list[str] = []
    full = len(engine.synthesize(LONG_TEXT, rate=16000)) / 16000
    with (
        dialog(
            server,
            mode="duplex",
            sample_rate=16000,
            on_state=lambda state: state == "Responding" and responding.set(),
            on_flush=lambda: flushes.append("flush"),
        ) as d,
        d.live() as s,
    ):
        s.speak(LONG_TEXT)
        assert responding.wait(timeout(20))
        s.send_audio(Clip.silence(0.3) + question, pace=True)  # the user talks over it
        cut, answer = s.next_turn(timeout(20)), s.next_turn(timeout(20))
    assert cut.status == "cancelled" and cut.heard == ""
    assert cut.audio is not None and cut.audio.duration < full
    assert flushes == ["flush"]
    assert answer.status == "completed" and "two" in words(answer.text)
    assert "plus" in words(answer.heard)


def test_stream_tap2talk_turn_ends_by_the_servers_vad(server, question):
    with dialog(server, mode="tap2talk") as d, d.live() as s:
        s.start_speech()
        s.send_audio(question)  # as fast as the socket takes it; zero frames follow
        turn = s.next_turn(timeout(20))
    assert "two" in words(turn.text) and turn.status == "completed"
    assert "SendSpeech" in [e.name for e in turn.timeline if e.lane == "client"]


def test_stream_end_of_silent_input_raises_audio_error_and_streaming_goes_on(server, question):
    with dialog(server, mode="duplex") as d, d.live() as s:
        s.send_audio(Clip.silence(1.0))
        s.end_of_input()
        with pytest.raises(AudioError, match="heard no speech"):
            s.next_turn(timeout(10))
        s.send_audio(question)
        s.end_of_input()
        turn = s.next_turn(timeout(20))
    assert "two" in words(turn.text)


def test_stream_ask_about_an_image_is_answered_as_a_turn(server):
    with dialog(server, mode="duplex") as d, d.live() as s:
        s.ask("what is in front of me", image=png((20, 220, 20)))
        turn = s.next_turn(timeout(20))
    assert "green" in words(turn.text) and turn.usage.input_image > 0


def test_stream_drop_mid_answer_ends_it_with_the_partial_turn_recorded(faulty_server):
    ledger = Ledger()
    d = dialog(faulty_server, mode="duplex", sample_rate=16000, ledger=ledger)
    with d, d.live() as s:
        faulty_server.faults = Faults(drop_after=_audio_frames_before_drop(LONG_TEXT, 3))
        s.speak(LONG_TEXT)
        with pytest.raises(ConnectionLost) as err:
            s.next_turn(timeout(20))
        with pytest.raises(ConnectionLost):
            s.next_turn(timeout(5))  # the stream is over for good
        assert s.closed
    partial = err.value.partial
    assert partial.text == LONG_TEXT and partial.status == "failed"
    assert partial.audio is not None and partial.audio.duration == pytest.approx(0.3)
    assert [e.usage.output_audio > 0 for e in ledger.entries] == [True]


def test_turn_calls_are_refused_while_a_stream_reads_the_answers(server, question):
    with dialog(server, mode="duplex") as d, d.live():
        with pytest.raises(ConfigError, match="live session"):
            d.ask(question)
        with pytest.raises(ConfigError, match="live session"):
            d.live()


# ----------------------------------------------------------------------------- live events
def run_async(coro: Coroutine[Any, Any, T], seconds: float = 40) -> T:
    """``coro`` on one fresh event loop, bounded."""
    return asyncio.run(asyncio.wait_for(coro, timeout(seconds)))


async def read_until(events: AsyncIterator[StreamEvent], turns: int) -> list[StreamEvent]:
    """The events up to the ``turns``-th Done."""
    got: list[StreamEvent] = []
    async with aclosing(events):  # type: ignore[type-var]  # an async generator
        async for event in events:
            got.append(event)
            if sum(isinstance(e, Done) for e in got) == turns:
                return got
    return got


def seconds_of(events: list[StreamEvent]) -> float:
    return sum(e.audio.duration for e in events if isinstance(e, AudioDelta))


def test_live_events_come_in_order_with_the_words_heard_and_said_and_done_carries_the_reply(
    server, engine, question
):
    async def talk(s: DialogLive) -> list[StreamEvent]:
        events = s.events()  # read from now, before anything is sent
        sending = asyncio.create_task(asyncio.to_thread(s.send_audio, Clip.silence(0.3) + question))
        got = await read_until(events, 1)
        await sending
        return got

    with dialog(server, mode="duplex", sample_rate=16000) as d, d.live() as s:
        got = run_async(talk(s))
        turn = s.next_turn(timeout(5))  # the turns still queue for next_turn
    types = [e.type for e in got]
    assert types[-1] == "done" and types.count("done") == 1
    done = got[-1]
    assert isinstance(done, Done) and done.reply is turn and turn.status == "completed"
    states = [e.state for e in got if isinstance(e, StateChanged)]
    assert states[-3:] == ["Thinking", "Responding", "Listening"]
    heard = [e for e in got if isinstance(e, Heard)]
    assert heard[-1].final and "plus" in words(heard[-1].text) and heard[-1].text == turn.heard
    said = "".join(e.delta for e in got if isinstance(e, TextDelta))
    assert said == turn.text and "two" in words(said)
    assert turn.audio is not None and seconds_of(got) == pytest.approx(turn.audio.duration)
    spoken = Clip.from_pcm(
        b"".join(e.audio.to_pcm() for e in got if isinstance(e, AudioDelta)), 16000
    )
    assert "two" in spoken_words(engine, spoken)
    # heard as it is spoken, then answered: words before their audio
    assert types.index("speech.started") < types.index("input.transcript")
    assert (
        max(types.index("speech.stopped"), got.index(heard[-1]))
        < got.index(StateChanged("Responding"))
        < types.index("text.delta")
        < types.index("audio.delta")
    )


def test_live_barge_in_gives_cancelled_and_the_abandoned_answers_late_audio_never_arrives(
    server, engine, question
):
    full = len(engine.synthesize(LONG_TEXT, rate=16000)) / 16000
    late = np.full(1600, 9000, dtype="<i2").tobytes()  # 0.1 s of the abandoned answer
    states: list[str] = []
    flushes: list[str] = []
    holder: dict[str, Dialog] = {}

    def on_state(state: str) -> None:
        # The cloud may still send frames of an answer after the Listening that abandons it; the
        # local server stops at once, so the frame is put where the SDK would put it.
        if states[-1:] == ["Responding"] and state == "Listening" and not flushes:
            holder["d"]._inbox.put("audio", late)
            flushes.append("late frame sent")
        states.append(state)

    async def talk(s: DialogLive) -> list[StreamEvent]:
        events = s.events()
        s.speak(LONG_TEXT)
        got: list[StreamEvent] = []
        sending = None
        async with aclosing(events):  # type: ignore[type-var]  # an async generator
            async for event in events:
                got.append(event)
                if event == StateChanged("Responding") and sending is None:
                    talking = Clip.silence(0.3) + question  # the user talks over the answer
                    sending = asyncio.create_task(
                        asyncio.to_thread(s.send_audio, talking, pace=True)
                    )
                if sum(isinstance(e, Done) for e in got) == 2:
                    break
        assert sending is not None
        await sending
        return got

    with (
        dialog(
            server,
            mode="duplex",
            sample_rate=16000,
            on_state=on_state,
            on_flush=lambda: flushes.append("flush"),
        ) as d,
        d.live() as s,
    ):
        holder["d"] = d
        got = run_async(talk(s))
    assert flushes == ["late frame sent", "flush"]
    (cancel,) = [i for i, e in enumerate(got) if isinstance(e, Cancelled)]
    cut_done, answer_done = [e for e in got if isinstance(e, Done)]
    cut, answer = cut_done.reply, answer_done.reply
    assert got[cancel + 1] is cut_done and got[cancel].reply is cut  # type: ignore[union-attr]
    assert cut.status == "cancelled" and answer.status == "completed"
    assert "two" in words(answer.text) and "plus" in words(answer.heard)
    # what arrived of the cut answer came before the cancel; after it, only the next answer's
    first_audio, after = got[:cancel], got[cancel:]
    assert cut.audio is not None and seconds_of(first_audio) == pytest.approx(cut.audio.duration)
    assert cut.audio.duration < full
    next_responding = after.index(StateChanged("Responding"))
    assert not [e for e in after[:next_responding] if isinstance(e, AudioDelta)]
    assert answer.audio is not None and seconds_of(after) == pytest.approx(answer.audio.duration)
    assert "two" in spoken_words(engine, answer.audio)


def test_a_failed_live_turn_is_an_event_and_the_session_goes_on(server, question):
    async def talk(s: DialogLive) -> list[StreamEvent]:
        events = s.events()
        got: list[StreamEvent] = []

        def mumble() -> None:
            s.send_audio(Clip.silence(1.0))
            s.end_of_input()

        def ask() -> None:
            s.send_audio(question)
            s.end_of_input()

        await asyncio.to_thread(mumble)
        async with aclosing(events):  # type: ignore[type-var]  # an async generator
            async for event in events:
                got.append(event)
                if isinstance(event, Failed):
                    await asyncio.to_thread(ask)
                if isinstance(event, Done):
                    break
        return got

    with dialog(server, mode="duplex") as d, d.live() as s:
        got = run_async(talk(s))
        assert not s.closed
    (failed,) = [e for e in got if isinstance(e, Failed)]
    assert isinstance(failed.error, AudioError) and "heard no speech" in str(failed.error)
    done = got[-1]
    assert isinstance(done, Done) and "two" in words(done.reply.text)
    assert got.index(failed) < len(got) - 1


def test_live_events_end_when_the_session_closes_and_raise_what_dropped_it(faulty_server):
    async def read_all(events: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
        return [event async for event in events]

    async def closing(s: DialogLive) -> tuple[list[StreamEvent], list[StreamEvent]]:
        events = s.events()
        await asyncio.to_thread(s.close)
        return await read_all(events), await read_all(s.events())  # even a late reader ends

    with dialog(faulty_server, mode="duplex") as d:
        assert run_async(closing(d.live()), 15) == ([], [])
        assert d.speak("still here").text == "still here"

    async def dropped(s: DialogLive) -> tuple[list[StreamEvent], ServerError]:
        events = s.events()
        s.speak(LONG_TEXT)
        got: list[StreamEvent] = []
        with pytest.raises(ServerError) as err:
            async for event in events:
                got.append(event)
        return got, err.value

    d = dialog(faulty_server, mode="duplex", sample_rate=16000)
    with d, d.live() as s:
        faulty_server.faults = Faults(
            drop_after=_audio_frames_before_drop(LONG_TEXT, 3), close_code=1011
        )
        got, error = run_async(dropped(s))
    assert not [e for e in got if isinstance(e, Done)]
    assert "".join(e.delta for e in got if isinstance(e, TextDelta)) == LONG_TEXT
    assert error.partial.text == LONG_TEXT
    assert seconds_of(got) == pytest.approx(0.3) == error.partial.audio.duration


@pytest.mark.parametrize("mode", ["push2talk", "tap2talk", "duplex"])
def test_noise_without_speech_is_reported_as_no_speech_heard_not_a_timeout(server, mode):
    hiss = Clip.from_array(0.01 * np.random.default_rng(0).standard_normal(3 * 16000), 16000)
    with dialog(server, mode=mode, timeout=timeout(30)) as d:
        with pytest.raises(AudioError, match=r"No speech was heard in the 3\.0 s sent"):
            d.ask(hiss)
        assert d.speak("still here").text == "still here"  # the dialog goes on
