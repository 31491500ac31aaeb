"""A clip as inline HTML: the whole clip's waveform as SVG and a bounded ``<audio>`` element.

It lives with :class:`~nbtoolkit.audio.clip.Clip` (numpy only), so ``Clip._repr_html_`` needs
nothing from :mod:`nbtoolkit.display`, which builds on it
(:class:`~nbtoolkit.display.player.InlinePlayer`, :func:`~nbtoolkit.display.waveform_svg`).
"""

from __future__ import annotations

import base64
import html
import math
from typing import Any

import numpy as np

from nbtoolkit.audio.clip import Clip
from nbtoolkit.audio.features import envelope

__all__ = [
    "EMBED_RATE",
    "MAX_EMBED_SECONDS",
    "WAVEFORM_COLOR",
    "clip_html",
    "embedded",
    "human_duration",
    "waveform_svg",
]

#: A player embeds at most this many seconds, so a long clip never puts megabytes into the notebook.
MAX_EMBED_SECONDS = 30.0
#: Embedded audio is downsampled to this rate (mono WAV): 30 s is then ≤ 960 kB, ≤ 1.3 MB as base64.
EMBED_RATE = 16000
#: The colour of waveforms, inline and plotted.
WAVEFORM_COLOR = "#3b6ea8"


def human_duration(seconds: float) -> str:
    """``"4.2 s"``, ``"5 min 3 s"``, ``"1 h 2 min"``."""
    if seconds < 60:
        return f"{seconds:.3g} s"
    total = round(seconds)
    if total < 3600:
        m, s = divmod(total, 60)
        return f"{m} min {s} s" if s else f"{m} min"
    h, rest = divmod(total, 3600)
    m = rest // 60
    return f"{h} h {m} min" if m else f"{h} h"


def waveform_svg(
    clip: Clip, width: int = 600, height: int = 56, *, color: str = WAVEFORM_COLOR
) -> str:
    """An inline ``<svg>`` of the clip's min/max envelope, ``width`` × ``height`` px (numpy only)."""
    mins, maxs = envelope(clip, width)
    half = height / 2
    x = (np.arange(mins.size) + 0.5) * (width / max(1, mins.size))
    top = half - maxs / 32768.0 * half
    # at least half a pixel thick so silence still shows as a line
    bottom = np.maximum(half - mins / 32768.0 * half, top + 0.5)
    points = [f"{a:.1f},{b:.1f}" for a, b in zip(x, top, strict=True)]
    points += [f"{a:.1f},{b:.1f}" for a, b in zip(x[::-1], bottom[::-1], strict=True)]
    shape = f'<polygon points="{" ".join(points)}" fill="{color}"/>' if points else ""
    attrs: dict[str, Any] = {
        "width": width,
        "height": height,
        "viewBox": f"0 0 {width} {height}",
        "role": "img",
        "aria-label": f"waveform, {clip.duration:.2f} s",
    }
    head = " ".join(f'{k}="{v}"' for k, v in attrs.items())
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" {head}>'
        f'<line x1="0" y1="{half}" x2="{width}" y2="{half}" stroke="#ccc" stroke-width="0.5"/>'
        f"{shape}</svg>"
    )


def embedded(clip: Clip, max_seconds: float = MAX_EMBED_SECONDS) -> Clip:
    """The audio a player embeds: the first ``max_seconds``, at most :data:`EMBED_RATE` Hz."""
    part = clip[:max_seconds] if clip.duration > max_seconds else clip
    return part.resample(min(part.rate, EMBED_RATE))


def clip_html(clip: Clip, max_seconds: float = MAX_EMBED_SECONDS) -> str:
    """The waveform of the whole clip, a line of facts and an ``<audio>`` of at most the first
    ``max_seconds`` (saying "(first 30 s of 5 min)" when it cuts)."""
    if not len(clip):
        return '<div class="nbtk-player"><em>empty clip (0 samples)</em></div>'
    level = "silent" if math.isinf(clip.dbfs) else f"{clip.dbfs:.1f} dBFS"
    info = f"{human_duration(clip.duration)} · {clip.rate} Hz · {level}"
    if clip.duration > max_seconds:
        info += f" · (first {human_duration(max_seconds)} of {human_duration(clip.duration)})"
    wav = base64.b64encode(embedded(clip, max_seconds).to_wav()).decode("ascii")
    return (
        '<div class="nbtk-player" style="display:inline-block;font:12px sans-serif;color:#444">'
        f"{waveform_svg(clip)}"
        f'<div style="margin:2px 0">{html.escape(info)}</div>'
        f'<audio controls preload="metadata" src="data:audio/wav;base64,{wav}"></audio>'
        "</div>"
    )
