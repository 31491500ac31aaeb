"""Plain-words descriptions of an audio clip and of images, measured, not guessed.

Audio (:func:`audio_facts`, :func:`describe_audio`):

* duration;
* loudness: RMS level in dBFS, named by :data:`LOUDNESS_WORDS` (below −60 "silent", −60…−45 "very
  quiet", −45…−30 "quiet", −30…−18 "moderately loud", −18…−8 "loud", above "very loud");
* dominant pitch: :func:`nbtoolkit.audio.features.dominant_pitch` (autocorrelation per 40 ms frame,
  median over voiced frames, 60–500 Hz);
* speech or not: the share of 30 ms frames that webrtcvad (aggressiveness 2) calls speech, among
  frames louder than −55 dBFS; "speech" when at least 20 % of the clip is;
* the words (through the ASR) when there is speech and a ``transcribe`` function is given.

Images (:func:`image_facts`, :func:`describe_image`): size, brightness, and the dominant colours.
The picture is shrunk to at most 96×96 and every pixel is named by hue/saturation/value rules
(:func:`colour_name`: black, grey, white, red, orange, yellow, green, cyan, blue, purple, pink,
brown); colours covering at least 8 % of the pixels are reported, largest first, with their share.

Every description is worded in English (``lang="en"``, the default) or Chinese (``lang="zh"``): the
same facts, the words from :data:`ZH_WORDS` (the offline engine answers in the language of the
question).
"""

from __future__ import annotations

import colorsys
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "AudioFacts",
    "ImageFacts",
    "audio_facts",
    "colour_name",
    "describe_audio",
    "describe_image",
    "describe_images",
    "image_facts",
    "loudness_word",
]

#: Chinese for every word a description uses (loudness, colours, brightness).
ZH_WORDS = {
    "silent": "无声",
    "very quiet": "非常安静",
    "quiet": "安静",
    "moderately loud": "音量适中",
    "loud": "响亮",
    "very loud": "非常响亮",
    "black": "黑色",
    "grey": "灰色",
    "white": "白色",
    "red": "红色",
    "brown": "棕色",
    "orange": "橙色",
    "yellow": "黄色",
    "olive": "橄榄色",
    "green": "绿色",
    "cyan": "青色",
    "blue": "蓝色",
    "purple": "紫色",
    "pink": "粉色",
    "dark": "偏暗",
    "medium bright": "亮度中等",
    "bright": "明亮",
}

#: (upper bound in dBFS, word), checked in order.
LOUDNESS_WORDS = (
    (-60.0, "silent"),
    (-45.0, "very quiet"),
    (-30.0, "quiet"),
    (-18.0, "moderately loud"),
    (-8.0, "loud"),
    (float("inf"), "very loud"),
)
#: Frames quieter than this never count as speech.
SPEECH_FLOOR_DBFS = -55.0
#: A clip is "speech" when at least this share of its 30 ms frames is.
SPEECH_SHARE = 0.2
#: Colours below this share of the pixels are not mentioned.
COLOUR_SHARE = 0.08


def loudness_word(dbfs: float) -> str:
    """The word for an RMS level in dBFS (see :data:`LOUDNESS_WORDS`)."""
    for bound, word in LOUDNESS_WORDS:
        if dbfs < bound:
            return word
    return LOUDNESS_WORDS[-1][1]


# --------------------------------------------------------------------------- audio
@dataclass(frozen=True)
class AudioFacts:
    seconds: float
    dbfs: float
    loudness: str
    pitch_hz: float | None
    speech_share: float
    is_speech: bool


def _speech_share(clip: Any) -> float:
    import webrtcvad

    from nbtoolkit.local.engine.tts import resample

    pcm = resample(np.asarray(clip.samples, dtype=np.int16), clip.rate, 16000)
    n = 480  # 30 ms at 16 kHz
    frames = len(pcm) // n
    if not frames:
        return 0.0
    vad = webrtcvad.Vad(2)
    floor = 32768.0 * 10 ** (SPEECH_FLOOR_DBFS / 20)
    speech = 0
    for k in range(frames):
        f = pcm[k * n : (k + 1) * n]
        if np.sqrt(np.mean(f.astype(np.float64) ** 2)) < floor:
            continue
        speech += vad.is_speech(f.tobytes(), 16000)
    return speech / frames


def audio_facts(clip: Any) -> AudioFacts:
    """Measured facts about a :class:`~nbtoolkit.audio.Clip`."""
    from nbtoolkit.audio.features import dominant_pitch

    dbfs = clip.dbfs
    pitch = dominant_pitch(clip) if dbfs > -60 and clip.rate > 1000 else None
    share = _speech_share(clip)
    return AudioFacts(
        seconds=clip.duration,
        dbfs=dbfs,
        loudness=loudness_word(dbfs),
        pitch_hz=pitch,
        speech_share=share,
        is_speech=share >= SPEECH_SHARE,
    )


def describe_audio(
    clip: Any, transcribe: Callable[[Any], str] | None = None, lang: str = "en"
) -> str:
    """One or two sentences describing the clip (and its words, given ``transcribe``), in English
    or (``lang="zh"``) Chinese. ``transcribe`` returning "" means the words could not be made out."""
    f = audio_facts(clip)
    words = transcribe(clip).strip() if f.is_speech and transcribe is not None else None
    if lang == "zh":
        return _describe_audio_zh(f, words)
    level = "digital silence" if f.dbfs == float("-inf") else f"{f.dbfs:.0f} dBFS"
    text = f"The clip is {f.seconds:.1f} seconds long and {f.loudness} ({level})."
    if f.pitch_hz:
        text += f" Its dominant pitch is about {f.pitch_hz:.0f} Hz."
    if f.is_speech:
        text += f" It contains speech ({f.speech_share:.0%} of it)."
    elif f.loudness != "silent":
        text += " It does not sound like speech."
    if words is not None:
        text += (
            f' The words sound like: "{words}".'
            if words
            else " I could not make out the words: the offline engine recognises English speech only."
        )
    return text


def _describe_audio_zh(f: AudioFacts, words: str | None) -> str:
    level = "数字静音" if f.dbfs == float("-inf") else f"{f.dbfs:.0f} dBFS"
    text = f"这段音频长 {f.seconds:.1f} 秒，{ZH_WORDS[f.loudness]}（{level}）。"
    if f.pitch_hz:
        text += f"主要音高约 {f.pitch_hz:.0f} 赫兹。"
    if f.is_speech:
        text += f"其中有语音（占 {f.speech_share:.0%}）。"
    elif f.loudness != "silent":
        text += "听起来不是语音。"
    if words is not None:
        text += (
            f"说的话听起来是：“{words}”。"
            if words
            else "我听不出说的是什么：离线引擎只能识别英语语音。"
        )
    return text


# --------------------------------------------------------------------------- images
@dataclass(frozen=True)
class ImageFacts:
    width: int
    height: int
    brightness: float  # mean value 0…1
    colours: list[tuple[str, float]]  # (name, share), largest first


def colour_name(r: float, g: float, b: float) -> str:
    """The name of an RGB colour (components 0…255)."""
    h, s, v = colorsys.rgb_to_hsv(r / 255.0, g / 255.0, b / 255.0)
    return _name_hsv(h * 360.0, s, v)


def _name_hsv(h: float, s: float, v: float) -> str:
    if v < 0.18:
        return "black"
    if s < 0.18 or (s < 0.3 and v < 0.35):
        return "white" if v > 0.85 else "grey"
    if h < 15 or h >= 345:
        return "brown" if v < 0.55 and s > 0.3 else "red"
    if h < 45:
        return "brown" if v < 0.6 else "orange"
    if h < 70:
        return "yellow" if v >= 0.5 else "olive"
    if h < 165:
        return "green"
    if h < 195:
        return "cyan"
    if h < 255:
        return "blue"
    if h < 290:
        return "purple"
    return "pink"


_NAMES = (
    "black",
    "grey",
    "white",
    "red",
    "brown",
    "orange",
    "yellow",
    "olive",
    "green",
    "cyan",
    "blue",
    "purple",
    "pink",
)


def image_facts(data: bytes) -> ImageFacts:
    """Size, brightness and dominant colours of an encoded image (JPEG, PNG, …)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as src:
        width, height = src.size
        small = src.convert("RGB")
    small.thumbnail((96, 96))
    rgb = np.asarray(small, dtype=np.float64).reshape(-1, 3) / 255.0
    mx, mn = rgb.max(axis=1), rgb.min(axis=1)
    v = mx
    s = np.where(mx > 0, (mx - mn) / np.where(mx > 0, mx, 1), 0.0)
    d = np.where(mx - mn > 0, mx - mn, 1)
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    h = np.where(mx == r, ((g - b) / d) % 6, np.where(mx == g, (b - r) / d + 2, (r - g) / d + 4))
    h = np.where(mx - mn > 0, h * 60.0, 0.0)
    names = np.array(
        [_name_hsv(float(a), float(bb), float(c)) for a, bb, c in zip(h, s, v, strict=True)]
    )
    counts = {n: float(np.mean(names == n)) for n in _NAMES}
    colours = sorted(((n, c) for n, c in counts.items() if c >= COLOUR_SHARE), key=lambda x: -x[1])
    return ImageFacts(width, height, float(v.mean()), colours)


def describe_image(data: bytes, lang: str = "en") -> str:
    """One sentence describing an image, or why it could not be read (``lang``: "en" or "zh")."""
    try:
        f = image_facts(data)
    except Exception as e:  # not an image Pillow can read
        if lang == "zh":
            return f"我无法读取这张图片（{type(e).__name__}）。"
        return f"I could not read the image ({type(e).__name__})."
    bright, colours = _brightness(f.brightness, lang), _colour_words(f.colours, lang)
    if lang == "zh":
        return f"一张 {f.width}×{f.height} 的图片，{bright}，{colours}。"
    return f"A {f.width}×{f.height} picture, {bright}, {colours}."


def describe_images(images: Sequence[bytes], lang: str = "en") -> str:
    """One image: :func:`describe_image`; several (video frames): a summary over all of them."""
    if len(images) == 1:
        return describe_image(images[0], lang)
    facts: list[ImageFacts] = []
    for data in images:
        try:
            facts.append(image_facts(data))
        except Exception:
            continue
    zh = lang == "zh"
    if not facts:
        if zh:
            return f"{len(images)} 张图片都无法读取。"
        return f"I could not read any of the {len(images)} images."
    totals: dict[str, float] = {}
    for f in facts:
        for name, share in f.colours:
            totals[name] = totals.get(name, 0.0) + share / len(facts)
    colours = sorted(((n, c) for n, c in totals.items() if c >= COLOUR_SHARE), key=lambda x: -x[1])
    sizes = {(f.width, f.height) for f in facts}
    same = len(sizes) == 1
    bright = _brightness(float(np.mean([f.brightness for f in facts])), lang)
    unread = len(images) - len(facts)
    if zh:
        size_text = f"尺寸 {facts[0].width}×{facts[0].height}" if same else "尺寸不一"
        extra = f"（{unread} 张无法读取）" if unread else ""
        return (
            f"{len(images)} 张图片{extra}，{size_text}，{bright}，{_colour_words(colours, lang)}。"
        )
    size_text = f"{facts[0].width}×{facts[0].height}" if same else "of different sizes"
    extra = f" ({unread} could not be read)" if unread else ""
    return f"{len(images)} pictures{extra}, {size_text}, {bright}, {_colour_words(colours, lang)}."


def _brightness(v: float, lang: str = "en") -> str:
    word = "dark" if v < 0.25 else "medium bright" if v < 0.6 else "bright"
    return ZH_WORDS[word] if lang == "zh" else word


def _colour_words(colours: list[tuple[str, float]], lang: str = "en") -> str:
    if lang == "zh":
        return _colour_words_zh(colours)
    if not colours:
        return "with many colours and none dominant"
    words = [f"{name} ({share:.0%})" for name, share in colours]
    if len(words) == 1:
        return f"almost all {words[0]}"
    return (
        "mostly "
        + words[0]
        + ", with "
        + ", ".join(words[1:-1])
        + (" and " if len(words) > 2 else "")
        + words[-1]
    )


def _colour_words_zh(colours: list[tuple[str, float]]) -> str:
    if not colours:
        return "颜色很多，没有哪种占主导"
    words = [f"{ZH_WORDS[name]}（{share:.0%}）" for name, share in colours]
    if len(words) == 1:
        return f"几乎全是{words[0]}"
    rest = "、".join(words[1:-1]) + ("和" if len(words) > 2 else "") + words[-1]
    return f"主要是{words[0]}，还有{rest}"
