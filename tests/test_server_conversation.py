"""The unmodified dashscope SDK (``MultiModalConversation.call``) against the local server, pointed at
it by base URL only, over real sockets on 127.0.0.1 with the real offline engine."""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from conftest import timeout

from nbtoolkit.audio.clip import Clip

MODEL = "qwen-audio-turbo-latest"
S001_URL = "https://dashscope.oss-cn-beijing.aliyuncs.com/audios/welcome.mp3"


@pytest.fixture
def sdk(server: Any) -> Iterator[Any]:
    """``dashscope`` aimed at the local server through its module globals, restored afterwards
    (``DASHSCOPE_HTTP_BASE_URL`` is read only at import, so the globals are what to set)."""
    import dashscope

    saved = dashscope.base_http_api_url, dashscope.api_key
    dashscope.base_http_api_url = server.endpoints.http_base
    dashscope.api_key = server.token.reveal()
    try:
        yield dashscope
    finally:
        dashscope.base_http_api_url, dashscope.api_key = saved


@pytest.fixture(scope="module")
def question(engine: Any) -> Clip:
    return Clip.from_array(engine.synthesize("one plus one equals what", rate=16000), 16000)


@pytest.fixture
def question_wav(question: Clip, tmp_path: Path) -> str:
    return "file://" + str(question.save(tmp_path / "question.wav"))


def user(*content: dict[str, str]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": list(content)}]


def text_of(response: Any) -> str:
    return "".join(item["text"] for item in response.output.choices[0].message.content)


def test_sdk_call_with_local_wav_answers_the_spoken_question(sdk: Any, question_wav: str) -> None:
    response = sdk.MultiModalConversation.call(model=MODEL, messages=user({"audio": question_wav}))
    assert response.status_code == 200, response.message
    assert "two" in text_of(response).lower()
    assert response.output.choices[0].finish_reason == "stop"
    assert response.usage.audio_tokens > 0 and response.usage.output_tokens > 0
    assert response.request_id


def test_sdk_incremental_stream_concatenates_to_the_plain_answer(
    sdk: Any, question_wav: str
) -> None:
    messages = user({"audio": question_wav})
    plain = text_of(sdk.MultiModalConversation.call(model=MODEL, messages=messages))
    chunks = list(
        sdk.MultiModalConversation.call(
            model=MODEL, messages=messages, stream=True, incremental_output=True
        )
    )
    assert all(c.status_code == 200 for c in chunks)
    assert len(chunks) > 2
    assert "".join(text_of(c) for c in chunks) == plain
    assert [c.output.choices[0].finish_reason for c in chunks][-1] == "stop"
    assert all(c.output.choices[0].finish_reason == "null" for c in chunks[:-1])
    assert all(c.usage.audio_tokens > 0 for c in chunks)  # usage on every chunk


def test_sdk_stream_without_incremental_output_gets_cumulative_text(
    sdk: Any, question_wav: str
) -> None:
    messages = user({"audio": question_wav})
    # no incremental_output: the server itself sends the text so far in every chunk
    wire = [
        text_of(c)
        for c in sdk.MultiModalConversation.call(model=MODEL, messages=messages, stream=True)
    ]
    assert all(b.startswith(a) for a, b in itertools.pairwise(wire))
    assert "two" in wire[-1].lower()
    # incremental_output=False: the SDK asks for deltas and merges them into cumulative chunks
    merged = [
        text_of(c)
        for c in sdk.MultiModalConversation.call(
            model=MODEL, messages=messages, stream=True, incremental_output=False
        )
    ]
    assert merged[-1] == wire[-1]


def test_sdk_multi_turn_sends_the_assistant_turn_back(sdk: Any, question_wav: str) -> None:
    messages = user({"audio": question_wav}, {"text": "Answer the question in the audio."})
    first = sdk.MultiModalConversation.call(model=MODEL, messages=messages)
    assert first.status_code == 200, first.message
    messages.append(
        {
            "role": first.output.choices[0].message.role,
            "content": first.output.choices[0].message.content,
        }
    )
    messages.append({"role": "user", "content": [{"text": "what is two times three"}]})
    second = sdk.MultiModalConversation.call(model=MODEL, messages=messages)
    assert second.status_code == 200, second.message
    assert "six" in text_of(second).lower()


def test_sdk_data_uri_audio_is_answered_without_an_upload(sdk: Any, question: Clip) -> None:
    uri = "data:audio/wav;base64," + base64.b64encode(question.to_wav()).decode()
    response = sdk.MultiModalConversation.call(model=MODEL, messages=user({"audio": uri}))
    assert response.status_code == 200, response.message
    assert "two" in text_of(response).lower()


def test_s001_example_url_gets_a_clear_400_saying_to_pass_a_local_file(sdk: Any) -> None:
    response = sdk.MultiModalConversation.call(
        model=MODEL, messages=user({"audio": S001_URL}, {"text": "这段音频在说什么?"})
    )
    assert response.status_code == 400
    assert response.code == "InvalidParameter"
    assert S001_URL in response.message
    assert "offline" in response.message and "file://" in response.message


def test_wrong_key_is_refused_with_401(sdk: Any) -> None:
    response = sdk.MultiModalConversation.call(
        model=MODEL, messages=user({"text": "hello"}), api_key="sk-not-the-token"
    )
    assert response.status_code == 401
    assert response.code == "InvalidApiKey"
    assert "sk-not-the-token" not in response.message


def test_result_format_text_puts_the_answer_in_output_text(sdk: Any, question_wav: str) -> None:
    response = sdk.MultiModalConversation.call(
        model=MODEL, messages=user({"audio": question_wav}), result_format="text"
    )
    assert response.status_code == 200, response.message
    assert response.output.choices is None
    assert "two" in response.output.text.lower()
    assert response.output.finish_reason == "stop"


def test_audio_over_30_seconds_is_cut_to_its_first_30(sdk: Any, question: Clip) -> None:
    from nbtoolkit.protocols.tokens import audio_tokens

    long = question + Clip.silence(40.0 - question.duration, question.rate)
    uri = "data:audio/wav;base64," + base64.b64encode(long.to_wav()).decode()
    response = sdk.MultiModalConversation.call(model=MODEL, messages=user({"audio": uri}))
    assert response.status_code == 200, response.message
    assert response.usage.audio_tokens == audio_tokens(30.0)
    assert "two" in text_of(response).lower()


def test_audio_file_over_10_mb_is_refused_with_400(sdk: Any) -> None:
    big = Clip(np.zeros(5_400_000, dtype=np.int16), 16000).to_wav()  # 10.8 MB
    uri = "data:audio/wav;base64," + base64.b64encode(big).decode()
    response = sdk.MultiModalConversation.call(model=MODEL, messages=user({"audio": uri}))
    assert response.status_code == 400
    assert "10 MB" in response.message


def test_upload_policy_needs_the_token_and_points_back_at_this_server(server: Any) -> None:
    url = f"{server.endpoints.http_base}/uploads"
    params = {"action": "getPolicy", "model": MODEL}
    assert requests.get(url, params=params, timeout=timeout(10)).status_code == 401
    reply = requests.get(
        url,
        params=params,
        headers={"Authorization": f"Bearer {server.token.reveal()}"},
        timeout=timeout(10),
    )
    assert reply.status_code == 200
    policy = reply.json()["data"]
    assert policy["upload_host"] == f"{server.base_url}/oss"
    assert server.token.reveal() not in reply.text


def test_upload_with_a_forged_signature_is_refused(server: Any) -> None:
    policy = requests.get(
        f"{server.endpoints.http_base}/uploads",
        params={"action": "getPolicy", "model": MODEL},
        headers={"Authorization": f"Bearer {server.token.reveal()}"},
        timeout=timeout(10),
    ).json()["data"]
    form = {
        "OSSAccessKeyId": policy["oss_access_key_id"],
        "Signature": base64.b64encode(b"forged").decode(),
        "policy": policy["policy"],
        "key": policy["upload_dir"] + "/x.wav",
        "success_action_status": "200",
    }
    reply = requests.post(
        policy["upload_host"], data=form, files={"file": ("x.wav", b"RIFF")}, timeout=timeout(10)
    )
    assert reply.status_code == 403
    assert policy["upload_dir"] + "/x.wav" not in server.app.state.uploads


def test_rate_limit_fault_reaches_the_sdk_as_429_with_retry_after(
    sdk: Any, faulty_server: Any
) -> None:
    from nbtoolkit.local import Faults

    faulty_server.faults = Faults(status=429, retry_after=7)
    refused = sdk.MultiModalConversation.call(model=MODEL, messages=user({"text": "hello"}))
    assert (refused.status_code, refused.code) == (429, "Throttling")
    assert {k.lower(): v for k, v in refused.headers.items()}["retry-after"] == "7"
    answered = sdk.MultiModalConversation.call(model=MODEL, messages=user({"text": "hello"}))
    assert answered.status_code == 200  # fail_times=1: only the first request was refused


class _BrokenEngine:
    def respond(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("engine exploded")


def test_engine_failure_is_a_500_before_a_stream_and_an_error_event_inside_one() -> None:
    import dashscope

    from nbtoolkit.local import start

    with start(engine=_BrokenEngine()) as broken:
        common = {
            "model": MODEL,
            "messages": user({"text": "hello"}),
            "api_key": broken.token.reveal(),
            "base_address": broken.endpoints.http_base,
        }
        plain = dashscope.MultiModalConversation.call(**common)
        assert (plain.status_code, plain.code) == (500, "InternalError")
        [chunk] = list(dashscope.MultiModalConversation.call(**common, stream=True))
        assert (chunk.status_code, chunk.code) == (500, "InternalError")
        assert "try again" in chunk.message
