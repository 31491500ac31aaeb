"""The offline engine answers the Qwen samples' Chinese questions in Chinese: through the responder,
the unmodified dashscope SDK, the audio-modalities route, Omni realtime and MultiModalDialog (real
sockets on 127.0.0.1). Checked: the words and the language that come back (CJK characters, no echo
of an open question), and that spoken answers use the Mandarin voice."""

from __future__ import annotations

import asyncio
import base64
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from test_server_audio_modalities import audio_of, frames_of, post
from test_server_conversation import sdk as sdk  # the fixture: dashscope aimed at the server
from test_server_conversation import text_of, user
from test_server_dialog import answer_text, frames, sdk_dialog
from test_server_realtime import _raw

from nbtoolkit.audio.clip import Clip
from nbtoolkit.local.engine import Engine
from nbtoolkit.local.engine.asr import Recognizer
from nbtoolkit.local.engine.responder import UNCLEAR_SCORE, is_unclear
from nbtoolkit.local.engine.tts import has_cjk, voice_for

MODEL = "qwen-audio-turbo-latest"
#: The Qwen-Audio sample's clip says "欢迎使用阿里云" (Mandarin); eSpeak's Mandarin voice stands in.
WELCOME = "欢迎使用阿里云"
SPEECH_DIR = Path(__file__).parent / "data" / "speech"

#: What the engine says when the English recogniser cannot make out Chinese speech.
UNCLEAR_ZH = (
    "这段语音我听不懂：离线引擎只能识别英语语音，不能识别中文。请用文字提问，或者用英语说。"
)
UNCLEAR_EN = (
    "I could not make out the words: the offline engine recognises English speech only. "
    "Please type the question, or ask in English."
)


def speech(engine: Engine, text: str, rate: int = 16000, lang: str | None = None) -> Clip:
    """``text`` spoken by the engine's TTS, with half a second of silence around it."""
    pad = np.zeros(rate // 2, np.int16)
    return Clip.from_array(np.concatenate([pad, engine.synthesize(text, rate, lang), pad]), rate)


def png(colour: tuple[int, int, int], size: tuple[int, int] = (640, 480)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def latin_words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z]+", text)


# ---------------------------------------------------------------------- the responder, in Chinese
def test_what_does_this_audio_say_frames_the_english_transcript_in_chinese(engine: Engine) -> None:
    reply = engine.respond("这段音频在说什么?", audio=speech(engine, "go forward ten meters"))
    assert (reply.text, reply.kind, reply.lang) == (
        "这段音频说的是：“go forward ten meters”。",
        "transcription",
        "zh",
    )


def test_chinese_speech_is_said_to_be_beyond_the_english_recogniser_not_guessed(
    engine: Engine,
) -> None:
    reply = engine.respond("音频里在说什么?", audio=speech(engine, WELCOME))
    assert reply.kind == "transcription" and reply.lang == "zh"
    assert reply.text == (
        "这段音频里有语音，但我听不出说的是什么：离线引擎只能识别英语语音，不能识别中文。"
    )
    assert latin_words(reply.text) == []  # no English words guessed from Mandarin sounds


def test_an_open_follow_up_question_is_declined_in_chinese_and_not_echoed(engine: Engine) -> None:
    history = [("这段音频在说什么?", "这段音频说的是：“go forward ten meters”。")]
    reply = engine.respond("简单介绍这家公司。", history=history)
    assert (reply.kind, reply.lang) == ("unsupported", "zh")
    assert reply.text == (
        "这个问题我回答不了：我是 nbtoolkit 的离线引擎，不是大语言模型，无法回答开放式问题。"
        "我会做算术、转写英语语音、描述声音和图片。"
    )
    assert "公司" not in reply.text and "你说" not in reply.text


@pytest.mark.parametrize(
    ("question", "kind", "answer"),
    [
        ("一加一等于几", "arithmetic", "一加一等于二。"),
        ("七乘以八等于多少？", "arithmetic", "七乘以八等于五十六。"),
        ("我面前有什么?", "visual_qa", "我还什么都看不到。请拍一张你面前的照片，和问题一起发送。"),
        ("请说：你好世界", "speak", "你好世界"),
        ("谢谢", "greeting", "不客气！这是 nbtoolkit 的离线引擎。"),
        ("这段音频在说什么?", "transcription", "没有可以转写的音频。请把音频和问题一起发送。"),
    ],
)
def test_chinese_intents_are_answered_in_chinese(
    engine: Engine, question: str, kind: str, answer: str
) -> None:
    reply = engine.respond(question)
    assert (reply.text, reply.kind, reply.lang) == (answer, kind, "zh")


def test_a_request_for_a_spoken_reply_gets_a_chinese_self_introduction(engine: Engine) -> None:
    reply = engine.respond("请生成一段音频回复")
    assert (reply.kind, reply.lang) == ("speak", "zh")
    assert (
        reply.text
        == "好的，这是一段语音回复。我是 nbtoolkit 的离线引擎，在这台电脑上运行，不是云端模型。"
    )


def test_visual_questions_in_chinese_request_a_photo_or_describe_it_in_chinese(
    engine: Engine,
) -> None:
    reply = engine.respond("我面前有什么?")
    assert reply.commands == [
        {"name": "visual_qa", "params": [{"name": "shot", "value": "front", "normValue": "True"}]}
    ]
    described = engine.respond("描述一下这张图片", images=[png((230, 30, 30))])
    assert (described.text, described.kind) == (
        "一张 640×480 的图片，明亮，几乎全是红色（100%）。",
        "describe_image",
    )
    open_q = engine.respond("这是森林吗？", images=[png((30, 200, 40), (100, 50))])
    assert open_q.text == (
        "这个问题我回答不了（离线引擎不是大语言模型），只能描述这张图片："
        "一张 100×50 的图片，明亮，几乎全是绿色（100%）。"
    )


def test_describing_a_tone_in_chinese_gives_the_measured_facts_in_chinese(engine: Engine) -> None:
    t = np.arange(32000) / 16000
    clip = Clip.from_array(0.3 * np.sin(2 * np.pi * 220 * t), 16000)
    reply = engine.respond("描述一下这段音频", audio=clip)
    assert reply.kind == "describe_audio" and reply.lang == "zh"
    m = re.fullmatch(
        r"这段音频长 2\.0 秒，响亮（-13 dBFS）。主要音高约 (\d+) 赫兹。听起来不是语音。", reply.text
    )
    assert m and abs(int(m.group(1)) - 220) <= 5, reply.text


def test_describing_chinese_speech_says_the_words_cannot_be_made_out(engine: Engine) -> None:
    reply = engine.respond("描述一下这段音频", audio=speech(engine, WELCOME))
    assert reply.kind == "describe_audio"
    assert "其中有语音" in reply.text
    assert reply.text.endswith("我听不出说的是什么：离线引擎只能识别英语语音。")
    assert latin_words(reply.text.replace("dBFS", "")) == []


# ---------------------------------------------------------------------- spoken Chinese questions
@pytest.fixture(scope="module")
def pocketsphinx() -> Recognizer:
    """pocketsphinx's open search alone: what the unclear-speech rule scores, whatever the tier."""
    return Recognizer("open", tier="pocketsphinx")


@pytest.mark.parametrize("rate", [16000, 24000])
def test_mandarin_speech_scores_below_the_unclear_line_and_is_not_made_out(
    engine: Engine, pocketsphinx: Recognizer, rate: int
) -> None:
    for sentence in ("你好，今天天气怎么样", WELCOME, "简单介绍这家公司", "我们一起去吃饭吧"):
        clip = speech(engine, sentence, rate)
        score = pocketsphinx.recognize(clip.samples, rate).open_score
        assert is_unclear(score) and score is not None and score < UNCLEAR_SCORE, (sentence, score)
        assert engine.responder.unclear_speech(clip), sentence  # with the engine's own tier


def test_real_english_recordings_are_never_taken_for_unclear_speech(
    engine: Engine, pocketsphinx: Recognizer
) -> None:
    rows = [
        line.split("\t")
        for line in (SPEECH_DIR / "transcripts.tsv").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert len(rows) >= 10
    for i, (name, _) in enumerate(rows):
        path = SPEECH_DIR / name
        clip = Clip.from_pcm(path.read_bytes(), 16000) if path.suffix == ".raw" else Clip.load(path)
        assert not is_unclear(pocketsphinx.recognize(clip.samples, clip.rate).open_score), name
        if i % 3 == 0:  # through the whole voice-chat path too (a sample: each takes seconds)
            reply = engine.respond(audio=clip)
            assert reply.kind != "unrecognised" and reply.heard, (name, reply)
            # as realtime and Dialog ask: with the transcript they made of the clip
            again = engine.respond(reply.heard, audio=clip, spoken=True)
            assert again.kind != "unrecognised", (name, again)


def test_a_spoken_chinese_question_gets_an_honest_answer_in_the_sessions_language(
    engine: Engine,
) -> None:
    clip = speech(engine, "你好，今天天气怎么样")
    # nothing says which language: both
    both = engine.respond(audio=clip)
    assert (both.kind, both.text, both.lang) == ("unrecognised", f"{UNCLEAR_ZH} {UNCLEAR_EN}", "zh")
    # Omni instructions or a system prompt in Chinese, or a Chinese earlier turn: Chinese only
    assert engine.respond(audio=clip, context="你是一个乐于助人的助手。").text == UNCLEAR_ZH
    assert (
        engine.respond(audio=clip, history=[("一加一等于几", "一加一等于二。")]).text == UNCLEAR_ZH
    )
    assert engine.respond(audio=clip, context="You are a helpful assistant.").text == UNCLEAR_EN
    # a caller that transcribed the audio itself (realtime) gets the same answer
    guessed = engine.transcribe(clip.samples, clip.rate)
    assert guessed  # the recogniser does guess English words…
    assert engine.respond(guessed, audio=clip, spoken=True).text == f"{UNCLEAR_ZH} {UNCLEAR_EN}"


def test_every_answer_is_spoken_with_the_voice_of_its_language(engine: Engine) -> None:
    replies = [
        engine.respond("这段音频在说什么?", audio=speech(engine, "go forward ten meters")),
        engine.respond("简单介绍这家公司。"),
        engine.respond("tell me about this company"),
        engine.respond("what is two plus two"),
        engine.respond(audio=speech(engine, WELCOME)),
    ]
    assert [r.lang for r in replies] == ["zh", "zh", "en", "en", "zh"]
    for r in replies:
        assert has_cjk(r.text) == (r.lang == "zh")
        assert voice_for(r.text) == voice_for("", r.lang)  # the routes' automatic choice agrees


# ---------------------------------------------------------------------- the unmodified SDK
def test_sdk_chinese_questions_about_a_clip_and_a_follow_up_get_chinese_answers(
    sdk: Any, engine: Engine, tmp_path: Path
) -> None:
    english = "file://" + str(speech(engine, "go forward ten meters").save(tmp_path / "en.wav"))
    mandarin = "file://" + str(speech(engine, WELCOME).save(tmp_path / "welcome.wav"))

    first = sdk.MultiModalConversation.call(
        model=MODEL, messages=user({"audio": english}, {"text": "这段音频在说什么?"})
    )
    assert first.status_code == 200, first.message
    assert text_of(first) == "这段音频说的是：“go forward ten meters”。"

    messages: list[dict[str, Any]] = [
        {"role": "system", "content": [{"text": "You are a helpful assistant."}]},
        {"role": "user", "content": [{"audio": mandarin}, {"text": "音频里在说什么?"}]},
    ]
    heard = sdk.MultiModalConversation.call(model=MODEL, messages=messages)
    assert heard.status_code == 200, heard.message
    assert has_cjk(text_of(heard)) and "只能识别英语语音" in text_of(heard)
    assert latin_words(text_of(heard)) == []

    messages.append(
        {
            "role": heard.output.choices[0].message.role,
            "content": heard.output.choices[0].message.content,
        }
    )
    messages.append({"role": "user", "content": [{"text": "简单介绍这家公司。"}]})
    follow_up = sdk.MultiModalConversation.call(model=MODEL, messages=messages)
    assert follow_up.status_code == 200, follow_up.message
    answer = text_of(follow_up)
    assert has_cjk(answer) and "无法回答开放式问题" in answer
    assert "简单介绍" not in answer and "你说" not in answer


def test_sdk_streamed_chinese_answer_concatenates_to_the_plain_one(sdk: Any) -> None:
    messages = user({"text": "十二乘以十二是多少？"})
    chunks = list(
        sdk.MultiModalConversation.call(
            model=MODEL, messages=messages, stream=True, incremental_output=True
        )
    )
    assert "".join(text_of(c) for c in chunks) == "十二乘以十二等于一百四十四。"


# ---------------------------------------------------------------------- spoken answers
def _close_in_length(samples: int, expected: int) -> bool:
    # eSpeak's output length varies by a few samples from call to call (its pitch flutter)
    return abs(samples - expected) <= 0.01 * expected


def test_audio_modalities_chinese_request_is_answered_in_chinese_with_the_mandarin_voice(
    server: Any, engine: Engine
) -> None:
    body = {
        "messages": [{"role": "user", "content": "请生成一段音频回复"}],
        "stream": True,
        "modalities": ["text", "audio"],
    }
    response, datas = post(server, body)
    assert response.status_code == 200
    first, frames = frames_of(datas)
    transcript = first["choices"][0]["delta"]["audio"]["transcript"]
    assert transcript.startswith("好的，这是一段语音回复。")
    samples = len(audio_of(frames)) // 2
    mandarin = len(engine.synthesize(transcript, 16000, lang="zh"))
    english = len(engine.synthesize(transcript, 16000, lang="en"))
    assert _close_in_length(samples, mandarin), (samples, mandarin)
    assert abs(english - mandarin) > 0.1 * mandarin  # so the check can tell the voices apart


def test_omni_realtime_chinese_text_with_chinese_instructions_is_spoken_in_mandarin(
    server: Any, engine: Engine
) -> None:
    frames = [
        {
            "type": "session.update",
            "session": {
                "modalities": ["text", "audio"],
                "turn_detection": None,
                "instructions": "你是一个乐于助人的助手，请用中文回答。",
            },
        },
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "一加一等于几"}],
            },
        },
        {"type": "response.create"},
    ]
    events = asyncio.run(_raw(server, frames, "response.done"))
    transcript = "".join(
        e["delta"] for e in events if e["type"] == "response.audio_transcript.delta"
    )
    assert transcript == "一加一等于二。"
    audio = b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.audio.delta"
    )
    assert _close_in_length(len(audio) // 2, len(engine.synthesize(transcript, 24000, lang="zh")))


def test_omni_realtime_spoken_chinese_question_gets_the_honest_chinese_answer(
    server: Any, engine: Engine
) -> None:
    pcm = speech(engine, "你好，今天天气怎么样").to_pcm()
    frames = [
        {
            "type": "session.update",
            "session": {
                "modalities": ["text"],
                "turn_detection": None,
                "instructions": "请用中文回答。",
            },
        },
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()},
        {"type": "input_audio_buffer.commit"},
        {"type": "response.create"},
    ]
    events = asyncio.run(_raw(server, frames, "response.done"))
    text = "".join(e["delta"] for e in events if e["type"] == "response.text.delta")
    assert text == UNCLEAR_ZH


def test_dialog_chinese_prompt_is_answered_in_chinese_and_spoken_in_mandarin(
    server: Any, engine: Engine
) -> None:
    with sdk_dialog(server, rate=24000) as (conv, cb):
        conv.request_to_respond("prompt", "一加一等于几", None)
        cb.wait(lambda n, v: n == "responding_ended")
        cb.wait_state("Listening")
    assert answer_text(cb) == "一加一等于二。"
    expected = len(engine.synthesize("一加一等于二。", 24000, lang="zh"))
    assert _close_in_length(len(cb.audio) // 2, expected), (len(cb.audio) // 2, expected)


def test_sdk_spoken_chinese_after_a_chinese_turn_is_answered_in_chinese_only(
    sdk: Any, engine: Engine, tmp_path: Path
) -> None:
    mandarin = "file://" + str(speech(engine, "你好，今天天气怎么样").save(tmp_path / "zh.wav"))
    messages = [
        {"role": "user", "content": [{"text": "一加一等于几"}]},
        {"role": "assistant", "content": [{"text": "一加一等于二。"}]},
        {"role": "user", "content": [{"audio": mandarin}]},
    ]
    response = sdk.MultiModalConversation.call(model=MODEL, messages=messages)
    assert response.status_code == 200, response.message
    assert text_of(response) == UNCLEAR_ZH


def test_dialog_spoken_chinese_question_is_answered_honestly_not_with_guessed_words(
    server: Any, engine: Engine
) -> None:
    pcm = speech(engine, "你好，今天天气怎么样").to_pcm()
    with sdk_dialog(server) as (conv, cb):
        conv.start_speech()
        for chunk in frames(pcm):
            conv.send_audio_data(chunk)
        conv.stop_speech()
        cb.wait(lambda n, v: n == "responding_ended", 60)
        cb.wait_state("Listening")
    # nothing said which language (no text, no earlier turn): both
    assert answer_text(cb) == f"{UNCLEAR_ZH} {UNCLEAR_EN}"
