"""Every client answers the same call the same way: ask, ask_async and stream, on the local engine."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from conftest import timeout

import nbtoolkit
from nbtoolkit import AudioModalitiesClient, Clip, Dialog, OmniRealtime, QwenAudio, Reply
from nbtoolkit.backends._base import Client
from nbtoolkit.errors import AudioError, ConfigError, ImageError, NbToolkitError
from nbtoolkit.ledger import Ledger

CLIENTS: dict[str, Callable[[Any], Client]] = {
    "qwen_audio": lambda s: QwenAudio(s.endpoints, ledger=Ledger()),
    "dialog": lambda s: Dialog(s.endpoints, ledger=Ledger()),
    "omni": lambda s: OmniRealtime(s.endpoints, ledger=Ledger()),
    "audio_modalities": lambda s: AudioModalitiesClient(endpoints=s.endpoints, ledger=Ledger()),
}


@pytest.fixture(scope="module")
def question(engine: Any) -> Clip:
    return nbtoolkit.spoken("what is two plus two")


def check(reply: Reply, *, heard: bool) -> None:
    """The fields every answer has, whatever the backend."""
    assert isinstance(reply, Reply)
    assert "four" in nbtoolkit.words(reply.text), reply.text
    assert reply.audio is None or (isinstance(reply.audio, Clip) and reply.audio.duration > 0.3)
    assert reply.request_id
    assert reply.status == "completed" and reply.local
    assert reply.usage.local and reply.usage.cost == 0.0
    assert reply.timeline is not None
    if heard:
        assert "plus" in nbtoolkit.words(reply.heard), reply.heard


@pytest.mark.parametrize("name", list(CLIENTS))
def test_ask_and_ask_async_take_the_same_arguments_and_answer_alike(
    server: Any, question: Clip, name: str
) -> None:
    with CLIENTS[name](server) as client:
        sync = client.ask(question)

    async def main() -> Reply:
        async with CLIENTS[name](server) as client:
            return await asyncio.wait_for(client.ask_async(question), timeout(60))

    awaited = asyncio.run(main())
    spoken = name in ("dialog", "omni")
    for reply in (sync, awaited):
        check(reply, heard=spoken)
        assert (reply.audio is not None) == (name != "qwen_audio")
    assert sync.text == awaited.text


@pytest.mark.parametrize("name", list(CLIENTS))
def test_ask_works_inside_a_running_event_loop_as_in_a_jupyter_cell(
    server: Any, question: Clip, name: str
) -> None:
    async def cell() -> Reply:
        # a cell's code runs while the kernel's loop runs: no await, no asyncio.run
        with CLIENTS[name](server) as client:
            return client.ask(question)

    check(asyncio.run(cell()), heard=name in ("dialog", "omni"))

    async def streaming_cell() -> list[Any]:
        with CLIENTS[name](server) as client:
            return list(client.stream(question))  # `for`, blocking, in a running loop

    events = asyncio.run(streaming_cell())
    assert events[-1].type == "done"
    check(events[-1].reply, heard=name in ("dialog", "omni"))


@pytest.mark.parametrize("name", list(CLIENTS))
def test_stream_yields_typed_events_ending_with_the_reply_sync_and_async(
    server: Any, question: Clip, name: str
) -> None:
    with CLIENTS[name](server) as client:
        events = list(client.stream(question))
    *pieces, done = events
    assert done.type == "done"
    check(done.reply, heard=name in ("dialog", "omni"))
    text = "".join(e.delta for e in pieces if e.type == "text.delta")
    assert nbtoolkit.words(text) == nbtoolkit.words(done.reply.text)
    if name != "qwen_audio":
        assert any(e.type == "audio.delta" for e in pieces)

    async def main() -> list[Any]:
        async with CLIENTS[name](server) as client:
            return [e async for e in client.stream(question)]

    again = asyncio.run(main())
    assert again[-1].type == "done" and again[-1].reply.text == done.reply.text


def test_a_stream_can_be_read_only_once(server: Any) -> None:
    with QwenAudio(server.endpoints, ledger=Ledger()) as qa:
        stream = qa.stream(text="what is two plus two")
        list(stream)
        assert stream.reply is not None and "four" in nbtoolkit.words(stream.reply.text)
        with pytest.raises(ConfigError, match="already read"):
            list(stream)


# ------------------------------------------------------------------ wrong arguments, one table
WRONG: list[tuple[str, dict[str, Any], type[NbToolkitError], str]] = [
    ("audio_is_a_number", {"audio": 12345}, AudioError, "audio= got int"),
    ("audio_is_a_dict", {"audio": {"a": 1}}, AudioError, "audio= got dict"),
    ("text_is_a_number", {"text": 123}, ConfigError, "text= must be a string, not int"),
    ("text_is_a_list", {"text": ["a"]}, ConfigError, "text= must be a string, not list"),
    ("image_is_a_number", {"text": "hi", "images": [5]}, ImageError, "images= got int"),
    ("nothing_to_ask", {}, AudioError, "Nothing to ask"),
    ("blank_text", {"text": "   "}, AudioError, "Nothing to ask"),
    ("unknown_option", {"text": "hi", "speed": 2}, ConfigError, "unknown option"),
]


@pytest.mark.parametrize("name", list(CLIENTS))
@pytest.mark.parametrize(("case", "kwargs", "error", "says"), WRONG, ids=[w[0] for w in WRONG])
def test_wrong_arguments_raise_a_toolkit_error_naming_what_was_given_before_any_io(
    server: Any,
    name: str,
    case: str,
    kwargs: dict[str, Any],
    error: type[NbToolkitError],
    says: str,
) -> None:
    client = CLIENTS[name](server)
    for call in (
        lambda: client.ask(**kwargs),
        lambda: asyncio.run(client.ask_async(**kwargs)),
        lambda: client.stream(**kwargs),
    ):
        with pytest.raises(error, match=says) as info:
            call()
        assert info.value.fix  # the message names what to do
    assert client.ledger.entries == []  # nothing was sent


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda s: QwenAudio(s.endpoints, timeout="x"), "timeout= must be a number"),
        (lambda s: QwenAudio(s.endpoints, timeout=-1), "timeout= must be a number"),
        (lambda s: QwenAudio(s.endpoints, model=3), "model= must be a model name"),
        (lambda s: QwenAudio(endpoints="http://x"), "endpoints= must be Endpoints"),
        (lambda s: Dialog(s.endpoints, mode="walkie-talkie"), "Unknown dialog mode"),
        (lambda s: OmniRealtime(s.endpoints, voice="Nobody"), "Unknown voice"),
        (lambda s: AudioModalitiesClient("ftp://x", api_key="sk-" + "0" * 32), "not an HTTP URL"),
    ],
)
def test_wrong_constructor_arguments_raise_config_errors(server: Any, make: Any, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        make(server)


def test_ask_with_a_backend_that_cannot_take_it_names_the_backend_that_can(server: Any) -> None:
    jpeg = b"\xff\xd8\xff" + bytes(100)
    with pytest.raises(ImageError, match="Dialog"):
        QwenAudio(server.endpoints, ledger=Ledger()).ask(text="what is this", images=[jpeg])
    with pytest.raises(ConfigError, match="needs audio"):
        OmniRealtime(server.endpoints, ledger=Ledger()).ask(text="hello")


@pytest.mark.parametrize("name", ["dialog", "omni"])
def test_a_silent_question_is_refused_at_once_saying_no_speech_was_heard(
    server: Any, name: str
) -> None:
    with (
        CLIENTS[name](server) as client,
        pytest.raises(AudioError, match=r"No speech was heard in the 2\.0 s sent"),
    ):
        client.ask(Clip.silence(2.0))


@pytest.mark.parametrize("name", ["dialog", "omni"])
def test_a_question_over_the_length_limit_is_refused_before_sending(server: Any, name: str) -> None:
    with (
        CLIENTS[name](server) as client,
        pytest.raises(AudioError, match=r"ask\(\) sends at most 60 s"),
    ):
        client.ask(Clip.silence(360.0))


@pytest.mark.parametrize("make", [QwenAudio, Dialog, OmniRealtime])
def test_a_key_given_to_a_client_picks_the_cloud_and_is_never_shown(
    make: Callable[..., Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DASHSCOPE_HTTP_BASE_URL", raising=False)
    key = "sk-" + "0123456789abcdef" * 2
    client = make(api_key=key, ledger=Ledger())  # nothing is sent until asked
    assert not client.local and client.endpoints.region == "cn"
    assert key not in repr(client) and key not in repr(client.endpoints)
    with pytest.raises(ConfigError, match="Both endpoints= and api_key="):
        make(client.endpoints, api_key=key)
