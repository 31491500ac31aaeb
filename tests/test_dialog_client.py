"""Our ``Dialog`` client against the local server: the three modes, speech/VQA/video requests, and
what it keeps when the server misbehaves (faults injected by ``faulty_server``)."""

from __future__ import annotations

import io
import re
import threading
from typing import Any

import numpy as np
import pytest
from conftest import timeout

from nbtoolkit.audio.clip import Clip
from nbtoolkit.backends.dialog import Dialog, to_jpeg
from nbtoolkit.config import Secret, local_endpoints
from nbtoolkit.errors import (
    AudioError,
    AuthError,
    ConfigError,
    ConnectionLost,
    ImageError,
    ServerError,
)
from nbtoolkit.ledger import Ledger
from nbtoolkit.local import Faults
from nbtoolkit.protocols.dialog import MAX_IMAGE_BYTES

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
