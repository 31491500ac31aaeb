"""Loading audio from files, bytes, URLs, recorders; and every kind of bad input failing helpfully."""

from __future__ import annotations

import importlib
import io
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import timeout

from nbtoolkit.audio import Clip, decode, encode
from nbtoolkit.audio.features import dominant_pitch
from nbtoolkit.errors import AudioError


def harmonic_tone(f0: float = 150.0, seconds: float = 2.0, rate: int = 48000) -> Clip:
    """A buzz with harmonics, like a voiced vowel: pitch survives lossy codecs and checks content."""
    t = np.arange(round(seconds * rate)) / rate
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
    return Clip.from_array(0.3 * x / np.max(np.abs(x)), rate)


TONE = harmonic_tone()
#: the module (the package attribute ``nbtoolkit.audio.decode`` is the function)
decode_module = importlib.import_module("nbtoolkit.audio.decode")


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "ogg", "webm"])
def test_each_supported_format_decodes_to_the_same_sound(fmt: str) -> None:
    clip = decode(encode(TONE, fmt))
    assert clip.rate == 48000
    assert clip.duration == pytest.approx(TONE.duration, abs=0.06)
    assert dominant_pitch(clip) == pytest.approx(150.0, rel=0.01)
    assert clip.dbfs == pytest.approx(TONE.dbfs, abs=1.0)


def test_browser_style_webm_without_duration_in_the_header_decodes() -> None:
    """ipywebrtc's AudioRecorder hands over what MediaRecorder wrote: 48 kHz Opus, no duration/cues."""
    import av

    blob = encode(TONE, "webm", live=True)
    with av.open(io.BytesIO(blob)) as container:
        assert container.duration is None  # really header-less, like a browser recording
    clip = decode(blob)
    assert clip.duration == pytest.approx(2.0, abs=0.06)
    assert dominant_pitch(clip) == pytest.approx(150.0, rel=0.01)


def test_multichannel_files_are_mixed_to_mono() -> None:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.array([[1000, 3000]] * 80, dtype="<i2").tobytes())
    clip = decode(buf.getvalue())
    assert (clip.rate, len(clip)) == (8000, 80)
    assert np.all(clip.samples == 2000)


def test_sources_path_str_file_url_bytes_and_file_object_agree(tmp_path: Path) -> None:
    path = TONE.save(tmp_path / "tone with space.wav")
    url = "file://" + str(path).replace(" ", "%20")
    with path.open("rb") as fh:
        from_file_object = decode(fh)
    loaded = [
        decode(path),
        decode(str(path)),
        decode(url),
        decode(path.read_bytes()),
        from_file_object,
    ]
    assert all(clip == TONE for clip in loaded)


def test_ipywebrtc_recorder_recording_becomes_a_clip() -> None:
    ipywebrtc = pytest.importorskip("ipywebrtc")
    recorder = ipywebrtc.AudioRecorder()
    recorder.audio.value = encode(TONE, "webm", live=True)
    clip = Clip.from_ipywebrtc(recorder, rate=16000)
    assert clip.rate == 16000
    assert clip.duration == pytest.approx(2.0, abs=0.06)
    assert dominant_pitch(clip) == pytest.approx(150.0, rel=0.01)


def test_empty_ipywebrtc_recorder_says_to_record_first() -> None:
    ipywebrtc = pytest.importorskip("ipywebrtc")
    with pytest.raises(AudioError, match="press the record button"):
        Clip.from_ipywebrtc(ipywebrtc.AudioRecorder())


def test_truncated_file_can_be_kept_when_asked() -> None:
    blob = encode(TONE, "webm")
    part = decode(blob[: len(blob) // 2], allow_truncated=True)
    assert 0.5 < part.duration < 1.5
    assert Clip.load(blob[: len(blob) // 2], allow_truncated=True) == part


def _wav_header(rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * 100)
    return buf.getvalue()


def _float_wav_with_nan() -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="wav") as out:
        stream: Any = out.add_stream("pcm_f32le", rate=8000)
        stream.layout = "mono"
        x = np.zeros((1, 800), dtype=np.float32)
        x[0, 100] = np.nan
        frame = av.AudioFrame.from_ndarray(x, format="flt", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return buf.getvalue()


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, format="PNG")
    return buf.getvalue()


def _oversized(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.setattr(decode_module, "MAX_FILE_BYTES", 1000)
    path = tmp_path / "big.wav"
    path.write_bytes(TONE.to_wav())
    return path


def _too_long(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.setattr(decode_module, "MAX_SECONDS", 1.0)
    return TONE.to_wav()


def _webm_cut(fraction: float) -> Callable[..., Any]:
    def make(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
        blob = encode(TONE, "webm")
        return blob[: int(len(blob) * fraction)]

    return make


def _cut(fmt: str) -> Callable[..., Any]:
    def make(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
        blob = encode(TONE, fmt)
        return blob[: len(blob) * 2 // 3]

    return make


def _const(value: Any) -> Callable[..., Any]:
    return lambda monkeypatch, tmp_path: value


def _text_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    path = tmp_path / "notes.wav"  # the name lies; the content decides
    path.write_text("meeting notes: buy milk, call Bob\n" * 20)
    return path


# (case id, how to build the input, words the error must contain: the problem and the fix)
BAD_INPUTS = [
    ("empty-bytes", _const(b""), ["empty", "record or choose a file"]),
    ("empty-file", lambda mp, tmp: (tmp / "e.wav").write_bytes(b"") or tmp / "e.wav", ["empty"]),
    ("random-bytes", _const(np.random.default_rng(7).bytes(4000)), ["not audio", "WAV, MP3"]),
    ("text-file", _text_file, ["looks like text", "Clip.from_pcm"]),
    ("png-image", lambda mp, tmp: _png(), ["no audio stream", "choose an audio file"]),
    ("truncated-wav", _cut("wav"), ["cut off", "allow_truncated=True"]),
    ("truncated-mp3", _cut("mp3"), ["cut off", "of the 2.00 s its header declares"]),
    ("truncated-flac", _cut("flac"), ["cut off", "re-record or re-download"]),
    ("truncated-webm", _webm_cut(0.5), ["cut off"]),
    ("header-only-webm", _webm_cut(0.02), ["WAV, MP3"]),
    ("nan-in-float-wav", lambda mp, tmp: _float_wav_with_nan(), ["NaN", "re-encode"]),
    ("absurd-rate-in-header", lambda mp, tmp: _wav_header(500_000), ["500000", "between 1000"]),
    ("oversized-file", _oversized, ["over the 0.0 MiB limit", "max_bytes="]),
    ("decodes-too-long", _too_long, ["more than 1 s of audio", "max_seconds="]),
    ("missing-file", lambda mp, tmp: tmp / "nope.wav", ["No audio file", "check the path"]),
    ("http-url", _const("https://example.com/a.wav"), ["only local files", "download"]),
    ("unsupported-type", _const({"audio": 1}), ["dict", "pass a path"]),
    ("numpy-without-rate", _const(np.zeros(10)), ["no sample rate", "Clip.from_array"]),
    ("text-mode-file-object", lambda mp, tmp: io.StringIO("RIFF"), ["text", "'rb'"]),
]


@pytest.mark.parametrize(
    ("make", "words"), [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_file_input_raises_audio_error_naming_problem_and_fix(
    make: Callable[..., Any], words: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = make(monkeypatch, tmp_path)
    with pytest.raises(AudioError) as info:
        Clip.load(source)
    message = str(info.value)
    assert info.value.fix, "every AudioError names a fix"
    for word in words:
        assert word in message


BAD_ARRAYS = [
    ("empty-array", lambda: Clip.from_array(np.zeros(0), 16000), "empty"),
    ("nan", lambda: Clip.from_array(np.array([0.0, np.nan]), 16000), "NaN"),
    ("inf", lambda: Clip.from_array(np.array([0.0, np.inf]), 16000), "infinite"),
    (
        "int-valued-floats",
        lambda: Clip.from_array(np.array([0.0, 12000.0]), 16000),
        "divide by 32768",
    ),
    ("rate-zero", lambda: Clip.from_array(np.zeros(10), 0), "between 1000 and 384000"),
    ("rate-absurd", lambda: Clip.from_array(np.zeros(10), 10**9), "between 1000 and 384000"),
    ("rate-float", lambda: Clip.from_pcm(b"\0\0", 16000.5), "whole number"),  # type: ignore[arg-type]
    ("rate-bool", lambda: Clip.from_pcm(b"\0\0", True), "whole number"),
    ("odd-pcm-length", lambda: Clip.from_pcm(b"\0\0\0", 16000), "even number of bytes"),
    ("empty-pcm", lambda: Clip.from_pcm(b"", 16000), "at least one"),
    ("complex-dtype", lambda: Clip.from_array(np.zeros(4, complex), 16000), "float samples"),
    ("string-dtype", lambda: Clip.from_array(np.array(["a", "b"]), 16000), "not audio"),
    ("boolean", lambda: Clip.from_array(np.ones(4, bool), 16000), "boolean"),
    ("3-d-array", lambda: Clip.from_array(np.zeros((2, 2, 2)), 16000), "(samples, channels)"),
    ("unknown-encode-format", lambda: encode(TONE, "aiff"), "choose one of"),
    ("not-a-recorder", lambda: Clip.from_ipywebrtc(object()), "AudioRecorder"),
    ("load-to-rate-zero", lambda: Clip.load(TONE, rate=0), "between 1000 and 384000"),
]


@pytest.mark.parametrize(
    ("build", "words"), [c[1:] for c in BAD_ARRAYS], ids=[c[0] for c in BAD_ARRAYS]
)
def test_bad_samples_rates_and_formats_raise_audio_error(
    build: Callable[[], Any], words: str
) -> None:
    with pytest.raises(AudioError, match=words.replace("(", r"\(").replace(")", r"\)")) as info:
        build()
    assert info.value.fix


def test_size_limits_can_be_set_per_call() -> None:
    wav = TONE.to_wav()
    with pytest.raises(AudioError, match="max_bytes="):
        decode(wav, max_bytes=len(wav) - 1)
    with pytest.raises(AudioError, match="max_seconds="):
        decode(wav, max_seconds=TONE.duration / 2)
    assert decode(wav, max_bytes=len(wav), max_seconds=TONE.duration) == TONE


CHROMIUM = Path("/usr/bin/chromium")
#: Records 2 s of a 150 Hz sawtooth with the browser's own MediaRecorder, as ipywebrtc does.
_RECORD_IN_BROWSER = """
async () => {
  const ctx = new AudioContext({sampleRate: 48000});
  const osc = ctx.createOscillator();
  osc.type = 'sawtooth';
  osc.frequency.value = 150;
  const gain = ctx.createGain();
  gain.gain.value = 0.2;
  const dest = ctx.createMediaStreamDestination();
  osc.connect(gain).connect(dest);
  osc.start();
  const rec = new MediaRecorder(dest.stream, {mimeType: 'audio/webm;codecs=opus'});
  const chunks = [];
  rec.ondataavailable = (e) => chunks.push(e.data);
  const stopped = new Promise((resolve) => (rec.onstop = resolve));
  rec.start(250);
  await new Promise((resolve) => setTimeout(resolve, 2000));
  rec.stop();
  await stopped;
  const bytes = new Uint8Array(await new Blob(chunks).arrayBuffer());
  let text = '';
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text);
}
"""


@pytest.mark.browser
def test_a_real_browser_mediarecorder_webm_decodes_with_its_pitch() -> None:
    import base64

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (make system-deps)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=["--autoplay-policy=no-user-gesture-required"]
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(timeout(30) * 1000)
            blob = base64.b64decode(page.evaluate(_RECORD_IN_BROWSER))
        finally:
            browser.close()
    clip = Clip.load(blob, rate=16000)
    assert clip.duration == pytest.approx(2.0, abs=0.3)
    assert dominant_pitch(clip) == pytest.approx(150.0, rel=0.01)


@pytest.mark.parametrize("fmt", ["wav", "webm"])
def test_first_seconds_decodes_only_the_head_of_a_long_file(fmt: str) -> None:
    long = Clip.from_array(np.tile(TONE.samples, 20), TONE.rate)  # 40 s
    head = decode(encode(long, fmt), first_seconds=3.0, max_seconds=5.0)
    # max_seconds applies to what is decoded: the 40 s file is not refused, nor called truncated
    assert head.duration == pytest.approx(3.0, abs=0.001)
    assert dominant_pitch(head) == pytest.approx(150.0, rel=0.03)
    with pytest.raises(ValueError, match="first_seconds"):
        decode(encode(long, "wav"), first_seconds=0)
