"""Text as it is compared and spoken: normalised words, English numbers in words, and scoring a reply
against a reference (word error rate, exact match). Used by the batch scorer, the offline engine
(its recogniser and its spoken answers) and ``nbtoolkit.words``.

Normalisation (both sides alike): Unicode NFKC, lower case, punctuation removed (an apostrophe inside a
word stays: "don't"), whitespace collapsed. Text in Chinese/Japanese ideographs has no spaces between
words, so each ideograph counts as one word there; for such text the "WER" is a character error rate.

:func:`spoken_english` goes further for English speech recognition, as Whisper's English text
normaliser does (https://github.com/openai/whisper/blob/main/whisper/normalizers/english.py), but
towards the *spoken* form, because that is what a recogniser's words and the engine's grammar are:
numbers become words ("10" → "ten", "3.5" → "three point five", "21st" → "twenty first",
"5%" → "five percent"), titles are spelled out ("Mr." → "mister"), hesitations ("uh", "um") are
dropped, and hyphenated words split ("ill-disposed" → "ill disposed"). Score ASR with
``wer(ref, hyp, spoken=True)``.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "edit_distance",
    "exact_match",
    "normalize",
    "number_words",
    "quoted",
    "spoken_english",
    "tokens",
    "wer",
]

_QUOTED = re.compile(r'"([^"]*)"|“([^”]*)”|「([^」]*)」')
_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+(?:'[^\W{_CJK}]+)*")
_NUMBER = re.compile(r"([$£€]?)(\d+(?:,\d{3})*(?:\.\d+)?)(st|nd|rd|th)?(\s?%)?", re.I)
_CURRENCY = {"$": "dollars", "£": "pounds", "€": "euros"}
_ONES = [
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
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINALS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
             "nine": "ninth", "twelve": "twelfth"}  # fmt: skip
_TITLES = {"mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint", "jr": "junior",
           "sr": "senior", "prof": "professor", "vs": "versus"}  # fmt: skip
_HESITATIONS = frozenset({"uh", "um", "umm", "hmm", "mm", "mmm", "mhm", "er", "erm"})


def normalize(text: str) -> str:
    """``text`` as it is compared: lower case, no punctuation, single spaces."""
    return " ".join(tokens(text))


def tokens(text: str) -> list[str]:
    """The words of ``text`` after normalisation (an ideograph is a word of its own)."""
    folded = unicodedata.normalize("NFKC", text or "").casefold().replace("_", " ")
    return _TOKEN.findall(folded)


def number_words(n: int, *, british: bool = False) -> str:
    """An integer in English words: as said in the US ("one hundred five"), or with ``british``
    "and" before the last part under a hundred ("one hundred and five", "two thousand and one"),
    as the offline engine speaks its answers. Negative numbers start with "minus"."""
    if n < 0:
        return "minus " + number_words(-n, british=british)
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    and_ = " and " if british else " "
    if n < 1000:
        rest = n % 100
        return f"{_ONES[n // 100]} hundred" + (
            "" if rest == 0 else and_ + number_words(rest, british=british)
        )
    for value, name in _SCALES:
        if n >= value:
            head, rest = divmod(n, value)
            if head >= 1000 and value == _SCALES[0][0]:  # beyond trillions: say the digits
                return " ".join(_ONES[int(d)] for d in str(n))
            join = and_ if rest < 100 else " "
            tail = "" if rest == 0 else join + number_words(rest, british=british)
            return f"{number_words(head, british=british)} {name}{tail}"
    raise AssertionError("unreachable")  # pragma: no cover


def _ordinal(words: str) -> str:
    head, _, last = words.rpartition(" ")
    if last in _ORDINALS:
        last = _ORDINALS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return f"{head} {last}".strip()


def _say_number(m: re.Match[str]) -> str:
    currency, digits, suffix, percent = m.groups()
    whole, _, fraction = digits.replace(",", "").partition(".")
    if len(whole) > 1 and whole.startswith("0"):  # "007", a code: digit by digit
        words = " ".join(_ONES[int(d)] for d in whole)
    else:
        words = number_words(int(whole))
    if fraction:
        words += " point " + " ".join(_ONES[int(d)] for d in fraction)
    if suffix:
        words = _ordinal(words)
    if percent:
        words += " percent"
    if currency:
        words += " " + _CURRENCY[currency]
    return f" {words} "


def spoken_english(text: str) -> str:
    """English ``text`` in spoken form: lower-case words, numbers and titles spelled out, no
    punctuation or hesitations (see the module docstring). Both sides of an ASR score go through it."""
    text = (text or "").replace("\u2019", "'").replace("&", " and ")
    words = tokens(_NUMBER.sub(_say_number, text))
    return " ".join(_TITLES.get(w, w) for w in words if w not in _HESITATIONS)


def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    """Word-level Levenshtein distance: substitutions + deletions + insertions."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, 1):
        current = [i]
        for j, hyp_word in enumerate(hypothesis, 1):
            current.append(
                min(
                    previous[j] + 1,  # reference word deleted
                    current[j - 1] + 1,  # hypothesis word inserted
                    previous[j - 1] + (ref_word != hyp_word),
                )
            )
        previous = current
    return previous[-1]


def wer(reference: str, hypothesis: str, *, spoken: bool = False) -> float:
    """Word error rate of ``hypothesis`` against ``reference``: edits / reference words.

    It can exceed 1 when the hypothesis adds words. An empty reference gives 0.0 for an empty
    hypothesis and 1.0 otherwise (the ratio itself is undefined there). ``spoken``: compare the
    :func:`spoken_english` forms (for English speech recognition).
    """
    if spoken:
        reference, hypothesis = spoken_english(reference), spoken_english(hypothesis)
    ref, hyp = tokens(reference), tokens(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return edit_distance(ref, hyp) / len(ref)


def exact_match(reference: str, hypothesis: str) -> bool:
    """True when both texts are the same after normalisation (case and punctuation ignored)."""
    return tokens(reference) == tokens(hypothesis)


def quoted(text: str) -> str:
    """The quoted part of an answer that wraps a transcript, e.g. ``The audio says: "open the door".``
    → ``open the door``; the whole text when nothing is quoted. Pass it as ``extract=`` to score
    transcriptions from models that answer in a sentence."""
    found = _QUOTED.findall(text or "")
    if not found:
        return text
    return " ".join(next(part for part in groups if part) for groups in found if any(groups))
