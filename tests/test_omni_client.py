"""OmniRealtime, our asyncio client, against the local server over real sockets."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Coroutine
from typing import Any, TypeVar

import numpy as np
import pytest
from conftest import timeout

from nbtoolkit.audio.clip import Clip
from nbtoolkit.backends.omni import OmniRealtime, ReconnectPolicy
from nbtoolkit.config import Secret, local_endpoints
from nbtoolkit.errors import AuthError, ConnectionLost, ImageError, ProtocolError, RateLimited
from nbtoolkit.ledger import Ledger
from nbtoolkit.local import Faults
from nbtoolkit.protocols.realtime import AudioDelta, ResponseDone, UnknownEvent
from nbtoolkit.protocols.realtime_turn import RealtimeTurnCollector
from nbtoolkit.results import Reply
from nbtoolkit.retry import RetryPolicy

T = TypeVar("T")
QUICK_RECONNECT = ReconnectPolicy(retry=RetryPolicy(max_retries=3, initial=0.05, maximum=0.2))
# Frames of a manual turn: session.updated, committed, user item, transcription, response.created,
# output_item.added, assistant item, content_part.added; the answer's deltas follow.
HEADER_FRAMES = 8


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout(90)))


@pytest.fixture(scope="module")
def question(engine: Any) -> Clip:
    return Clip.from_array(engine.synthesize("one plus one equals what", rate=16000), 16000)


def heard_in(engine: Any, clip: Clip) -> list[str]:
    """Words the engine's open-vocabulary ASR hears in ``clip`` (the default "auto" search prefers
    its grammar of questions, which drops an answer's last word)."""
    text: str = engine.recognize(clip.resample(16000).samples, 16000, mode="auto").text
    return text.split()


def jpeg(color: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


def check_turn(engine: Any, turn: Reply, *, listen: bool = True) -> None:
    """The turn heard the question and answered "two" (``listen``: also in its speech)."""
    assert turn.status == "completed"
    assert "plus" in turn.heard.split()
    assert "two" in turn.text.lower()
    assert turn.audio is not None and turn.audio.rate == 24000
    if listen:
        assert "two" in heard_in(engine, turn.audio)
    assert turn.usage.model == "qwen-omni-turbo-realtime" and turn.usage.local
    assert turn.usage.input_audio > 0 and turn.usage.output_audio > 0
    assert turn.request_id and turn.request_id.startswith("resp_")
    assert turn.timeline.first("speech_stopped") is not None
    assert turn.timeline.between("speech_stopped", "response.audio.delta") is not None


# ------------------------------------------------------------------ ask
@pytest.mark.parametrize("mode", [None, "server_vad"])
def test_ask_hears_question_and_answers_in_words_and_speech(
    server: Any, engine: Any, question: Clip, mode: str | None
) -> None:
    ledger = Ledger()

    async def main() -> Reply:
        async with OmniRealtime(server.endpoints, turn_detection=mode, ledger=ledger) as rt:  # type: ignore[arg-type]
            assert rt.session_id and rt.session_id.startswith("sess_")
            return await rt.ask_async(question)

    turn = run(main())
    check_turn(engine, turn)
    assert [(e.backend, e.kind, e.request_id) for e in ledger.entries] == [
        ("omni", "turn", turn.request_id)
    ]
    assert ledger.entries[0].usage == turn.usage
    lane = "vad" if mode else "client"
    assert turn.timeline.first("speech_stopped").lane == lane  # type: ignore[union-attr]


def test_ask_resamples_clip_at_other_rates(server: Any, engine: Any, question: Clip) -> None:
    async def main() -> Reply:
        async with OmniRealtime(server.endpoints, turn_detection=None, ledger=Ledger()) as rt:
            return await rt.ask_async(question.resample(44100))

    check_turn(engine, run(main()), listen=False)


def test_ask_with_image_counts_image_tokens(server: Any, engine: Any) -> None:
    speech = Clip.from_array(engine.synthesize("describe this picture", rate=16000), 16000)

    async def main() -> Reply:
        async with OmniRealtime(server.endpoints, turn_detection=None, ledger=Ledger()) as rt:
            return await rt.ask_async(speech, images=[jpeg((220, 20, 20))])

    turn = run(main())
    assert turn.status == "completed"
    assert turn.usage.input_image > 0
    assert "red" in turn.text.lower()


def test_send_image_refuses_bad_images_clearly(server: Any) -> None:
    rt = OmniRealtime(server.endpoints, ledger=Ledger())

    async def main() -> None:
        with pytest.raises(ImageError, match="JPEG"):
            await rt.send_image(b"\x89PNG\r\n\x1a\n")
        with pytest.raises(ImageError, match="500 KB"):
            await rt.send_image(b"\xff\xd8\xff" + bytes(600 * 1024))
        with pytest.raises(ImageError, match="audio"):
            await rt.send_image(jpeg((0, 0, 255)))

    run(main())


def test_text_only_session_answers_in_text(server: Any, question: Clip) -> None:
    async def main() -> Reply:
        async with OmniRealtime(
            server.endpoints, turn_detection=None, modalities=("text",), ledger=Ledger()
        ) as rt:
            return await rt.ask_async(question)

    turn = run(main())
    assert "two" in turn.text.lower()
    assert turn.audio is None and turn.usage.output_audio == 0


# ------------------------------------------------------------------ barge-in and cancel
def test_barge_in_cancels_response_and_clears_player(faulty_server: Any, question: Clip) -> None:
    faulty_server.faults = Faults(delay=0.05)  # a slow answer, so the user can talk over it
    flushed: list[str] = []

    async def main() -> list[Any]:
        async with OmniRealtime(
            faulty_server.endpoints, on_flush=lambda: flushed.append("flush"), ledger=Ledger()
        ) as rt:
            await rt.send_audio(question + Clip.silence(1.5))
            events: list[Any] = []
            async for event in rt:
                events.append(event)
                if isinstance(event, AudioDelta):
                    first = event.response_id
                    break
            await rt.send_audio(question)  # the user speaks over the answer
            async for event in rt:
                events.append(event)
                if isinstance(event, ResponseDone) and event.response_id == first:
                    break
            return events

    events = run(main())
    assert events[-1].status == "cancelled"
    assert flushed == ["flush"]
    kinds = [e.type for e in events]
    answering = kinds.index("response.audio.delta")
    assert "input_audio_buffer.speech_started" in kinds[answering:]


def test_cancel_stops_the_active_response(faulty_server: Any, question: Clip) -> None:
    faulty_server.faults = Faults(delay=0.05)

    async def main() -> tuple[bool, ResponseDone, bool]:
        async with OmniRealtime(
            faulty_server.endpoints, turn_detection=None, ledger=Ledger()
        ) as rt:
            await rt.send_audio(question)
            await rt.commit()
            await rt.create_response()
            async for event in rt:
                if isinstance(event, AudioDelta):
                    break
            cancelled = await rt.cancel()
            async for event in rt:
                if isinstance(event, ResponseDone):
                    done = event
                    break
            return cancelled, done, await rt.cancel()

    cancelled, done, again = run(main())
    assert cancelled and done.status == "cancelled" and not again


def test_barge_in_cancel_that_crosses_the_cancelled_response_spares_the_next_one(
    faulty_server: Any, engine: Any, question: Clip
) -> None:
    """The interrupting utterance goes out faster than real time, so the server has cancelled
    the first answer itself and already begun the next one when the client's cancel (sent on
    speech_started) arrives: that cancel names the first response and must not stop the second."""
    faulty_server.faults = Faults(delay=0.03)  # the first answer streams slowly
    flushed: list[str] = []

    async def main() -> tuple[OmniRealtime, list[ResponseDone], list[Any]]:
        async with OmniRealtime(
            faulty_server.endpoints, on_flush=lambda: flushed.append("flush"), ledger=Ledger()
        ) as rt:
            await rt.send_audio(question + Clip.silence(1.5))
            async for event in rt:
                if isinstance(event, AudioDelta):
                    break
            await rt.send_audio(question + Clip.silence(1.5))  # all of it at once
            done: list[ResponseDone] = []
            turn = RealtimeTurnCollector()
            async for event in rt:
                if isinstance(event, ResponseDone):
                    done.append(event)
                    if len(done) == 1:
                        continue
                turn.feed(event)
                if turn.done:
                    break
            return rt, done, [rt.make_reply(turn)]

    rt, done, (second,) = run(main())
    assert [d.status for d in done] == ["cancelled", "completed"]
    assert second.status == "completed" and "two" in second.text.lower()
    assert "two" in heard_in(engine, second.audio)
    assert flushed == ["flush"]
    cancels = [e for e in rt.timeline if e.name == "response.cancel"]
    ignored = [e for e in rt.timeline if e.name == "error.ignored"]
    assert len(cancels) == 1 and len(ignored) == 1  # the server refused the stale cancel


# ------------------------------------------------------------------ faults
@pytest.mark.parametrize("close_code", [None, 1001])
def test_drop_mid_answer_keeps_partial_text_and_audio(
    faulty_server: Any, question: Clip, close_code: int | None
) -> None:
    faulty_server.faults = Faults(drop_after=HEADER_FRAMES + 4, close_code=close_code)

    async def main() -> None:
        async with OmniRealtime(
            faulty_server.endpoints, turn_detection=None, ledger=Ledger()
        ) as rt:
            await rt.ask_async(question)

    with pytest.raises(ConnectionLost) as info:
        run(main())
    assert str(close_code or 1006) in str(info.value)
    partial = info.value.partial
    assert isinstance(partial, Reply) and partial.status == "failed"
    assert partial.text.strip() and "two" not in partial.text.lower()
    assert partial.audio is not None and partial.audio.duration > 0
    assert "plus" in partial.heard.split()


def test_close_1011_reconnects_reports_lost_audio_and_never_recommits(
    faulty_server: Any, engine: Any, question: Clip
) -> None:
    faulty_server.faults = Faults(drop_after=HEADER_FRAMES + 4, close_code=1011)

    async def main() -> tuple[OmniRealtime, ConnectionLost, str, Reply]:
        async with OmniRealtime(
            faulty_server.endpoints,
            turn_detection=None,
            reconnect=QUICK_RECONNECT,
            ledger=Ledger(),
        ) as rt:
            first_session = rt.session_id or ""
            with pytest.raises(ConnectionLost) as info:
                await rt.ask_async(question)
            faulty_server.faults = Faults()
            again = await rt.ask_async(question)
            return rt, info.value, first_session, again

    rt, lost, first_session, again = run(main())
    assert lost.partial.text  # what arrived before the drop is kept
    [event] = rt.reconnects
    assert event.close_code == 1011
    assert event.lost_response_id == lost.partial.request_id
    assert event.lost_audio_ms == pytest.approx(question.duration * 1000, abs=1)
    assert event.session_id and event.session_id != first_session
    # between the reconnection and the next ask the client sent nothing but its settings
    names = [(e.lane, e.name) for e in rt.timeline]
    reconnected = names.index(("state", "reconnected"))
    next_audio = names.index(("audio-in", "input_audio_buffer.append"), reconnected)
    between = names[reconnected:next_audio]
    assert ("client", "input_audio_buffer.commit") not in between
    assert ("client", "response.create") not in between
    check_turn(engine, again, listen=False)


def test_malformed_frame_raises_protocol_error(faulty_server: Any, question: Clip) -> None:
    faulty_server.faults = Faults(malformed_after=HEADER_FRAMES + 1)

    async def main() -> None:
        async with OmniRealtime(
            faulty_server.endpoints, turn_detection=None, ledger=Ledger()
        ) as rt:
            await rt.ask_async(question)

    with pytest.raises(ProtocolError, match="not JSON") as info:
        run(main())
    assert isinstance(info.value.partial, Reply)


def test_malformed_frame_is_skipped_when_asked(faulty_server: Any, question: Clip) -> None:
    faulty_server.faults = Faults(malformed_after=HEADER_FRAMES + 1)

    async def main() -> Reply:
        async with OmniRealtime(
            faulty_server.endpoints, turn_detection=None, on_malformed="skip", ledger=Ledger()
        ) as rt:
            return await rt.ask_async(question)

    turn = run(main())
    assert "two" in turn.text.lower()
    assert turn.timeline.first("malformed") is not None


def test_unknown_event_type_is_yielded_as_unknown_event(faulty_server: Any, question: Clip) -> None:
    faulty_server.faults = Faults(unknown_event_after=HEADER_FRAMES)

    async def main() -> list[Any]:
        async with OmniRealtime(
            faulty_server.endpoints, turn_detection=None, ledger=Ledger()
        ) as rt:
            await rt.send_audio(question)
            await rt.commit()
            await rt.create_response()
            events = []
            async for event in rt:
                events.append(event)
                if isinstance(event, ResponseDone):
                    return events
            raise AssertionError("the stream ended before response.done")

    events = run(main())
    unknown = [e for e in events if isinstance(e, UnknownEvent)]
    assert [e.event_type for e in unknown] == ["response.nbtoolkit_fault"]
    assert events[-1].status == "completed"


def test_slow_server_still_completes_the_turn(
    faulty_server: Any, engine: Any, question: Clip
) -> None:
    faulty_server.faults = Faults(delay=0.02)

    async def main() -> Reply:
        async with OmniRealtime(
            faulty_server.endpoints, turn_detection=None, ledger=Ledger()
        ) as rt:
            return await rt.ask_async(question)

    check_turn(engine, run(main()), listen=False)


def test_server_that_never_answers_times_out_with_connection_lost(
    faulty_server: Any, question: Clip
) -> None:
    faulty_server.faults = Faults(never_answer=True)

    async def main() -> None:
        async with OmniRealtime(
            faulty_server.endpoints,
            turn_detection=None,
            timeout=0.5,
            close_timeout=0.5,
            ledger=Ledger(),
        ) as rt:
            await rt.ask_async(question)

    with pytest.raises(ConnectionLost, match="No complete answer") as info:
        run(main())
    assert info.value.partial.text == ""


def test_oversized_frame_is_reported_as_connection_lost(faulty_server: Any, question: Clip) -> None:
    faulty_server.faults = Faults(oversized_after=HEADER_FRAMES)

    async def main() -> None:
        async with OmniRealtime(
            faulty_server.endpoints, turn_detection=None, ledger=Ledger()
        ) as rt:
            await rt.ask_async(question)

    with pytest.raises(ConnectionLost, match="1009"):
        run(main())


def test_wrong_token_raises_auth_error_naming_the_key(server: Any) -> None:
    endpoints = local_endpoints(server.base_url, Secret("definitely-wrong"))

    async def main() -> None:
        async with OmniRealtime(endpoints, ledger=Ledger()):
            pass

    with pytest.raises(AuthError, match="DASHSCOPE_API_KEY") as info:
        run(main())
    assert "definitely-wrong" not in str(info.value)


def test_refused_session_raises_rate_limited_after_the_retries(faulty_server: Any) -> None:
    faulty_server.faults = Faults(status=429, fail_times=3)  # the default policy tries 3 times

    async def main() -> None:
        async with OmniRealtime(faulty_server.endpoints, ledger=Ledger()):
            pass

    with pytest.raises(RateLimited):
        run(main())


def test_pcm_with_odd_byte_count_is_refused(server: Any) -> None:
    from nbtoolkit.errors import AudioError

    rt = OmniRealtime(server.endpoints, ledger=Ledger())
    with pytest.raises(AudioError, match="even"):
        run(rt.send_audio(np.zeros(3, dtype=np.uint8).tobytes()))
