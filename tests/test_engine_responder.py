"""The responder's rules (arithmetic, transcription, audio/image description, visual QA, greeting,
echo, voice chat, Chinese) and the token-usage rule."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from nbtoolkit.audio import Clip
from nbtoolkit.local.engine import Engine
from nbtoolkit.local.engine.describe import colour_name, loudness_word
from nbtoolkit.local.engine.responder import solve_arithmetic
from nbtoolkit.protocols.tokens import audio_tokens, image_tokens, text_tokens
from nbtoolkit.text import number_words


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine().load()


def _speech(engine: Engine, text: str, rate: int = 24000) -> Clip:
    z = np.zeros(rate // 2, np.int16)
    return Clip.from_array(np.concatenate([z, engine.synthesize(text, rate), z]), rate)


def _png(size: tuple[int, int], bands: list[tuple[tuple[int, int, int], float]]) -> bytes:
    """A picture of horizontal colour bands, each taking the given share of the height."""
    im = Image.new("RGB", size)
    top = 0
    for colour, share in bands:
        h = round(size[1] * share)
        im.paste(colour, (0, top, size[0], top + h))
        top += h
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------- arithmetic
@pytest.mark.parametrize(
    ("question", "answer"),
    [
        ("one plus one equals what", "One plus one equals two."),
        ("What is two times three?", "Two times three equals six."),
        ("what's 12 / 4", "Twelve divided by four equals three."),
        ("how much is seven minus nine", "Seven minus nine equals minus two."),
        (
            "what is nineteen multiplied by twenty",
            "Nineteen times twenty equals three hundred and eighty.",
        ),
        ("seven divided by two", "Seven divided by two equals three point five."),
        ("ten divided by three", "Ten divided by three equals about three point three three."),
        (
            "twenty-one plus one hundred and five",
            "Twenty one plus one hundred and five equals one hundred and twenty six.",
        ),
    ],
)
def test_spoken_arithmetic_is_answered_in_words(engine: Engine, question: str, answer: str) -> None:
    reply = engine.respond(question)
    assert (reply.text, reply.kind, reply.commands) == (answer, "arithmetic", [])


def test_division_by_zero_is_answered_honestly(engine: Engine) -> None:
    reply = engine.respond("what is five divided by zero")
    assert reply.kind == "arithmetic"
    assert reply.text == "Five divided by zero has no answer: nothing can be divided by zero."
    assert solve_arithmetic("5 / 0") == (
        "Five divided by zero has no answer: nothing can be divided by zero.",
        None,
    )


def test_chinese_arithmetic_is_answered_in_chinese(engine: Engine) -> None:
    assert engine.respond("一加一等于几").text == "一加一等于二。"
    assert engine.respond("十二乘以十二是多少？").text == "十二乘以十二等于一百四十四。"
    assert engine.respond("五减八").text == "五减八等于负三。"
    assert engine.respond("七除以零").text == "七除以零没有答案：不能除以零。"


def test_an_open_chinese_question_is_declined_in_chinese_not_echoed(engine: Engine) -> None:
    reply = engine.respond("今天天气怎么样")
    assert (reply.kind, reply.lang) == ("unsupported", "zh")
    assert "今天天气" not in reply.text and "无法回答开放式问题" in reply.text
    assert "离线引擎" in engine.respond("你好").text


def test_number_words_as_the_engine_speaks_them() -> None:
    assert [number_words(n, british=True) for n in (0, 13, 40, 99, 105, 1200, 1005, -7)] == [
        "zero",
        "thirteen",
        "forty",
        "ninety nine",
        "one hundred and five",
        "one thousand two hundred",
        "one thousand and five",
        "minus seven",
    ]


# ---------------------------------------------------------------------- audio
def test_transcription_request_with_audio_quotes_the_words(engine: Engine) -> None:
    clip = _speech(engine, "go forward ten meters")
    for question in ("What is said in the audio?", "transcribe this"):
        reply = engine.respond(question, audio=clip)
        assert (reply.text, reply.kind) == (
            'The audio says: "go forward ten meters".',
            "transcription",
        )


def test_transcription_request_without_audio_says_there_is_none(engine: Engine) -> None:
    reply = engine.respond("transcribe this")
    assert reply.kind == "transcription" and "no audio" in reply.text


def test_describing_a_tone_gives_duration_loudness_pitch_and_no_speech(engine: Engine) -> None:
    rate = 16000
    t = np.arange(2 * rate) / rate
    clip = Clip.from_array(0.3 * np.sin(2 * np.pi * 220 * t), rate)
    reply = engine.respond("describe this sound", audio=clip)
    assert reply.kind == "describe_audio"
    assert "2.0 seconds" in reply.text
    assert "loud (-13 dBFS)" in reply.text  # a 0.3 sine: RMS 0.21 of full scale
    pitch = re.search(r"dominant pitch is about (\d+) Hz", reply.text)
    assert pitch and abs(int(pitch.group(1)) - 220) <= 5
    assert "does not sound like speech" in reply.text


def test_describing_speech_says_it_is_speech_and_gives_the_words(engine: Engine) -> None:
    reply = engine.respond("describe this audio", audio=_speech(engine, "hello how are you today"))
    assert reply.kind == "describe_audio"
    assert "contains speech" in reply.text
    assert '"hello how are you today"' in reply.text


def test_describing_silence_says_it_is_silent(engine: Engine) -> None:
    reply = engine.respond("describe this audio", audio=Clip.silence(1.0))
    assert "silent (digital silence)" in reply.text and "speech" not in reply.text


def test_voice_chat_answers_the_transcript(engine: Engine) -> None:
    reply = engine.respond(audio=_speech(engine, "what is two times three"))
    assert (reply.text, reply.kind, reply.heard) == (
        "Two times three equals six.",
        "arithmetic",
        "what is two times three",
    )
    greeting = engine.respond(audio=_speech(engine, "hello how are you today"))
    assert greeting.kind == "greeting" and "offline engine" in greeting.text


def test_voice_chat_with_no_words_says_so(engine: Engine) -> None:
    reply = engine.respond(audio=Clip.silence(1.0))
    assert reply.kind == "echo" and "could not make out any words" in reply.text


# ---------------------------------------------------------------------- images
def test_describe_image_names_size_and_dominant_colours(engine: Engine) -> None:
    png = _png((640, 480), [((230, 30, 30), 0.5), ((20, 60, 220), 0.3), ((250, 250, 250), 0.2)])
    reply = engine.respond("describe this picture", images=[png])
    assert reply.kind == "describe_image"
    assert reply.text.startswith("A 640×480 picture, bright, mostly red (50%), with blue (")
    shares = dict(re.findall(r"(\w+) \((\d+)%\)", reply.text))
    assert list(shares) == ["red", "blue", "white"]  # largest first, nothing else above 8 %
    assert abs(int(shares["blue"]) - 30) <= 2 and abs(int(shares["white"]) - 20) <= 2


def test_any_question_with_an_image_gets_the_image_description(engine: Engine) -> None:
    png = _png((100, 50), [((30, 200, 40), 1.0)])
    reply = engine.respond("is this a forest?", images=[png])
    assert reply.kind == "describe_image"
    assert reply.text.startswith('You asked: "is this a forest?". I can only describe the picture:')
    assert "almost all green (100%)" in reply.text
    # but a question the rules answer is answered
    assert engine.respond("what is two plus two", images=[png]).kind == "arithmetic"


def test_video_frames_are_summarised(engine: Engine) -> None:
    frames = [_png((320, 240), [((250, 220, 0), 1.0)]), _png((320, 240), [((0, 0, 0), 1.0)])]
    reply = engine.respond("what do you see", images=frames)
    assert reply.kind == "describe_image"
    assert reply.text.startswith("2 pictures, 320×240")
    assert "yellow (50%)" in reply.text and "black (50%)" in reply.text


def test_an_unreadable_image_is_reported(engine: Engine) -> None:
    assert (
        "could not read the image"
        in engine.respond("what do you see", images=[b"not an image"]).text
    )


def test_colour_names() -> None:
    named = {
        (255, 0, 0): "red",
        (0, 160, 0): "green",
        (0, 0, 255): "blue",
        (255, 230, 0): "yellow",
        (255, 140, 0): "orange",
        (128, 0, 200): "purple",
        (255, 105, 180): "pink",
        (120, 70, 20): "brown",
        (0, 200, 200): "cyan",
        (255, 255, 255): "white",
        (128, 128, 128): "grey",
        (5, 5, 5): "black",
    }
    assert {rgb: colour_name(*rgb) for rgb in named} == named


def test_loudness_words() -> None:
    assert [loudness_word(d) for d in (-80, -50, -35, -20, -10, -3)] == [
        "silent",
        "very quiet",
        "quiet",
        "moderately loud",
        "loud",
        "very loud",
    ]


# ---------------------------------------------------------------------- visual QA, greeting, echo
def test_asking_what_is_in_front_without_an_image_requests_a_photo(engine: Engine) -> None:
    for question in ("what is in front of me", "What do you see?"):
        reply = engine.respond(question)
        assert reply.kind == "visual_qa"
        assert "photo" in reply.text
        assert reply.commands == [
            {
                "name": "visual_qa",
                "params": [{"name": "shot", "value": "front", "normValue": "True"}],
            }
        ]


def test_commands_are_fresh_copies(engine: Engine) -> None:
    engine.respond("what do you see").commands[0]["params"][0]["value"] = "changed"
    assert engine.respond("what do you see").commands[0]["params"][0]["value"] == "front"


def test_a_greeting_says_it_is_the_offline_engine(engine: Engine) -> None:
    reply = engine.respond("hello how are you today")
    assert reply.kind == "greeting"
    assert "offline engine" in reply.text and "not the cloud model" in reply.text


def test_an_open_question_is_declined_honestly_not_echoed(engine: Engine) -> None:
    # it used to answer 'You said: "…".', as if repeating the question were an answer
    reply = engine.respond("tell me about this company")
    assert (reply.kind, reply.lang, reply.commands) == ("unsupported", "en", [])
    assert "company" not in reply.text
    assert reply.text.startswith("I cannot answer that: I am the offline engine of nbtoolkit")
    assert "spoken arithmetic" in reply.text


def test_an_open_question_in_voice_chat_says_which_words_were_heard(engine: Engine) -> None:
    reply = engine.respond("what time is it", audio=Clip.silence(1.0), spoken=True)
    assert reply.kind == "unsupported"
    assert reply.text.startswith('I heard: "what time is it". I cannot answer that')


def test_history_does_not_change_the_answer(engine: Engine) -> None:
    history = [("what is one plus one", "One plus one equals two."), ("hello", "Hello!")]
    assert engine.respond("what is two plus two", history=history) == engine.respond(
        "what is two plus two"
    )


def test_nothing_at_all_is_answered_honestly(engine: Engine) -> None:
    assert engine.respond("").kind == "echo"


# ---------------------------------------------------------------------- usage rule
def test_text_tokens_count_words_cjk_characters_and_punctuation() -> None:
    assert text_tokens("") == 0
    assert text_tokens("One plus one equals two.") == 6
    assert text_tokens("Hello, world!") == 4
    assert text_tokens("it's 2024") == 2
    assert text_tokens("你好，今天怎么样？") == 9


def test_audio_tokens_are_25_per_second_rounded_up() -> None:
    assert [audio_tokens(s) for s in (0, 0.01, 0.04, 0.041, 1.0, 2.5, 60)] == [
        0,
        1,
        1,
        2,
        25,
        63,
        1500,
    ]


def test_image_tokens_are_28_pixel_patches_within_limits() -> None:
    assert image_tokens(640, 480) == 23 * 18
    assert image_tokens(28, 28) == 4  # at least 4
    assert image_tokens(4000, 3000) == 1280  # at most 1280
    assert image_tokens(0, 100) == 0
