"""Wrong types at every public entry point get a toolkit error that says what was given and what to
do: one table, no I/O (the calls on clients are covered by test_one_call_shape)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

import nbtoolkit as nb
from nbtoolkit.errors import AudioError, ConfigError, ImageError, NbToolkitError


@pytest.fixture(scope="module")
def ep(server: Any) -> nb.Endpoints:
    return server.endpoints


CASES: list[tuple[str, Callable[[Any], Any], type[NbToolkitError], str]] = [
    ("Clip.load(int)", lambda ep: nb.Clip.load(123), AudioError, "from a int"),
    ("Clip.from_pcm(str)", lambda ep: nb.Clip.from_pcm("x", 16000), AudioError, "not str"),
    ("Clip.from_array(str)", lambda ep: nb.Clip.from_array("x", 16000), AudioError, "not audio"),
    ("Clip.silence(str)", lambda ep: nb.Clip.silence("x"), AudioError, "'x' seconds"),
    ("Clip.silence(-1)", lambda ep: nb.Clip.silence(-1), AudioError, "-1 seconds"),
    ("Clip.resample(str)", lambda ep: nb.Clip.silence(1.0).resample("x"), AudioError, "'x'"),
    ("connect(api_key=int)", lambda ep: nb.connect(api_key=123), ConfigError, "API key"),
    ("Ledger(budget_cny=str)", lambda ep: nb.Ledger(budget_cny="x"), ConfigError, "'x'"),
    ("Secret(int)", lambda ep: nb.Secret(123), ConfigError, "API key"),
    ("QwenAudio(on_too_long=int)", lambda ep: nb.QwenAudio(ep, on_too_long=1), ConfigError, "1"),
    ("QwenAudio(retry=int)", lambda ep: nb.QwenAudio(ep, retry=3), ConfigError, "RetryPolicy"),
    ("QwenAudio(ledger=str)", lambda ep: nb.QwenAudio(ep, ledger="x"), ConfigError, "Ledger"),
    ("Dialog(sample_rate=str)", lambda ep: nb.Dialog(ep, sample_rate="x"), ConfigError, "'x'"),
    ("Dialog(sample_rate=1)", lambda ep: nb.Dialog(ep, sample_rate=1), ConfigError, "16000"),
    ("Dialog(voice=int)", lambda ep: nb.Dialog(ep, voice=5), ConfigError, "voice="),
    ("Dialog(timeout=str)", lambda ep: nb.Dialog(ep, timeout="x"), ConfigError, "timeout="),
    ("Omni(vad=int)", lambda ep: nb.OmniRealtime(ep, vad=5), ConfigError, "vad="),
    (
        "Omni(vad={silence_duration_ms: str})",
        lambda ep: nb.OmniRealtime(ep, vad={"silence_duration_ms": "x"}),
        ConfigError,
        r"vad=\{'silence_duration_ms'",
    ),
    (
        "Omni(vad={prefix_padding_ms: inf})",
        lambda ep: nb.OmniRealtime(ep, vad={"prefix_padding_ms": float("inf")}),
        ConfigError,
        r"\[0, 6000\] ms",
    ),
    (
        "Omni.update_session(voice=int)",
        lambda ep: asyncio.run(nb.OmniRealtime(ep).update_session(voice=5)),
        ConfigError,
        "voice=",
    ),
    (
        "QwenAudio.ask(temperature=nan)",
        lambda ep: nb.QwenAudio(ep).ask(text="hi", temperature=float("nan")),
        ConfigError,
        "temperature=",
    ),
    (
        "QwenAudio.ask(seed=-1)",
        lambda ep: nb.QwenAudio(ep).ask(text="hi", seed=-1),
        ConfigError,
        "seed=",
    ),
    ("Omni(modalities=int)", lambda ep: nb.OmniRealtime(ep, modalities=5), ConfigError, "5"),
    ("Omni(instructions=int)", lambda ep: nb.OmniRealtime(ep, instructions=5), ConfigError, "text"),
    (
        "Omni(ping_interval=str)",
        lambda ep: nb.OmniRealtime(ep, ping_interval="x"),
        ConfigError,
        "ping",
    ),
    (
        "Omni.send_audio(int)",
        lambda ep: asyncio.run(nb.OmniRealtime(ep).send_audio(123)),
        AudioError,
        "got int",
    ),
    (
        "Omni.send_image(int)",
        lambda ep: asyncio.run(nb.OmniRealtime(ep).send_image(123)),
        ImageError,
        "JPEG",
    ),
    (
        "AudioModalitiesClient(api_key=int)",
        lambda ep: nb.AudioModalitiesClient("http://127.0.0.1:9/x", api_key=5),
        ConfigError,
        "key",
    ),
    ("serve_audio_modalities(int)", lambda ep: nb.serve_audio_modalities(123), ConfigError, "int"),
    ("run_batch(int)", lambda ep: nb.run_batch(123, nb.QwenAudio(ep), "q"), ConfigError, "int"),
    ("run_batch(client=int)", lambda ep: nb.run_batch(["a"], 5, "q"), ConfigError, "int"),
    ("play(int)", lambda ep: nb.play(123), AudioError, "int"),
    ("plot_waveform(int)", lambda ep: nb.plot_waveform(123), AudioError, "not a int"),
    ("plot_timeline(int)", lambda ep: nb.plot_timeline(123), ConfigError, "not a int"),
    ("Recorder(source=int)", lambda ep: nb.Recorder(source=123), AudioError, "int"),
    ("Player.feed(odd bytes)", lambda ep: nb.Player().feed(b"123"), AudioError, "even"),
    ("VoiceChat(int)", lambda ep: nb.VoiceChat(123), ConfigError, "int"),
    ("spoken(int)", lambda ep: nb.spoken(123), ConfigError, "123"),
    ("Timeline.mark(int, int)", lambda ep: nb.Timeline().mark(1, 2), ConfigError, "as text"),
    ("record(int)", lambda ep: nb.record(123), ConfigError, "path"),
    ("replay(int)", lambda ep: nb.replay(123), ConfigError, "path"),
    ("Dialog.send_frame(int)", lambda ep: nb.Dialog(ep).send_frame(123), ImageError, "int"),
]


@pytest.mark.parametrize(
    ("call", "error", "says"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_a_wrong_type_raises_a_toolkit_error_that_names_it_and_the_fix(
    ep: Any, call: Callable[[Any], Any], error: type[NbToolkitError], says: str
) -> None:
    with pytest.raises(error, match=says) as info:
        call(ep)
    assert info.value.fix, "the message names what to do"
