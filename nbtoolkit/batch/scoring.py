"""Scoring a reply against a reference: word error rate and exact match on normalised text.

Normalisation (both sides alike): Unicode NFKC, lower case, punctuation removed (an apostrophe inside a
word stays: "don't"), whitespace collapsed. Text in Chinese/Japanese ideographs has no spaces between
words, so each ideograph counts as one word there; for such text the "WER" is a character error rate.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["edit_distance", "exact_match", "normalize", "quoted", "tokens", "wer"]

_QUOTED = re.compile(r'"([^"]*)"|“([^”]*)”|「([^」]*)」')
_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+(?:'[^\W{_CJK}]+)*")


def normalize(text: str) -> str:
    """``text`` as it is compared: lower case, no punctuation, single spaces."""
    return " ".join(tokens(text))


def tokens(text: str) -> list[str]:
    """The words of ``text`` after normalisation (an ideograph is a word of its own)."""
    folded = unicodedata.normalize("NFKC", text or "").casefold().replace("_", " ")
    return _TOKEN.findall(folded)


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


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of ``hypothesis`` against ``reference``: edits / reference words.

    It can exceed 1 when the hypothesis adds words. An empty reference gives 0.0 for an empty
    hypothesis and 1.0 otherwise (the ratio itself is undefined there).
    """
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
