"""The ``nbtoolkit`` command: ``serve`` (the local server in the foreground) and ``doctor``.

nbtoolkit serve [--host 127.0.0.1] [--port N] [--token T]
nbtoolkit doctor
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

__all__ = ["main"]


# =========================================================================== serve
def _serve(args: argparse.Namespace) -> int:
    from nbtoolkit.errors import NbToolkitError
    from nbtoolkit.local.server import start

    try:
        server = start(
            host=args.host,
            port=args.port,
            token=args.token,
            max_sessions=args.max_sessions,
            target_load=args.target_load,
        )
    except (NbToolkitError, OSError) as exc:
        print(f"nbtoolkit serve: {exc}", file=sys.stderr)
        return 2
    try:
        # ready when it says so: the models load now, not inside the first session's answer
        # (benchmarks/load.py: one session's first-audio p95 0.98 s against 0.75 s once loaded)
        server.app.state.engine.load()
    except NbToolkitError as exc:  # e.g. Whisper weights that fail their pinned hash
        server.stop()
        print(f"nbtoolkit serve: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, _on_signal)
    try:
        ep = server.endpoints
        # The token is printed on purpose: whoever started the server needs it to call it.
        print(
            f"nbtoolkit local server: the offline engine ({server.app.state.engine.summary}), not the cloud\n"
            f"  HTTP base (Qwen-Audio):    {ep.http_base}\n"
            f"  Dialog WebSocket:          {ep.websocket_base}\n"
            f"  Realtime WebSocket:        {ep.realtime_url}\n"
            f"  Audio modalities (Agora):  {ep.audio_modalities_url}\n"
            f"  Sessions at once:          {_session_limit(server.app.state.capacity)}\n"
            "\nPoint the dashscope SDK at it:\n"
            f"  export DASHSCOPE_HTTP_BASE_URL={ep.http_base}\n"
            f"  export DASHSCOPE_WEBSOCKET_BASE_URL={ep.websocket_base}\n"
            f"  export DASHSCOPE_API_KEY={server.token.reveal()}\n"
            "\nCtrl-C stops the server.",
            flush=True,
        )
        while not stop.wait(0.5):  # short waits keep Ctrl-C responsive on every platform
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.stop()
    print("nbtoolkit local server stopped.", flush=True)
    return 0


def _session_limit(capacity: Any) -> str:
    if capacity.fixed is not None:
        return f"{capacity.fixed} (--max-sessions)"
    return (
        f"{capacity.max_sessions} for now, measured as sessions run ({capacity.free_cores:.2f} "
        f"free cores of {capacity.workers}, {capacity.target_load:.0%} target load)"
    )


# =========================================================================== doctor
@dataclass(frozen=True)
class _Check:
    name: str
    essential: bool
    run: Callable[[], str]  # returns a detail line; raises when the check fails
    fix: str


def _pocketsphinx() -> str:
    from pathlib import Path

    import pocketsphinx

    model = Path(pocketsphinx.get_model_path())
    missing = [
        p
        for p in ("en-us/en-us", "en-us/en-us.lm.bin", "en-us/cmudict-en-us.dict")
        if not (model / p).exists()
    ]
    if missing:
        raise RuntimeError(f"model files missing under {model}: {', '.join(missing)}")
    decoder = pocketsphinx.Decoder(samprate=16000, logfn=os.devnull)
    decoder.start_utt()
    decoder.process_raw(b"\0" * 3200, full_utt=True)
    decoder.end_utt()
    return f"en-us model at {model}"


def _asr_tier() -> str:
    from nbtoolkit.local.engine.asr import TIER_ENV, choose_tier
    from nbtoolkit.local.engine.whisper import WhisperTier

    tier = choose_tier()
    chosen = f"{TIER_ENV}={os.environ.get(TIER_ENV) or 'auto'}"
    if tier == "pocketsphinx":
        return f"pocketsphinx's open LM after the grammar ({chosen}; Whisper not in use)"
    whisper = WhisperTier(workers=1).load()  # checks the pinned weights' SHA-256
    return f"Whisper {whisper.name} after the grammar ({chosen}; {whisper.package.licence})"


def _espeak() -> str:
    from pathlib import Path

    import espeakng_loader

    from nbtoolkit.local.engine.tts import Tts

    data = Path(espeakng_loader.get_data_path())
    if not (data / "phontab").is_file() or not (data / "cmn_dict").is_file():
        raise RuntimeError(f"espeak-ng-data incomplete at {data} (need phontab and cmn_dict)")
    # Through the engine's own binding: libespeak-ng is process-wide state it owns.
    english = Tts().synthesize("hello", rate=16000)
    mandarin = Tts().synthesize("你好", rate=16000)
    if not len(english) or not len(mandarin):
        raise RuntimeError("eSpeak NG produced no audio")
    return f"library + data at {data.parent}; English and Mandarin voices speak"


def _webrtcvad() -> str:
    import webrtcvad

    webrtcvad.Vad(2).is_speech(b"\0" * 640, 16000)
    return "20 ms frame classified"


def _pyav() -> str:
    import av

    from nbtoolkit.audio.clip import Clip
    from nbtoolkit.audio.decode import decode

    clip = decode(Clip.silence(0.1, 16000).to_wav())
    av.codec.Codec("opus", "r")  # browsers record WebM/Opus
    return f"PyAV {av.__version__}: WAV decoded ({len(clip)} samples), Opus decoder present"


def _soxr() -> str:
    import numpy as np
    import soxr

    out = soxr.resample(np.zeros(1600, dtype=np.float32), 16000, 24000)
    if len(out) != 2400:
        raise RuntimeError(f"16 kHz -> 24 kHz gave {len(out)} samples, expected 2400")
    return f"soxr {soxr.__version__}"


def _engine() -> str:
    from nbtoolkit.local.engine import Engine

    engine = Engine()
    pcm = engine.synthesize("one two three", rate=16000)
    heard = engine.transcribe(pcm, rate=16000)
    if "two" not in heard.split():
        raise RuntimeError(f"TTS -> ASR round trip heard {heard!r} for 'one two three'")
    answer = engine.respond("one plus one equals what").text
    if "two" not in answer.lower():
        raise RuntimeError(f"the responder answered {answer!r} to 'one plus one equals what'")
    return f"TTS -> ASR heard {heard!r}; 1 + 1 -> {answer!r}"


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError("no Chromium on PATH")


def _api_key() -> str:
    # Only whether it is set: the value is never printed.
    if os.environ.get("DASHSCOPE_API_KEY", "").strip():
        return "set: nbtoolkit.connect() uses the DashScope cloud"
    raise RuntimeError("not set: nbtoolkit.connect() uses the offline engine")


_CHECKS = (
    _Check("pocketsphinx (ASR)", True, _pocketsphinx, "pip install -U 'pocketsphinx>=5.0.4'"),
    _Check(
        "ASR tier",
        False,
        _asr_tier,
        "pip install 'nbtoolkit[asr]' for Whisper (5 % WER on real speech, pocketsphinx 15 %)",
    ),
    _Check(
        "eSpeak NG (TTS)", True, _espeak, "pip install --force-reinstall 'espeakng-loader>=0.2.4'"
    ),
    _Check("webrtcvad (VAD)", True, _webrtcvad, "pip install 'webrtcvad-wheels>=2.0.14'"),
    _Check("PyAV (decode)", True, _pyav, "pip install -U 'av>=12'"),
    _Check("soxr (resample)", True, _soxr, "pip install -U 'soxr>=0.3'"),
    _Check("offline engine", True, _engine, "fix the rows above, then reinstall nbtoolkit"),
    _Check(
        "Chromium (browser tests)",
        False,
        _chromium,
        "apt-get install chromium (or `playwright install chromium`)",
    ),
    _Check(
        "DASHSCOPE_API_KEY",
        False,
        _api_key,
        "optional: export DASHSCOPE_API_KEY=sk-… to use the cloud",
    ),
)


def _doctor(args: argparse.Namespace) -> int:
    rows: list[tuple[str, str, str]] = []
    failed_essential = False
    for check in _CHECKS:
        try:
            rows.append((check.name, "ok", check.run()))
        except Exception as exc:
            from nbtoolkit.config import scrub_secrets

            failed_essential |= check.essential
            status = "MISSING" if check.essential else "note"
            detail = scrub_secrets(f"{type(exc).__name__}: {exc}" if check.essential else str(exc))
            rows.append((check.name, status, f"{detail}\n  fix: {check.fix}"))
    width = max(len(name) for name, _, _ in rows)
    print(f"{'check':<{width}}  {'status':<7}  detail")
    print(f"{'-' * width}  -------  {'-' * 40}")
    for name, status, detail in rows:
        first, *rest = detail.splitlines()
        print(f"{name:<{width}}  {status:<7}  {first}")
        for line in rest:
            print(f"{'':<{width}}  {'':<7}  {line.strip()}")
    if failed_essential:
        print(
            "\nSomething essential is missing: the offline engine will not work until it is fixed."
        )
        return 1
    print("\nThe offline engine is ready.")
    return 0


# =========================================================================== entry point
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nbtoolkit", description="DashScope speech LLMs in Jupyter, with an offline engine."
    )
    from nbtoolkit.local.admission import TARGET_LOAD

    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the local server (offline engine) in the foreground")
    serve.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    serve.add_argument("--token", default=None, help="bearer token (default: a random one)")
    serve.add_argument(
        "--max-sessions",
        type=int,
        default=None,
        help="realtime/dialog sessions served at once; more are refused with HTTP 429 "
        "(default: derived from the cores and the measured cost of a session)",
    )
    serve.add_argument(
        "--target-load",
        type=float,
        default=TARGET_LOAD,
        help=f"engine load the derived session limit aims at, 0-1 (default {TARGET_LOAD})",
    )
    serve.set_defaults(func=_serve)
    doctor = sub.add_parser("doctor", help="check that the offline engine's dependencies work")
    doctor.set_defaults(func=_doctor)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = _parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
