"""The documented range of every parameter each protocol takes (sans-I/O), checked in one place.

Each ``*_problem`` function looks at what a client sends — realtime ``session.update``, dialog
``Start`` / ``UpdateInfo`` / ``RequestToRespond`` parameters, conversation ``parameters`` — and
returns the first :class:`Invalid` value, or ``None`` when everything is in range. The local server
turns an :class:`Invalid` into the protocol's error (realtime ``error`` event, dialog ``Error`` or
``task-failed``, HTTP 400) and carries on; a client checks its options with the same function and
raises :meth:`Invalid.error` before it connects.

Numbers are JSON numbers: ``bool`` is not a number here, and neither are NaN or ±Infinity (Python's
``json`` reads them), so ``1e300``, ``NaN`` and ``Infinity`` are refused like any other value out of
range. The ranges and their public sources are listed in docs/protocols.md ("Parameter ranges").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nbtoolkit.errors import ConfigError
from nbtoolkit.protocols.realtime import VOICES

__all__ = [
    "DIALOG_OUTPUT_RATES",
    "REALTIME_INPUT_FORMATS",
    "REALTIME_OUTPUT_FORMATS",
    "Invalid",
    "conversation_parameters_problem",
    "dialog_parameters_problem",
    "dialog_start_problem",
    "realtime_response_problem",
    "realtime_session_problem",
    "turn_detection_problem",
]

#: Rates the dialog service's TTS speaks at (``downstream.sample_rate``).
DIALOG_OUTPUT_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
#: ``input_audio_format`` / ``output_audio_format`` names the Qwen-Omni realtime service accepts
#: ("pcm16" is what the SDK sends for both; the 24 kHz output is also called "pcm24").
REALTIME_INPUT_FORMATS = ("pcm16", "pcm")
REALTIME_OUTPUT_FORMATS = ("pcm16", "pcm24", "pcm")
_SEED_MAX = 2**31 - 1
#: The longest utterance, in seconds: DashScope's sentence recogniser (Gummy, the realtime API's
#: transcription model) takes "audio of at most one minute, otherwise it reports an error and
#: disconnects" (https://help.aliyun.com/zh/model-studio/developer-reference/sentence-java-api).
#: The local server refuses longer utterances; the clients' ``ask`` refuses longer questions.
MAX_UTTERANCE_SECONDS = 60.0


@dataclass(frozen=True)
class Invalid:
    """A parameter out of its documented range: ``param`` is its dotted wire name
    (``session.turn_detection.threshold``), ``got`` the value sent, ``wants`` what is allowed."""

    param: str
    got: Any
    wants: str

    @property
    def message(self) -> str:
        """One sentence for the protocol's error event: what was sent and what is allowed."""
        return f"{self.param} must be {self.wants}, not {_show(self.got)}"

    @property
    def problem(self) -> str:
        """The "problem" half of a toolkit error: the parameter and the value sent."""
        return f"{self.param} is {_show(self.got)}, out of its documented range"

    @property
    def fix(self) -> str:
        """The "fix" half: what is allowed."""
        return f"use {self.wants}"

    def error(self, name: str | None = None) -> ConfigError:
        """The error a client raises for this value; ``name`` is the option as the caller spelt it
        (``vad={'silence_duration_ms': …}``) when that differs from the wire name."""
        problem = self.problem if name is None else self.problem.replace(self.param, name, 1)
        return ConfigError(problem, self.fix)


def _show(value: Any) -> str:
    try:
        text = repr(value)
    except ValueError:  # an int past Python's digit limit for str()
        return "a number too long to print"
    return text if len(text) <= 60 else text[:57] + "..."


# ------------------------------------------------------------------------------ value checks
# Each check returns what is allowed (for the message) when ``value`` is not allowed, else None.
Check = Callable[[Any], str | None]


def _number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and (isinstance(value, int) or math.isfinite(value))  # NaN, ±Infinity (json reads them)
    )


def _integer(value: Any) -> bool:
    return _number(value) and (isinstance(value, int) or value.is_integer())


def number(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Check:
    """A finite number in ``[low, high]`` (``(`` / ``)`` with the open flags)."""
    wants = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def check(value: Any) -> str | None:
        if not _number(value):
            return wants
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        return None if above and below else wants

    return check


def integer(low: int, high: int, unit: str = "") -> Check:
    """A whole number in ``[low, high]`` (``800`` or ``800.0``)."""
    wants = f"a whole number in [{low}, {high}]{' ' + unit if unit else ''}"

    def check(value: Any) -> str | None:
        return None if _integer(value) and low <= value <= high else wants

    return check


def one_of(*choices: Any) -> Check:
    wants = "one of " + ", ".join(repr(c) for c in choices)

    def check(value: Any) -> str | None:
        ok = any(value == c and type(value) is type(c) for c in choices)
        return None if ok else wants

    return check


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "true or false"


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) else "a string"


def _positive(value: Any) -> str | None:
    return None if _number(value) and value > 0 else "a finite number above 0"


def _first(section: Mapping[str, Any], prefix: str, checks: Mapping[str, Check]) -> Invalid | None:
    """The first key of ``section`` that ``checks`` knows and refuses (``None`` values are unset)."""
    for key, check in checks.items():
        if key in section and section[key] is not None:
            wants = check(section[key])
            if wants is not None:
                return Invalid(f"{prefix}{key}", section[key], wants)
    return None


def _object(value: Any, param: str) -> Invalid | None:
    return None if isinstance(value, Mapping) else Invalid(param, value, "an object")


# ------------------------------------------------------------------------------ realtime
#: https://www.alibabacloud.com/help/en/model-studio/client-events (session.update)
_TURN_DETECTION: dict[str, Check] = {
    "type": one_of("server_vad"),
    "threshold": number(-1, 1),
    # not bounded by the documentation; the local server keeps at most this much speech before the
    # VAD's start, so a larger value (1e300) cannot make it hold unbounded audio
    "prefix_padding_ms": integer(0, 6000, "ms"),
    "silence_duration_ms": integer(200, 6000, "ms"),
    "create_response": _boolean,
    "interrupt_response": _boolean,
}
_SAMPLING: dict[str, Check] = {
    "temperature": number(0, 2, high_open=True),
    "top_p": number(0, 1, low_open=True),
    "top_k": integer(0, 2**31 - 1),
    "max_tokens": integer(1, 2**31 - 1),
    "repetition_penalty": _positive,
    "presence_penalty": number(-2, 2),
    "seed": integer(0, _SEED_MAX),
}


def _modalities(value: Any) -> str | None:
    ok = (
        isinstance(value, list)
        and all(isinstance(m, str) for m in value)
        and sorted(value) in (["text"], ["audio", "text"])
    )
    return None if ok else "['text'] or ['text', 'audio']"


def _max_output(value: Any) -> str | None:
    return None if value == "inf" or (_integer(value) and value >= 1) else "'inf' or a count ≥ 1"


_SESSION: dict[str, Check] = {
    "modalities": _modalities,
    "voice": one_of(*VOICES),
    "input_audio_format": one_of(*REALTIME_INPUT_FORMATS),
    "output_audio_format": one_of(*REALTIME_OUTPUT_FORMATS),
    "instructions": _text,
    "smooth_output": _boolean,
    "max_response_output_tokens": _max_output,
    "tool_choice": _text,
    **_SAMPLING,
}


def turn_detection_problem(value: Any, prefix: str = "session.turn_detection") -> Invalid | None:
    """``turn_detection``: ``None`` (manual mode) or a server-VAD object in range. Keys it does not
    know are left alone (the SDK may send more)."""
    if value is None:
        return None
    return _object(value, prefix) or _first(value, prefix + ".", _TURN_DETECTION)


def realtime_session_problem(session: Any) -> Invalid | None:
    """The first value of a ``session.update``'s ``session`` object out of its documented range.

    Clients: ``OmniRealtime`` checks its options with this (``vad=`` as ``turn_detection``)."""
    if not isinstance(session, Mapping):
        return Invalid("session", session, "an object")
    found = _first(session, "session.", _SESSION)
    if found is not None:
        return found
    if "turn_detection" in session:
        found = turn_detection_problem(session["turn_detection"])
        if found is not None:
            return found
    transcription = session.get("input_audio_transcription")
    if transcription is not None and not isinstance(transcription, Mapping):
        return Invalid("session.input_audio_transcription", transcription, "an object or null")
    tools = session.get("tools")
    if tools is not None and not isinstance(tools, list):
        return Invalid("session.tools", tools, "a list")
    return None


def realtime_response_problem(response: Any) -> Invalid | None:
    """``response.create``'s ``response``: optional ``instructions`` (text) and ``modalities``."""
    if response is None:
        return None
    if not isinstance(response, Mapping):
        return Invalid("response", response, "an object")
    checks: dict[str, Check] = {"instructions": _text, "modalities": _modalities}
    return _first(response, "response.", checks)


# ------------------------------------------------------------------------------ dialog
#: https://help.aliyun.com/zh/model-studio/multimodal-interaction-protocol and the SDK's
#: dashscope/multimodal/multimodal_request_params.py (Upstream, Downstream)
_UPSTREAM: dict[str, Check] = {
    "type": one_of("AudioOnly", "AudioAndVideo"),
    "mode": one_of("push2talk", "tap2talk", "duplex"),
    "audio_format": one_of("pcm", "opus"),
    "sample_rate": one_of(16000),
    "vocabulary_id": _text,
}
_DOWNSTREAM: dict[str, Check] = {
    "voice": _text,
    "sample_rate": one_of(*DIALOG_OUTPUT_RATES),
    "intermediate_text": _text,
    "debug": _boolean,
    "audio_format": one_of("pcm", "mp3"),
    "volume": integer(0, 100),
    "pitch_rate": integer(50, 200),
    "speech_rate": integer(50, 200),
}


def _integral_rate(value: Any) -> Any:
    # 16000.0 is the same rate as 16000 (a JSON number); one_of compares type too
    return int(value) if _integer(value) and isinstance(value, float) else value


def dialog_start_problem(parameters: Any) -> Invalid | None:
    """The first ``Start`` parameter (``upstream`` / ``downstream``) out of its documented range,
    then those :func:`dialog_parameters_problem` checks.

    Clients: ``Dialog`` checks its ``sample_rate``/``voice``/``mode`` with this, as
    ``{"upstream": {"mode": …}, "downstream": {"sample_rate": …, "voice": …}}``."""
    if not isinstance(parameters, Mapping):
        return Invalid("parameters", parameters, "an object")
    for name, checks in (("upstream", _UPSTREAM), ("downstream", _DOWNSTREAM)):
        section = parameters.get(name)
        if section is None:
            continue
        found = _object(section, f"parameters.{name}")
        if found is None:
            rated = {k: _integral_rate(v) if k == "sample_rate" else v for k, v in section.items()}
            found = _first(rated, f"parameters.{name}.", checks)
        if found is not None:
            return found
    return dialog_parameters_problem(parameters)


def dialog_parameters_problem(parameters: Any) -> Invalid | None:
    """``parameters`` of ``UpdateInfo`` / ``RequestToRespond`` (and ``Start``): ``images`` a list
    of ``{"type": "base64" | "url", "value": str}``, ``client_info`` / ``biz_params`` objects."""
    if not isinstance(parameters, Mapping):
        return Invalid("parameters", parameters, "an object")
    for name in ("client_info", "biz_params", "dialog_attributes"):
        if parameters.get(name) is not None:
            found = _object(parameters[name], f"parameters.{name}")
            if found is not None:
                return found
    images = parameters.get("images")
    if images is None:
        return None
    if not isinstance(images, list):
        return Invalid("parameters.images", images, 'a list of {"type", "value"} objects')
    for i, item in enumerate(images):
        ok = (
            isinstance(item, Mapping)
            and item.get("type") in ("base64", "url")
            and isinstance(item.get("value"), str)
        )
        if not ok:
            wants = 'an object {"type": "base64" | "url", "value": "…"}'
            return Invalid(f"parameters.images[{i}]", item, wants)
    return None


# ------------------------------------------------------------------------------ conversation
#: https://www.alibabacloud.com/help/en/model-studio/qwen-api-via-dashscope (request parameters)
_GENERATION: dict[str, Check] = {
    **_SAMPLING,
    "result_format": one_of("message", "text"),
    "incremental_output": _boolean,
    "enable_search": _boolean,
}


#: The generation parameters a client may pass through (``QwenAudio.ask(..., temperature=0.2)``); the
#: response's shape (``result_format``, ``incremental_output``) is the client's own business.
GENERATION_OPTIONS = frozenset({*_SAMPLING, "enable_search", "stop"})


def _stop(value: Any) -> str | None:
    ok = isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(s, (str, int)) for s in value)
    )
    return None if ok else "a string or a list of strings"


def conversation_parameters_problem(parameters: Any) -> Invalid | None:
    """The first generation ``parameters`` value out of its documented range (unknown keys pass).

    Clients: ``QwenAudio.ask(**options)`` can check its options with this."""
    if parameters is None:
        return None
    if not isinstance(parameters, Mapping):
        return Invalid("parameters", parameters, "an object")
    return _first(parameters, "parameters.", {**_GENERATION, "stop": _stop})
