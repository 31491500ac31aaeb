"""The offline engine's answers: deterministic rules, honest about what they are.

The responder is not a language model and never claims to be the cloud model. Given the user's text
(or, in voice chat, the transcript of their audio), audio and images, it applies the first rule
that fits:

====================  ===============================================================================
kind                  when / answer
====================  ===============================================================================
``transcription``     "what is said in the audio", "transcribe this"… with ``audio``: the ASR
                      transcript, ``The audio says: "…".`` (without audio: says there is none)
``describe_audio``    "describe this audio/sound/recording", "what do you hear"… with ``audio``:
                      duration, loudness (dBFS in words), dominant pitch (Hz, autocorrelation on
                      voiced frames), speech or not (share of 30 ms frames webrtcvad calls speech),
                      and the words when there is speech. Also the answer to any other text that
                      comes with audio
``describe_image``    ``images`` given (VQA, video frames) and the question is about them or not
                      otherwise answerable: size and dominant colours in words (Pillow; pixels named
                      by hue/saturation/value rules), brightness
``visual_qa``         "what is in front of me", "what do you see"… with no image: asks for a photo
                      and returns the command ``visual_qa`` (``shot=front``) so a client can take one
``arithmetic``        spoken arithmetic with number words (zero…ninety-nine, hundreds) or digits and
                      plus/minus/times/multiplied by/divided by/over: "One plus one equals two."
                      Division by zero is answered honestly. Chinese (一加一等于几) is answered in Chinese
``greeting``          hello / hi / good morning / how are you / who are you / what can you do / 你好:
                      a short greeting that says this is the offline engine and what it can do
``echo``              anything else: ``You said: "…".`` (Chinese: ``你说：“…”。``); nothing heard:
                      says so
====================  ===============================================================================

Voice chat (audio but no text): the audio is transcribed and the transcript is answered by the same
rules. ``history`` (earlier (user, assistant) turns) is accepted for interface compatibility and not
used: every answer depends only on the current turn, so the same input always gives the same answer.

:func:`domain_sentences` / :func:`domain_grammar` are the phrases this responder understands; the
ASR builds its domain grammar from them, so what the responder answers is what the ASR hears best.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

__all__ = [
    "COMMAND_PHRASES",
    "NUMBER_WORDS",
    "EngineReply",
    "Responder",
    "domain_grammar",
    "domain_sentences",
    "number_to_words",
    "solve_arithmetic",
]


@dataclass
class EngineReply:
    """One answer of the offline engine."""

    text: str
    #: "arithmetic", "transcription", "describe_audio", "describe_image", "visual_qa", "greeting", "echo"
    kind: str
    #: client commands (DashScope MultiModalDialog style), e.g. the ``visual_qa`` photo request
    commands: list[dict[str, Any]] = field(default_factory=list)
    #: what was answered: the text, or the transcript of the audio in voice chat
    heard: str = ""


# --------------------------------------------------------------------------- the domain phrases
NUMBER_WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
]
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


def number_to_words(n: int) -> str:
    """English words for an integer ("minus forty two", "one thousand two hundred and five")."""
    if n < 0:
        return "minus " + number_to_words(-n)
    if n < 20:
        return _UNITS[n]
    if n < 100:
        tens, unit = divmod(n, 10)
        return _TENS[tens - 2] + (" " + _UNITS[unit] if unit else "")
    for size, name in ((1_000_000_000, "billion"), (1_000_000, "million"), (1000, "thousand")):
        if n >= size:
            head, rest = divmod(n, size)
            tail = ""
            if rest:
                tail = (" and " if rest < 100 else " ") + number_to_words(rest)
            return f"{number_to_words(head)} {name}{tail}"
    hundreds, rest = divmod(n, 100)
    return f"{_UNITS[hundreds]} hundred" + (f" and {number_to_words(rest)}" if rest else "")


def _value_to_words(v: Fraction) -> str:
    """A rational result in words: exact when it is whole or a short decimal, else 'about …'."""
    if v.denominator == 1:
        return number_to_words(int(v))
    neg = v < 0
    v = abs(v)
    rounded = round(float(v), 2)
    exact = Fraction(str(rounded)) == v
    whole = int(rounded)
    decimals = f"{rounded:.2f}".split(".")[1].rstrip("0")
    words = number_to_words(whole) + " point " + " ".join(_UNITS[int(d)] for d in decimals)
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
_ZH_GREETING = re.compile(r"你好|您好|嗨|早上好|晚上好|你是谁")

_CAPABILITIES = "I can do spoken arithmetic, transcribe audio, and describe sounds and pictures."

#: The command a client receives when the user asks about what is in front of them with no image.
VISUAL_QA_COMMAND: dict[str, Any] = {
    "name": "visual_qa",
    "params": [{"name": "shot", "value": "front", "normValue": "True"}],
}


class Responder:
    """Applies the rules in the module docstring. ``transcribe(clip) -> str`` does the ASR."""

    def __init__(self, transcribe: Callable[[Any], str]) -> None:
        self._transcribe = transcribe

    def respond(
        self,
        text: str = "",
        *,
        audio: Any = None,
        images: Sequence[bytes] = (),
        history: Sequence[tuple[str, str]] = (),
    ) -> EngineReply:
        """The answer to one turn (see the module docstring for the rules)."""
        del history  # accepted, deliberately unused: answers depend only on this turn
        text = (text or "").strip()
        voice = not text and audio is not None
        if voice:
            text = self._transcribe(audio).strip()
            if not text:
                if images:
                    return self._image_reply("", images)
                return EngineReply(
                    "I could not make out any words in the audio. Please try again, a little "
                    "closer to the microphone.",
                    "echo",
                )
        if not text:
            if images:
                return self._image_reply("", images)
            return EngineReply("I did not receive a question.", "echo")

        reply = self._answer(text, audio=None if voice else audio, images=images)
        reply.heard = text
        return reply

    # ------------------------------------------------------------------ rules
    def _answer(self, text: str, *, audio: Any, images: Sequence[bytes]) -> EngineReply:
        from nbtoolkit.local.engine.tts import has_cjk

        if has_cjk(text):
            return self._answer_zh(text, images=images)
        norm = _norm(text)

        if _TRANSCRIBE.search(norm):
            if audio is None:
                return EngineReply(
                    "There is no audio to transcribe. Send an audio clip with the question.",
                    "transcription",
                )
            words = self._transcribe(audio).strip()
            if not words:
                return EngineReply("I could not make out any words in the audio.", "transcription")
            return EngineReply(f'The audio says: "{words}".', "transcription")

        if audio is not None and _DESCRIBE_AUDIO.search(norm):
            return EngineReply(self._describe_audio(audio), "describe_audio")

        if images and (_VISUAL.search(norm) or not self._rule_based(text)):
            return self._image_reply(text if not _VISUAL.search(norm) else "", images)

        if not images and _VISUAL.search(norm):
            return EngineReply(
                "I cannot see anything yet. Please take a photo of what is in front of you and "
                "send it with your question.",
                "visual_qa",
                [dict(VISUAL_QA_COMMAND, params=[dict(p) for p in VISUAL_QA_COMMAND["params"]])],
            )

        solved = solve_arithmetic(text)
        if solved is not None:
            return EngineReply(solved[0], "arithmetic")

        if _GREETING.search(norm):
            return EngineReply(self._greeting(norm), "greeting")

        if audio is not None:
            return EngineReply(
                f'You asked: "{text}". I can only describe the audio: {self._describe_audio(audio)}',
                "describe_audio",
            )
        return EngineReply(f'You said: "{text}".', "echo")

    @staticmethod
    def _rule_based(text: str) -> bool:
        return bool(solve_arithmetic(text) or _GREETING.search(_norm(text)))

    def _answer_zh(self, text: str, *, images: Sequence[bytes]) -> EngineReply:
        answer = solve_arithmetic_zh(text)
        if answer:
            return EngineReply(answer, "arithmetic")
        if _ZH_GREETING.search(text):
            return EngineReply(
                "你好！我是 nbtoolkit 的离线引擎，在这台电脑上运行。我会做算术、转写英文语音、描述声音和图片。",
                "greeting",
            )
        if images:
            return self._image_reply(text, images)
        return EngineReply(f"你说：“{text}”。", "echo")

    @staticmethod
    def _greeting(norm: str) -> str:
        if norm.startswith(("thank", "thanks")):
            return "You are welcome. This is the offline engine of nbtoolkit."
        if norm.startswith(("goodbye", "bye")):
            return "Goodbye! This was the offline engine of nbtoolkit."
        if "can you hear me" in norm:
            return "Yes, I can hear you. I am the offline engine of nbtoolkit, running on this computer."
        return (
            "Hello! I am the offline engine of nbtoolkit, running on this computer, not the cloud "
            f"model. {_CAPABILITIES}"
        )

    def _describe_audio(self, clip: Any) -> str:
        from nbtoolkit.local.engine.describe import describe_audio

        return describe_audio(clip, transcribe=self._transcribe)

    @staticmethod
    def _image_reply(question: str, images: Sequence[bytes]) -> EngineReply:
        from nbtoolkit.local.engine.describe import describe_images

        desc = describe_images(images)
        if question:
            desc = f'You asked: "{question}". I can only describe the picture: {desc}'
        return EngineReply(desc, "describe_image")
