"""webrtcvad streaming VAD: events near the true speech span, no events on silence or low noise."""

from __future__ import annotations

import numpy as np
import pytest

from nbtoolkit.local.engine import Engine, VadEvent, VadStream
from nbtoolkit.local.engine.vad import TAIL_MS, aggressiveness


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine().load()


def _true_span(pcm: np.ndarray, rate: int) -> tuple[int, int]:
    """First and last 10 ms frame within 40 dB of the loudest, in ms."""
    n = rate // 100
    f = pcm[: len(pcm) // n * n].reshape(-1, n).astype(np.float64)
    r = np.sqrt((f * f).mean(axis=1))
    idx = np.flatnonzero(r >= r.max() * 10 ** (-40 / 20))
    return int(idx[0]) * 10, int(idx[-1] + 1) * 10


def _utterance(
    engine: Engine, text: str, rate: int, before: float = 1.0, after: float = 1.5
) -> np.ndarray:
    return np.concatenate(
        [
            np.zeros(int(rate * before), np.int16),
            engine.synthesize(text, rate),
            np.zeros(int(rate * after), np.int16),
        ]
    )


def _noise(n: int, dbfs: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0, 32768 * 10 ** (dbfs / 20), n), -32768, 32767).astype(np.int16)


def _feed(stream: VadStream, pcm: np.ndarray, chunk_ms: float = 20) -> list[VadEvent]:
    n = max(1, int(stream.rate * chunk_ms / 1000))
    events: list[VadEvent] = []
    for i in range(0, len(pcm), n):
        events += stream.feed(pcm[i : i + n].tobytes())
    return events + stream.flush()


@pytest.mark.parametrize("rate", [16000, 24000, 48000])
def test_one_utterance_gives_one_start_and_one_stop_at_the_true_span(
    engine: Engine, rate: int
) -> None:
    pcm = _utterance(engine, "what is in front of me", rate)
    start, end = _true_span(pcm, rate)
    events = _feed(engine.vad(rate=rate), pcm)
    assert [e.kind for e in events] == ["speech_started", "speech_stopped"]
    began, stopped = events
    assert abs(began.t_ms - start) <= 60
    assert abs(stopped.t_ms - end) <= 100
    # the stop is decided one silence window after the end of speech
    assert stopped.decided_ms is not None and stopped.decided_ms >= stopped.t_ms + 800
    assert stopped.decided_ms <= stopped.t_ms + 800 + 60


def test_the_utterance_audio_includes_the_prefix_padding_and_transcribes_to_the_words(
    engine: Engine,
) -> None:
    rate = 24000
    pcm = _utterance(engine, "what is two times three", rate)
    events = _feed(engine.vad(prefix_padding_ms=300, rate=rate), pcm)
    began, stopped = events
    assert stopped.audio is not None
    seconds = len(stopped.audio) / 2 / rate
    expected = (stopped.t_ms - began.t_ms + 300 + TAIL_MS) / 1000
    assert abs(seconds - expected) < 0.05
    heard = engine.transcribe(np.frombuffer(stopped.audio, dtype="<i2"), rate)
    assert heard == "what is two times three"


def test_digital_silence_never_triggers(engine: Engine) -> None:
    assert _feed(engine.vad(), np.zeros(16000 * 5, np.int16)) == []


@pytest.mark.parametrize("dbfs", [-65.0, -55.0, -45.0, -35.0])
def test_steady_low_noise_never_triggers(engine: Engine, dbfs: float) -> None:
    assert _feed(engine.vad(rate=24000), _noise(24000 * 5, dbfs)) == []


def test_speech_in_low_noise_is_still_found(engine: Engine) -> None:
    rate = 16000
    clean = _utterance(engine, "hello how are you today", rate)
    start, end = _true_span(clean, rate)
    events = _feed(engine.vad(rate=rate), (clean + _noise(len(clean), -45)).astype(np.int16))
    assert [e.kind for e in events] == ["speech_started", "speech_stopped"]
    assert abs(events[0].t_ms - start) <= 100 and abs(events[1].t_ms - end) <= 150


def test_two_utterances_give_two_pairs(engine: Engine) -> None:
    rate = 16000
    pcm = np.concatenate(
        [_utterance(engine, "hello", rate), _utterance(engine, "go forward ten meters", rate)]
    )
    kinds = [e.kind for e in _feed(engine.vad(rate=rate), pcm)]
    assert kinds == ["speech_started", "speech_stopped"] * 2


def test_a_short_pause_inside_a_sentence_does_not_split_it(engine: Engine) -> None:
    rate = 16000
    pcm = np.concatenate(
        [
            _utterance(engine, "one plus one", rate, after=0.4),
            _utterance(engine, "equals what", rate, before=0.0),
        ]
    )
    assert [e.kind for e in _feed(engine.vad(silence_duration_ms=800, rate=rate), pcm)] == [
        "speech_started",
        "speech_stopped",
    ]


def test_odd_sized_chunks_give_the_same_events_as_whole_frames(engine: Engine) -> None:
    rate = 16000
    pcm = _utterance(engine, "describe this picture", rate)
    whole = _feed(engine.vad(rate=rate), pcm, chunk_ms=30)
    stream = engine.vad(rate=rate)
    raw = pcm.tobytes()
    odd: list[VadEvent] = []
    for i in range(0, len(raw), 777):  # odd byte counts: a sample split across two calls
        odd += stream.feed(raw[i : i + 777])
    odd += stream.flush()
    assert [(e.kind, e.t_ms, e.audio) for e in odd] == [(e.kind, e.t_ms, e.audio) for e in whole]


def test_flush_closes_an_open_utterance(engine: Engine) -> None:
    rate = 16000
    speech = np.concatenate([np.zeros(rate, np.int16), engine.synthesize("what do you see", rate)])
    stream = engine.vad(rate=rate)
    events = stream.feed(speech.tobytes())
    assert [e.kind for e in events] == ["speech_started"] and stream.in_speech
    closing = stream.flush()
    assert [e.kind for e in closing] == ["speech_stopped"] and closing[0].audio
    assert stream.flush() == []


def test_reset_forgets_the_stream(engine: Engine) -> None:
    stream = engine.vad()
    stream.feed(_utterance(engine, "hello", 16000, after=0.0).tobytes())
    stream.reset()
    assert stream.position_ms == 0 and not stream.in_speech and stream.flush() == []


def test_threshold_maps_to_webrtcvad_aggressiveness() -> None:
    assert [aggressiveness(t) for t in (0.0, 0.2, 0.25, 0.5, 0.74, 0.75, 1.0)] == [
        0,
        0,
        1,
        2,
        2,
        3,
        3,
    ]
    with pytest.raises(ValueError):
        aggressiveness(1.5)
    with pytest.raises(ValueError):
        VadStream(threshold=-0.1)


# ---------------------------------------------------------------------- speech_paused hints
def test_pause_hint_carries_exactly_the_audio_the_stop_will_carry(engine: Engine) -> None:
    rate = 24000
    pcm = _utterance(engine, "what is two times three", rate)
    events = _feed(engine.vad(rate=rate, pauses=True), pcm)
    assert [e.kind for e in events] == ["speech_started", "speech_paused", "speech_stopped"]
    _, paused, stopped = events
    assert paused.audio == stopped.audio and paused.t_ms == stopped.t_ms
    assert paused.decided_ms is not None and stopped.decided_ms is not None
    # the hint comes TAIL_MS into the silence, the stop a whole window later
    assert paused.decided_ms - paused.t_ms >= TAIL_MS
    assert paused.decided_ms < stopped.decided_ms
    assert engine.transcribe(np.frombuffer(paused.audio or b"", "<i2"), rate) == (
        "what is two times three"
    )


def test_speech_resuming_after_a_pause_gives_a_new_hint_and_one_stop(engine: Engine) -> None:
    rate = 16000
    pcm = np.concatenate(
        [
            _utterance(engine, "what is two", rate, after=0.2),
            _utterance(engine, "times three", rate, before=0.0),
        ]
    )
    events = _feed(engine.vad(rate=rate, pauses=True), pcm)
    kinds = [e.kind for e in events]
    assert kinds == ["speech_started", "speech_paused", "speech_paused", "speech_stopped"]
    first, second, stopped = events[1:]
    assert first.audio != stopped.audio and second.audio == stopped.audio
    heard = engine.transcribe(np.frombuffer(stopped.audio or b"", "<i2"), rate)
    assert heard == "what is two times three"


def test_a_window_no_longer_than_the_tail_gives_no_hint(engine: Engine) -> None:
    pcm = _utterance(engine, "hello", 16000)
    events = _feed(engine.vad(silence_duration_ms=TAIL_MS, pauses=True), pcm)
    assert [e.kind for e in events] == ["speech_started", "speech_stopped"]


def test_speech_that_goes_on_past_the_utterance_cap_is_cut_there_and_goes_on_as_a_new_one(
    engine: Engine,
) -> None:
    from nbtoolkit.protocols.params import MAX_UTTERANCE_SECONDS

    rate = 16000
    sentence = engine.synthesize(
        "the quick brown fox jumps over the lazy dog again and again", rate
    )
    speech = np.tile(sentence, int(75 * rate / len(sentence)) + 1)  # ≥ 75 s, no pause ≥ 3 s
    pcm = np.concatenate([np.zeros(rate, np.int16), speech, np.zeros(4 * rate, np.int16)])
    stream = VadStream(silence_duration_ms=3000, rate=rate)
    events = _feed(stream, pcm, chunk_ms=100)
    kinds = [e.kind for e in events]
    assert kinds == ["speech_started", "speech_stopped", "speech_started", "speech_stopped"]
    first, second = events[1], events[3]
    assert first.audio is not None and second.audio is not None
    assert MAX_UTTERANCE_SECONDS - 1 <= len(first.audio) / 2 / rate <= MAX_UTTERANCE_SECONDS
    assert first.decided_ms is not None and first.decided_ms <= 1000 + MAX_UTTERANCE_SECONDS * 1000
    # the rest of the speech is the second utterance: nothing lost between the two
    assert len(first.audio) + len(second.audio) >= 2 * (len(speech) - rate // 5)
