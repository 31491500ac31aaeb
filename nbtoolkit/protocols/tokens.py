"""Token counting where a service reports none: a documented, deterministic rule (not a real tokenizer).

The cloud models count tokens with their own tokenizers; the offline engine (and the dialog client, for
the service that reports no usage) cannot, so they report
numbers from this rule, which is close in scale and always gives the same count for the same input:

* **text** — :func:`text_tokens`: one token per English word or number (a run of letters, digits
  and apostrophes), one per CJK character, and one per other non-space character (punctuation,
  symbols, emoji).
* **audio** — :func:`audio_tokens`: 25 tokens per second (Qwen's audio encoders emit one token per
  40 ms frame), rounded up; at least 1 for any non-empty audio.
* **images** — :func:`image_tokens`: one token per 28×28 pixel patch, ``ceil(w/28) * ceil(h/28)``
  (Qwen-VL merges 14-pixel patches 2×2), clamped to 4…1280 (Qwen-VL's default pixel limits).
"""

from __future__ import annotations

import math
import re

__all__ = [
    "AUDIO_TOKENS_PER_SECOND",
    "IMAGE_PATCH",
    "MAX_IMAGE_TOKENS",
    "MIN_IMAGE_TOKENS",
    "audio_tokens",
    "image_tokens",
    "text_tokens",
]

AUDIO_TOKENS_PER_SECOND = 25
IMAGE_PATCH = 28
MIN_IMAGE_TOKENS = 4
MAX_IMAGE_TOKENS = 1280

_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002a6df"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}](?:[^\W_{_CJK}]|')*|[^\s]")


def text_tokens(text: str) -> int:
    """Tokens in ``text``: words/numbers + CJK characters + other non-space characters."""
    return len(_TOKEN.findall(text or ""))


def audio_tokens(seconds: float) -> int:
    """Tokens for ``seconds`` of audio: 25 per second, rounded up (0 for none)."""
    if not seconds or seconds <= 0 or math.isnan(seconds):
        return 0
    return max(1, math.ceil(round(seconds * AUDIO_TOKENS_PER_SECOND, 6)))


def image_tokens(width: int, height: int) -> int:
    """Tokens for a ``width``×``height`` image: 28×28 patches, clamped to 4…1280."""
    if width <= 0 or height <= 0:
        return 0
    patches = math.ceil(width / IMAGE_PATCH) * math.ceil(height / IMAGE_PATCH)
    return min(MAX_IMAGE_TOKENS, max(MIN_IMAGE_TOKENS, patches))
