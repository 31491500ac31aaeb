"""How accurate and fast is the offline engine? ASR on real recordings and on eSpeak speech, TTS, VAD.

Everything is measured in this run on this machine:

* **ASR on real speech** — the 10 vendored pocketsphinx test recordings (tests/data/speech, 34 s,
  real human voices; three are LibriVox read sentences): word error rate and real-time factor
  (decode seconds / audio seconds; "CPU" = the process's CPU seconds / audio seconds, which a
  shared machine inflates less) for each ASR tier — pocketsphinx's open vocabulary (the baseline),
  its ``auto`` (grammar first), and for each installed Whisper model ``open`` (Whisper alone) and
  ``auto`` (grammar first, then Whisper). Goal (issue #17): **≤ 8 % WER at RTF ≤ 0.25** on real
  read speech, judged on each Whisper tier's ``auto`` with PASS/MISS and the ratio to the
  pocketsphinx baseline measured in the same run.
* **ASR on eSpeak speech** (synthetic, reported apart from real speech) — the responder's command
  phrases and sampled arithmetic questions (in-domain) and Harvard-style sentences (out-of-domain),
  each with 0.5 s of silence around.
* **TTS** — times faster than real time, English and Mandarin.
* **VAD** — start/end error against the true speech span, clean and with white noise.

Every WER compares :func:`nbtoolkit.text.spoken_english` forms of both sides (numbers as
words, "Mr." → "mister", no case or punctuation), whichever tier produced the words.

Run: ``.venv/bin/python benchmarks/engine.py`` (a few minutes). The 1-minute load average is printed
at the start and the end: on a machine shared with other work the RTFs are higher than on a quiet one.
"""

from __future__ import annotations

import os
import random
import resource
import time
import wave
from pathlib import Path

import numpy as np

from nbtoolkit.local.engine import Engine
from nbtoolkit.local.engine.asr import TIER_ENV, Recognizer, word_errors
from nbtoolkit.local.engine.responder import COMMAND_PHRASES, domain_sentences
from nbtoolkit.local.engine.whisper import MODELS, installed_model
from nbtoolkit.text import spoken_english

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


#: The goal on real read speech (issue #17).
GOAL_WER = 0.08
GOAL_RTF = 0.25

Items = list[tuple[str, np.ndarray, str]]


def score(recognizer: Recognizer, items: Items, mode: str) -> dict:
    errors = words = exact = 0
    audio = decode = cpu = 0.0
    for _, pcm, ref in items:
        t0, c0 = time.perf_counter(), time.process_time()
        hyp = recognizer.recognize(pcm, 16000, mode=mode).text  # type: ignore[arg-type]
        decode += time.perf_counter() - t0
        cpu += time.process_time() - c0
        audio += len(pcm) / 16000
        ref_words, hyp_words = spoken_english(ref), spoken_english(hyp)
        errors += word_errors(ref_words, hyp_words)
        words += len(ref_words.split())
        exact += hyp_words == ref_words
    return {
        "wer": errors / words,
        "errors": errors,
        "words": words,
        "exact": exact,
        "n": len(items),
        "rtf": decode / audio,
        "cpu": cpu / audio,
        "ms": 1000 * decode / len(items),
    }


def recognizers() -> dict[str, Recognizer]:
    """pocketsphinx, then one recogniser per installed Whisper model, each loaded (load time and
    memory printed)."""
    out = {}
    tiers = [("pocketsphinx", "pocketsphinx", None)]
    tiers += [(f"whisper {m.name}", "whisper", m.name) for m in MODELS if installed_model(m.name)]
    for label, tier, model in tiers:
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        out[label] = Recognizer(tier=tier, whisper_model=model)
        out[label].load()
        grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
        print(f"  {label:20s} loaded in {time.perf_counter() - t0:5.2f} s, peak RSS +{grew:.0f} MB")
    if len(out) == 1:
        print(f"  (no Whisper model installed: pip install 'nbtoolkit[asr]'; {TIER_ENV} ignored)")
    return out


def asr_table(
    title: str, tiers: dict[str, Recognizer], items: Items, goal: bool = False
) -> dict[str, dict]:
    seconds = sum(len(p) for _, p, _ in items) / 16000
    print(f"\n{title} ({len(items)} utterances, {seconds:.1f} s)")
    print(
        f"  {'tier':20s} {'mode':6s} {'WER':>16s} {'exact':>7s} {'RTF':>6s} {'CPU':>6s} {'ms/utt':>7s}"
    )
    rows: dict[str, dict] = {}
    for label, recognizer in tiers.items():
        for mode in ("open", "auto"):
            r = rows[f"{label} {mode}"] = score(recognizer, items, mode)
            print(
                f"  {label:20s} {mode:6s} {r['wer']:7.1%} ({r['errors']:3d}/{r['words']:3d}) "
                f"{r['exact']:3d}/{r['n']:<3d} {r['rtf']:6.3f} {r['cpu']:6.3f} {r['ms']:7.0f}"
            )
    base = rows["pocketsphinx auto"]
    for key, r in rows.items():
        if not key.startswith("whisper") or not key.endswith("auto"):
            continue
        verdict = ""
        if goal:
            wall = r["wer"] <= GOAL_WER and r["rtf"] <= GOAL_RTF
            cpu = r["wer"] <= GOAL_WER and r["cpu"] <= GOAL_RTF
            verdict = (
                f"{'PASS' if wall else 'MISS'} (goal WER ≤ {GOAL_WER:.0%} at RTF ≤ {GOAL_RTF}; "
                f"by CPU time {'PASS' if cpu else 'MISS'}): "
            )
        ratio = f"WER ×{r['wer'] / base['wer']:.2f}, " if base["wer"] else ""
        print(
            f"  {verdict}{key}: WER {r['wer']:.1%} at RTF {r['rtf']:.3f} (CPU {r['cpu']:.3f}); "
            f"vs pocketsphinx auto in this run: {ratio}RTF ×{r['rtf'] / base['rtf']:.2f}"
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
    import argparse

    # no options: --help prints what the run measures instead of starting it
    argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0]).parse_args()
    print(f"load average (1 min) at the start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    t0 = time.perf_counter()
    engine = Engine()
    engine.tts.load()
    print(f"eSpeak load: {time.perf_counter() - t0:.2f} s; ASR tiers:")
    tiers = recognizers()

    real = load_recordings()
    asr_table("ASR on real recordings (pocketsphinx test data)", tiers, real, goal=True)
    read = [item for item in real if item[0].startswith("librivox/")]
    asr_table("ASR on real read sentences only (LibriVox)", tiers, read, goal=True)

    random.seed(0)
    questions = random.sample(domain_sentences()[len(COMMAND_PHRASES) :], 30)
    in_domain = [(s, pad(engine.synthesize(s, 16000)), s) for s in [*COMMAND_PHRASES, *questions]]
    asr_table(
        "ASR on eSpeak in-domain sentences (commands + 30 arithmetic questions; synthetic speech)",
        tiers,
        in_domain,
    )
    out = [(s, pad(engine.synthesize(s, 16000)), s) for s in OUT_OF_DOMAIN]
    asr_table("ASR on eSpeak out-of-domain sentences (synthetic speech)", tiers, out)

    tts_speed(engine)
    vad_accuracy(engine)
    print(f"\nload average (1 min) at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
