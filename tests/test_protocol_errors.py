"""The one status/code → error table (nbtoolkit.protocols.errors) maps every row as documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbtoolkit.errors import (
    AuthError,
    BackendError,
    ConnectionLost,
    ProtocolError,
    RateLimited,
    ServerError,
)
from nbtoolkit.protocols.errors import (
    CLOSE_CODES,
    CODES,
    STATUSES,
    code_for_status,
    error_class,
    error_for,
    status_for_code,
)

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (401, None, AuthError),
        (403, None, AuthError),
        (None, "InvalidApiKey", AuthError),
        (None, "AccessDenied.Unpurchased", AuthError),
        (None, "Arrearage", AuthError),
        (1008, None, AuthError),
        (429, None, RateLimited),
        (None, "Throttling", RateLimited),
        (None, "Throttling.RateQuota", RateLimited),
        (None, "Throttling.AllocationQuota", RateLimited),
        (None, "rate_limit_exceeded", RateLimited),
        (500, None, ServerError),
        (501, None, ServerError),
        (502, None, ServerError),
        (503, None, ServerError),
        (504, None, ServerError),
        (599, None, ServerError),
        (1011, None, ServerError),
        (1013, None, ServerError),
        (None, "InternalError", ServerError),
        (None, "server_error", ServerError),
        (408, None, ConnectionLost),
        (None, "RequestTimeOut", ConnectionLost),
        (400, None, ProtocolError),
        (None, "InvalidParameter", ProtocolError),
        (None, "DataInspectionFailed", ProtocolError),
        (404, None, ProtocolError),
        (None, "Model.NotExist", ProtocolError),
        (422, None, ProtocolError),
        (None, "invalid_request_error", ProtocolError),
        (None, None, ProtocolError),
        (None, "SomethingNew", ProtocolError),
        (1006, None, ProtocolError),
    ],
)
def test_statuses_and_codes_map_to_the_documented_error_class(
    status: int | None, code: str | None, cls: type[BackendError]
) -> None:
    assert error_class(status, code) is cls
    assert type(error_for(status, code, "said")) is cls


def test_the_code_wins_over_the_status_the_sdk_defaults_to() -> None:
    # the DashScope SDK reports an in-stream error as 400 unless the server sends a status line
    assert isinstance(error_for(400, "InternalError", "boom"), ServerError)
    assert isinstance(error_for(400, "Throttling.RateQuota", "slow"), RateLimited)
    # an unknown code falls back to the status
    assert isinstance(error_for(503, "SomethingNew", "x"), ServerError)


def test_502_is_the_same_server_error_on_every_path() -> None:
    assert code_for_status(502) == "InternalError"
    assert type(error_for(502, None, None)) is ServerError
    assert type(error_for(None, code_for_status(502), None)) is ServerError


def test_every_row_is_consistent_with_its_code_and_status() -> None:
    for code, row in CODES.items():
        assert error_class(None, code) is row.error, code
    for status, row in STATUSES.items():
        assert error_class(status) is row.error, status
        assert error_class(None, code_for_status(status)) is row.error, status
        assert status_for_code(row.code) in STATUSES
    for close, row in CLOSE_CODES.items():
        assert error_class(close) is row.error, close
        assert row.status == close


def test_codes_map_back_to_http_statuses() -> None:
    assert status_for_code("Throttling.RateQuota") == 429
    assert status_for_code("InvalidApiKey") == 401
    assert status_for_code("Arrearage") == 403
    assert status_for_code("GatewayTimeout") == 504
    assert status_for_code("SomethingNew") is None
    assert status_for_code(None) is None
    assert code_for_status(418) == "InvalidParameter"
    assert code_for_status(599) == "InternalError"


def test_a_rate_limit_says_what_it_means_and_when_to_retry() -> None:
    err = error_for(429, "Throttling.RateQuota", "Requests rate limit exceeded", retry_after=30.0)
    assert isinstance(err, RateLimited) and err.retry_after == 30.0
    assert err.status == 429 and err.code == "Throttling.RateQuota"
    assert "quota" in err.problem and "Requests rate limit exceeded" in err.problem
    assert err.fix is not None and "wait 30 s" in err.fix and "fewer requests" in err.fix
    assert "check the request" not in str(err)
    unknown_wait = error_for(None, "Throttling", None)
    assert isinstance(unknown_wait, RateLimited) and unknown_wait.retry_after is None
    assert "wait a little" in str(unknown_wait)


def test_auth_errors_name_the_key_fix_for_the_cloud_and_the_token_fix_locally() -> None:
    err = error_for(401, "InvalidApiKey", "Invalid API-key provided.", request_id="r")
    assert "DASHSCOPE_API_KEY" in str(err)
    assert (err.status, err.code, err.request_id) == (401, "InvalidApiKey", "r")
    assert "connect()" in str(error_for(401, "InvalidApiKey", "x", local=True))
    assert "top up" in str(error_for(403, "Arrearage", "overdue"))


def test_messages_keep_where_the_servers_words_and_the_partial_answer() -> None:
    err = error_for(400, "InvalidParameter", "The audio is 12 MB", where="DashScope", partial="So")
    assert str(err).startswith("DashScope refused the request as invalid (400 InvalidParameter:")
    assert "The audio is 12 MB" in str(err) and " — " in str(err)
    assert err.partial == "So"
    assert error_for(None, None, None).code is None
    assert error_for(500, None, None).code == "InternalError"


def test_the_table_is_written_out_in_the_docs() -> None:
    doc = DOC.read_text(encoding="utf-8")
    for code in CODES:
        assert f"`{code}`" in doc, code
    for status in [*STATUSES, *CLOSE_CODES]:
        assert f"| {status} " in doc, status


def test_a_realtime_error_type_is_read_when_its_code_is_not_in_the_table() -> None:
    err = error_for(None, "invalid_value", "bad rate", error_type="invalid_request_error")
    assert type(err) is ProtocolError and err.code == "invalid_value"
    err = error_for(None, "engine_crashed", "boom", error_type="server_error")
    assert type(err) is ServerError and err.code == "engine_crashed"
    assert type(error_for(None, "Throttling", None, error_type="server_error")) is RateLimited


def test_a_realtime_refusal_built_from_a_row_reads_back_as_the_same_error() -> None:
    for status, row in STATUSES.items():
        err = error_for(None, row.code, "refused", error_type=row.error_type)
        assert type(err) is row.error, status
        assert row.close in (1008, 1011, 1013)
    assert STATUSES[429].error_type == "rate_limit_error" and STATUSES[429].close == 1013
    assert STATUSES[503].error_type == "server_error"
