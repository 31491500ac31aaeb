"""How accurate and fast is the offline engine? ASR on real recordings and on eSpeak speech, TTS, VAD.

Everything is measured in this run on this machine:

* **ASR on real speech** — the 10 vendored pocketsphinx test recordings (tests/data/speech, 34 s,
  real human voices): word error rate and real-time factor (decode seconds / audio seconds) for
  the open vocabulary (generic en-us LM, the baseline), the domain grammar, and ``auto``.
* **ASR on eSpeak speech** — the responder's command phrases and sampled arithmetic questions
  (in-domain) and Harvard-style sentences (out-of-domain), each with 0.5 s of silence around.
* **TTS** — times faster than real time, English and Mandarin.
* **VAD** — start/end error against the true speech span, clean and with white noise.

Run: ``.venv/bin/python benchmarks/engine.py`` (about a minute).
"""

from __future__ import annotations

import random
import time
import wave
from pathlib import Path

import numpy as np

from nbtoolkit.local.engine import Engine
from nbtoolkit.local.engine.asr import word_errors
from nbtoolkit.local.engine.responder import COMMAND_PHRASES, domain_sentences

SPEECH = Path(__file__).resolve().parent.parent / "tests" / "data" / "speech"

OUT_OF_DOMAIN = [
    "the birch canoe slid on the smooth planks",
    "glue the sheet to the dark blue background",
    "it's easy to tell the depth of a well",
    "these days a chicken leg is a rare dish",
    "rice is often served in round bowls",
    "the juice of lemons makes fine punch",
    "the box was thrown beside the parked truck",
    "four hours of steady work faced us",
    "a large size in stockings is hard to sell",
    "the boy was there when the sun rose",
    "what is the capital of france",
    "set a timer for five minutes",
    "open the door",
    "please read me the news",
]


def load_recordings() -> list[tuple[str, np.ndarray, str]]:
    """(name, 16 kHz int16 samples, transcript) for every vendored real recording."""
    out = []
    for line in (SPEECH / "transcripts.tsv").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, text = line.split("\t")
        path = SPEECH / name
        if path.suffix == ".raw":
            pcm = np.fromfile(path, dtype="<i2").astype(np.int16)
        else:
            with wave.open(str(path)) as w:
                pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
        out.append((name, pcm, text))
    return out


def pad(pcm: np.ndarray, rate: int = 16000, seconds: float = 0.5) -> np.ndarray:
    z = np.zeros(int(rate * seconds), dtype=np.int16)
    return np.concatenate([z, pcm, z])


def score(engine: Engine, items: list[tuple[str, np.ndarray, str]], mode: str) -> dict:
    errors = words = exact = 0
    audio = decode = 0.0
    for _, pcm, ref in items:
        t0 = time.perf_counter()
        hyp = engine.recognize(pcm, 16000, mode=mode).text  # type: ignore[arg-type]
        decode += time.perf_counter() - t0
        audio += len(pcm) / 16000
        errors += word_errors(ref, hyp)
        words += len(ref.split())
        exact += hyp == ref
    return {
        "wer": errors / words,
        "errors": errors,
        "words": words,
        "exact": exact,
        "n": len(items),
        "rtf": decode / audio,
        "ms": 1000 * decode / len(items),
    }


def asr_table(title: str, engine: Engine, items: list[tuple[str, np.ndarray, str]]) -> dict:
    print(f"\n{title} ({len(items)} utterances, {sum(len(p) for _, p, _ in items) / 16000:.1f} s)")
    print(f"  {'mode':8s} {'WER':>16s} {'exact':>8s} {'RTF':>7s} {'ms/utt':>8s}")
    rows = {}
    for mode in ("open", "domain", "auto"):
        r = score(engine, items, mode)
        rows[mode] = r
        print(
            f"  {mode:8s} {r['wer']:7.1%} ({r['errors']:3d}/{r['words']:3d}) "
            f"{r['exact']:3d}/{r['n']:<3d} {r['rtf']:7.3f} {r['ms']:8.0f}"
        )
    print(
        f"  domain decodes {rows['open']['rtf'] / rows['domain']['rtf']:.1f}× faster than open; "
        f"auto {rows['open']['rtf'] / rows['auto']['rtf']:.1f}×"
    )
    return rows


def tts_speed(engine: Engine) -> None:
    print("\nTTS (eSpeak NG via ctypes), best of 3")
    for label, text in (
        (
            "English",
            "the birch canoe slid on the smooth planks. glue the sheet to the dark blue background.",
        ),
        ("Mandarin", "你好，今天怎么样？一加一等于几？我是离线引擎。"),
    ):
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            pcm = engine.synthesize(text, rate=24000)
            best = min(best, time.perf_counter() - t0)
        seconds = len(pcm) / 24000
        print(
            f"  {label:9s} {seconds:5.2f} s of audio in {best * 1000:6.1f} ms = {seconds / best:6.0f}× real time"
        )


def true_span(pcm: np.ndarray, rate: int) -> tuple[int, int]:
    """First and last 10 ms frame within 40 dB of the loudest (ms)."""
    n = rate // 100
    f = pcm[: len(pcm) // n * n].reshape(-1, n).astype(np.float64)
    r = np.sqrt((f * f).mean(axis=1))
    idx = np.flatnonzero(r >= r.max() * 10 ** (-40 / 20))
    return int(idx[0]) * 10, int(idx[-1] + 1) * 10


def vad_accuracy(engine: Engine) -> None:
    print(
        "\nVAD (webrtcvad, threshold 0.5, 20 ms chunks at 24 kHz; 12 sentences, 1 s / 1.5 s silence around)"
    )
    sentences = [*COMMAND_PHRASES[:8], *OUT_OF_DOMAIN[:4]]
    rng = np.random.default_rng(0)
    rate = 24000
    for noise in (None, -50.0, -40.0, -35.0):
        starts, ends, wrong = [], [], 0
        t_vad = audio = 0.0
        for s in sentences:
            x = np.concatenate(
                [
                    np.zeros(rate, np.int16),
                    engine.synthesize(s, rate),
                    np.zeros(int(1.5 * rate), np.int16),
                ]
            )
            t_start, t_end = true_span(x, rate)
            if noise is not None:
                x = np.clip(
                    x + rng.normal(0, 32768 * 10 ** (noise / 20), len(x)), -32768, 32767
                ).astype(np.int16)
            stream = engine.vad(rate=rate)
            t0 = time.perf_counter()
            events = []
            for i in range(0, len(x), rate // 50):
                events += stream.feed(x[i : i + rate // 50].tobytes())
            events += stream.flush()
            t_vad += time.perf_counter() - t0
            audio += len(x) / rate
            if [e.kind for e in events] != ["speech_started", "speech_stopped"]:
                wrong += 1
                continue
            starts.append(events[0].t_ms - t_start)
            ends.append(events[1].t_ms - t_end)
        label = "clean" if noise is None else f"noise {noise:.0f} dBFS"
        print(
            f"  {label:16s} start error {min(starts):+4d}…{max(starts):+4d} ms, "
            f"end error {min(ends):+4d}…{max(ends):+4d} ms (median {int(np.median(ends)):+d}), "
            f"wrong event count {wrong}/{len(sentences)}, RTF {t_vad / audio:.4f}"
        )


def main() -> None:
    t0 = time.perf_counter()
    engine = Engine()
    engine.load()
    print(f"engine load (both decoders + eSpeak): {time.perf_counter() - t0:.2f} s")

    real = load_recordings()
    asr_table("ASR on real recordings (pocketsphinx test data)", engine, real)

    random.seed(0)
    questions = random.sample(domain_sentences()[len(COMMAND_PHRASES) :], 30)
    in_domain = [(s, pad(engine.synthesize(s, 16000)), s) for s in [*COMMAND_PHRASES, *questions]]
    asr_table(
        "ASR on eSpeak in-domain sentences (commands + 30 arithmetic questions)", engine, in_domain
    )
    out = [(s, pad(engine.synthesize(s, 16000)), s) for s in OUT_OF_DOMAIN]
    asr_table("ASR on eSpeak out-of-domain sentences", engine, out)

    tts_speed(engine)
    vad_accuracy(engine)


if __name__ == "__main__":
    main()
