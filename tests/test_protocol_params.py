"""Every protocol parameter against its documented range, without sockets (protocols/params.py and
the sans-I/O sessions that use it): non-finite, huge, boolean and text values never pass, values in
range always do, and a refused update leaves the session as it was."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbtoolkit.errors import ConfigError, ProtocolError
from nbtoolkit.local.realtime_session import ConfigureVad, RealtimeSession
from nbtoolkit.protocols import params
from nbtoolkit.protocols.conversation import parse_request
from nbtoolkit.protocols.dialog import DialogSession, parse_client_message
from nbtoolkit.protocols.realtime import ErrorEvent, SessionUpdated

fuzz = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

#: Anything a JSON frame (or a Python caller) can put where a number belongs.
anything = (
    st.floats()
    | st.sampled_from([math.inf, -math.inf, math.nan, 1e300, -1e300, 10**400, -(10**400)])
    | st.integers()
    | st.booleans()
    | st.text(max_size=8)
    | st.none()
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)

# (parameter path, lowest, highest, whole numbers only) as documented (see docs/protocols.md)
REALTIME_NUMBERS = [
    ("turn_detection.threshold", -1, 1, False),
    ("turn_detection.prefix_padding_ms", 0, 6000, True),
    ("turn_detection.silence_duration_ms", 200, 6000, True),
    ("presence_penalty", -2, 2, False),
    ("top_k", 0, 2**31 - 1, True),
    ("seed", 0, 2**31 - 1, True),
]
DIALOG_NUMBERS = [
    ("downstream.volume", 0, 100, True),
    ("downstream.pitch_rate", 50, 200, True),
    ("downstream.speech_rate", 50, 200, True),
]
GENERATION_NUMBERS = [
    ("presence_penalty", -2, 2, False),
    ("seed", 0, 2**31 - 1, True),
    ("max_tokens", 1, 2**31 - 1, True),
]


def in_range(value: Any, low: float, high: float, whole: bool) -> bool:
    """The documented range, written out independently of the code under test."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(value, float) and (not math.isfinite(value) or (whole and value % 1)):
        return False
    return low <= value <= high


def nest(path: str, value: Any) -> dict[str, Any]:
    head, _, rest = path.partition(".")
    return {head: nest(rest, value) if rest else value}


@pytest.mark.parametrize(("path", "low", "high", "whole"), REALTIME_NUMBERS)
@fuzz
@given(value=anything)
def test_realtime_numbers_pass_only_inside_their_documented_range(
    path: str, low: float, high: float, whole: bool, value: Any
) -> None:
    problem = params.realtime_session_problem(nest(path, value))
    if value is None:  # an unset value (the SDK sends null for what the caller left alone)
        assert problem is None
        return
    assert (problem is None) == in_range(value, low, high, whole), (path, value, problem)
    if problem is not None:
        assert problem.param == f"session.{path}"


@pytest.mark.parametrize(("path", "low", "high", "whole"), DIALOG_NUMBERS)
@fuzz
@given(value=anything)
def test_dialog_numbers_pass_only_inside_their_documented_range(
    path: str, low: float, high: float, whole: bool, value: Any
) -> None:
    problem = params.dialog_start_problem(nest(path, value))
    if value is None:
        assert problem is None
        return
    assert (problem is None) == in_range(value, low, high, whole), (path, value, problem)


@pytest.mark.parametrize(("path", "low", "high", "whole"), GENERATION_NUMBERS)
@fuzz
@given(value=anything)
def test_generation_numbers_pass_only_inside_their_documented_range(
    path: str, low: float, high: float, whole: bool, value: Any
) -> None:
    problem = params.conversation_parameters_problem({path: value})
    if value is None:
        assert problem is None
        return
    assert (problem is None) == in_range(value, low, high, whole), (path, value, problem)


@pytest.mark.parametrize(
    ("check", "session", "param"),
    [
        (params.realtime_session_problem, {"temperature": 2}, "session.temperature"),
        (params.realtime_session_problem, {"top_p": 0}, "session.top_p"),
        (params.realtime_session_problem, {"repetition_penalty": 0}, "session.repetition_penalty"),
        (params.realtime_session_problem, {"voice": "Nobody"}, "session.voice"),
        (params.realtime_session_problem, {"instructions": 7}, "session.instructions"),
        (params.realtime_session_problem, {"output_audio_format": "mp3"}, "session.output_audio_format"),
        (params.realtime_session_problem, {"turn_detection": "on"}, "session.turn_detection"),
        (params.realtime_session_problem, {"turn_detection": {"create_response": "yes"}}, "session.turn_detection.create_response"),
        (params.realtime_session_problem, {"max_response_output_tokens": "lots"}, "session.max_response_output_tokens"),
        (params.realtime_response_problem, {"modalities": ["audio"]}, "response.modalities"),
        (params.dialog_start_problem, {"upstream": {"sample_rate": 16000.5}}, "parameters.upstream.sample_rate"),
        (params.dialog_start_problem, {"upstream": {"type": "Video"}}, "parameters.upstream.type"),
        (params.dialog_start_problem, {"downstream": {"sample_rate": 32000}}, "parameters.downstream.sample_rate"),
        (params.dialog_start_problem, {"downstream": {"debug": "no"}}, "parameters.downstream.debug"),
        (params.dialog_parameters_problem, {"images": [{"type": "url"}]}, "parameters.images[0]"),
        (params.dialog_parameters_problem, {"biz_params": 5}, "parameters.biz_params"),
        (params.conversation_parameters_problem, {"incremental_output": "no"}, "parameters.incremental_output"),
        (params.conversation_parameters_problem, {"stop": 5}, "parameters.stop"),
        (params.conversation_parameters_problem, {"result_format": "xml"}, "parameters.result_format"),
    ],
)  # fmt: skip
def test_nonsense_values_name_their_parameter_and_what_is_allowed(
    check: Any, session: dict[str, Any], param: str
) -> None:
    problem = check(session)
    assert problem is not None and problem.param == param
    assert problem.message.startswith(f"{param} must be ") and ", not " in problem.message


@pytest.mark.parametrize(
    ("check", "value"),
    [
        (params.realtime_session_problem, {"voice": None, "turn_detection": None}),
        (params.realtime_session_problem, {"output_audio_format": "pcm24", "temperature": 0}),
        (params.realtime_session_problem, {"turn_detection": {"threshold": 0.2, "prefix_padding_ms": 300.0}}),
        (params.realtime_session_problem, {"max_response_output_tokens": "inf", "smooth_output": None}),
        (params.dialog_start_problem, {"upstream": {"sample_rate": 16000.0, "mode": "duplex"}}),
        (params.dialog_start_problem, {"downstream": {"sample_rate": 48000, "voice": "longxiaochun_v2"}}),
        (params.conversation_parameters_problem, {"incremental_output": True, "stop": ["\n"]}),
    ],
)  # fmt: skip
def test_documented_values_and_the_sdks_nulls_pass(check: Any, value: dict[str, Any]) -> None:
    assert check(value) is None


def test_a_client_option_out_of_range_is_a_config_error_naming_the_option() -> None:
    problem = params.turn_detection_problem({"silence_duration_ms": "x"})
    assert problem is not None
    err = problem.error("vad['silence_duration_ms']")
    assert isinstance(err, ConfigError)
    assert "vad['silence_duration_ms'] is 'x'" in str(err) and "[200, 6000] ms" in str(err)


# ------------------------------------------------------------------------- the sessions
@fuzz
@given(
    key=st.sampled_from(["threshold", "prefix_padding_ms", "silence_duration_ms"]),
    value=anything,
)
def test_realtime_session_update_with_any_vad_value_is_applied_in_range_or_refused(
    key: str, value: Any
) -> None:
    session = RealtimeSession("qwen-omni-turbo-realtime")
    before = json.dumps(session.config)
    # allow_nan: Infinity and NaN reach the server as JSON literals, as a browser's JSON.stringify
    # never sends but Python's json.dumps does
    frame = json.dumps({"type": "session.update", "session": {"turn_detection": {key: value}}})
    step = session.receive(frame)
    (event,) = step.events
    if isinstance(event, ErrorEvent):
        assert event.error["param"] == f"session.turn_detection.{key}"
        assert json.dumps(session.config) == before  # a refused update changes nothing
        return
    assert isinstance(event, SessionUpdated)
    for action in step.actions:  # what the route hands the VAD converts and is bounded
        assert isinstance(action, ConfigureVad) and action.settings is not None
        assert -1 <= float(action.settings["threshold"]) <= 1
        assert 0 <= int(action.settings["prefix_padding_ms"]) <= 6000
        assert 200 <= int(action.settings["silence_duration_ms"]) <= 6000


def test_realtime_padding_of_infinity_is_an_error_event_not_a_crash() -> None:
    session = RealtimeSession("qwen-omni-turbo-realtime")
    for raw in ("Infinity", "NaN", "1e300", "-1", "true"):
        frame = '{"type":"session.update","session":{"turn_detection":{"prefix_padding_ms":%s}}}'
        step = session.receive(frame % raw)
        assert [type(e) for e in step.events] == [ErrorEvent] and step.actions == [], raw
        assert step.events[0].error["code"] == "invalid_value"


def _start(parameters: Any) -> str:
    header = {"action": "run-task", "task_id": "t" * 32}
    body = {"input": {"directive": "Start", "dialog_id": ""}, "parameters": parameters}
    return json.dumps({"header": header, "payload": body})


@fuzz
@given(
    where=st.sampled_from(
        ["upstream.sample_rate", "downstream.sample_rate", "downstream.volume", "upstream.mode"]
    ),
    value=anything,
)
def test_dialog_start_with_any_value_starts_in_range_or_fails_the_task(
    where: str, value: Any
) -> None:
    session = DialogSession("dlg")
    try:
        msg = parse_client_message(_start(nest(where, value)))
    except ProtocolError as exc:  # a frame the parser refuses; the route fails the task with it
        assert exc.code == "InvalidParameter" and where.split(".")[0] in str(exc)
        return
    out = session.receive(msg)
    events = [o.message["header"]["event"] for o in out if hasattr(o, "message")]
    if session.started:
        assert session.options.input_rate == 16000
        assert session.options.output_rate in params.DIALOG_OUTPUT_RATES
    else:
        assert events == ["task-failed"]
        failed = out[0].message["header"]  # type: ignore[union-attr]
        assert where.split(".")[1] in failed["error_message"]


def test_generation_request_with_nan_temperature_is_a_400_naming_it() -> None:
    body = json.loads(
        '{"model": "m", "input": {"messages": [{"role": "user", "content": [{"text": "hi"}]}]},'
        ' "parameters": {"temperature": NaN}}'
    )
    with pytest.raises(ProtocolError) as err:
        parse_request(body)
    assert err.value.status == 400 and err.value.code == "InvalidParameter"
    assert "parameters.temperature is nan" in str(err.value) and "[0, 2)" in str(err.value)
