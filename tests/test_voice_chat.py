"""VoiceChat headless (simulated microphone, no browser) against the local server over real sockets."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import numpy as np
import pytest
from conftest import timeout

from nbtoolkit import events
from nbtoolkit._voice_chat_bridges import bridge_for
from nbtoolkit.audio.clip import Clip
from nbtoolkit.backends.dialog import Dialog
from nbtoolkit.backends.omni import OmniRealtime
from nbtoolkit.backends.qwen_audio import QwenAudio
from nbtoolkit.errors import AudioError, ConfigError, ConnectionLost
from nbtoolkit.ledger import Ledger
from nbtoolkit.local import Faults
from nbtoolkit.protocols.realtime import parse_server_event
from nbtoolkit.results import Reply
from nbtoolkit.voice_chat import LISTENING, RESPONDING, STOPPED, VoiceChat
from nbtoolkit.voice_chat_events import (
    THINKING,
    Audio,
    ChatEvent,
    Failed,
    Flush,
    Heard,
    Mark,
    Said,
    State,
    TurnDone,
)

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout(90)))


@pytest.fixture(scope="module")
def question(engine: Any) -> Clip:
    """ "one plus one equals what", spoken by the engine, then enough silence for server VAD."""
    speech = Clip.from_array(engine.synthesize("one plus one equals what", rate=16000), 16000)
    return Clip.silence(0.3, 16000) + speech + Clip.silence(1.5, 16000)


def heard_in(engine: Any, clip: Clip) -> list[str]:
    """Words the engine's open-vocabulary ASR hears in ``clip``."""
    text: str = engine.recognize(clip.resample(16000).samples, 16000, mode="open").text
    return text.split()


def converse(chat: VoiceChat, script: Callable[[VoiceChat], Awaitable[object]]) -> VoiceChat:
    """Start ``chat``, run ``script(chat)``, then stop the chat and wait (bounded) until it has
    closed its backend, even when the script fails; all on one fresh, bounded event loop."""

    async def main() -> VoiceChat:
        chat.start()
        try:
            await script(chat)
        finally:
            task = chat.stop()
            if task is not None:
                await asyncio.wait([task], timeout=timeout(15))
        return chat

    return run(main())


def test_omni_server_vad_turn_answers_two_in_text_and_in_the_player(
    server: Any, engine: Any, question: Clip
) -> None:
    ledger = Ledger()

    async def script(chat: VoiceChat) -> None:
        await chat.wait_turns(1, timeout=timeout(30))
        await chat.wait_state(LISTENING, timeout=timeout(10))

    rt = OmniRealtime(server.endpoints, ledger=ledger)
    chat = converse(VoiceChat(rt, source=question, realtime=False), script)
    (turn,) = chat.turns
    assert turn.status == "completed"
    assert "plus" in turn.heard.split()
    assert "two" in turn.text.lower()
    played = chat.player.played_clip
    assert played is not None and "two" in heard_in(engine, played)
    assert "two" in chat.transcript.lower() and "you: " in chat.transcript
    assert chat.state == STOPPED
    # the ledger recorded the turn and the usage line shows it
    (entry,) = ledger.entries
    assert entry.usage.output_audio > 0 and entry.offline
    assert chat.usage.calls == 1 and chat.usage.usage.output_audio == entry.usage.output_audio
    assert "offline (no charge)" in chat.children[0].children[1].value  # the usage line
    names = [e.name for e in chat.timeline]
    assert names.index("speech_started") < names.index("first_audio") < names.index("response.done")


def test_barge_in_cancels_response_and_clears_player(
    faulty_server: Any, engine: Any, question: Clip
) -> None:
    faulty_server.faults = Faults(
        delay=0.03
    )  # the answer streams over a second or so, like the cloud
    flushes: list[str] = []

    async def script(chat: VoiceChat) -> None:
        await chat.wait_state(RESPONDING, timeout=timeout(30))
        assert chat.player.fed_ms > 0
        # the user talks over the answer, at the pace of speech: sent faster, the whole
        # utterance could be answered before the barge-in cancel reaches the server
        chat.say(question, realtime=True)
        await chat.wait_turns(2, timeout=timeout(40))

    rt = OmniRealtime(
        faulty_server.endpoints, ledger=Ledger(), on_flush=lambda: flushes.append("user hook")
    )
    chat = converse(VoiceChat(rt, source=question, realtime=False), script)
    first, second = chat.turns
    assert first.status == "cancelled"
    assert second.status == "completed" and "two" in second.text.lower()
    # the client cancelled, flushed the player, and still called the user's own hook
    client = [e.name for e in rt.timeline if e.lane == "client"]
    assert "response.cancel" in client
    flush_events = [e for e in chat.timeline if e.name == "player.flush"]
    assert [e.detail["reason"] for e in flush_events] == ["barge_in"]
    assert any(e.name == "barge_in" for e in chat.timeline)
    assert flushes == ["user hook"]
    # what the player holds now is only the second answer
    played = chat.player.played_clip
    assert played is not None and "two" in heard_in(engine, played)
    assert first.timeline.first("player.flush") is not None


def test_omni_push_to_talk_commits_when_the_take_ends(server: Any, question: Clip) -> None:
    rt = OmniRealtime(server.endpoints, turn_detection=None, ledger=Ledger())
    chat = converse(
        VoiceChat(rt, source=question, realtime=False),
        lambda chat: chat.wait_turns(1, timeout=timeout(30)),
    )
    (turn,) = chat.turns
    assert turn.status == "completed" and "two" in turn.text.lower()
    assert chat.timeline.first("commit") is not None


@pytest.mark.parametrize("mode", ["push2talk", "tap2talk", "duplex"])
def test_dialog_turn_answers_two_and_plays_it(
    server: Any, engine: Any, question: Clip, mode: str
) -> None:
    ledger = Ledger()
    states: list[str] = []
    dialog = Dialog(server.endpoints, mode=mode, ledger=ledger, on_state=states.append)
    chat = VoiceChat(dialog, source=question, realtime=False)
    chat.observe(lambda change: states.append(change["new"]), names="state")
    converse(chat, lambda chat: chat.wait_turns(1, timeout=timeout(40)))
    (turn,) = chat.turns
    assert turn.status == "completed"
    assert "two" in turn.text.lower()
    played = chat.player.played_clip
    assert played is not None and "two" in heard_in(engine, played)
    # the SDK's state callbacks reached both the user's hook and the badge
    assert "Responding" in states and RESPONDING in states
    assert len(ledger.entries) == 1


def test_dialog_duplex_barge_in_cancels_the_answer_and_flushes_the_player_once(
    faulty_server: Any, engine: Any, question: Clip
) -> None:
    faulty_server.faults = Faults(delay=0.06)  # the answer streams over a second or two
    flushes: list[str] = []

    async def script(chat: VoiceChat) -> None:
        await chat.wait_state(RESPONDING, timeout=timeout(30))
        chat.say(question, realtime=True)  # streamed chunk by chunk into the open stream
        await chat.wait_turns(2, timeout=timeout(40))

    dialog = Dialog(
        faulty_server.endpoints,
        mode="duplex",
        ledger=Ledger(),
        on_flush=lambda: flushes.append("user hook"),
    )
    chat = converse(VoiceChat(dialog, source=question, realtime=False), script)
    first, second = chat.turns
    assert first.status == "cancelled"
    assert second.status == "completed" and "two" in second.text.lower()
    flush_events = [e for e in chat.timeline if e.name == "player.flush"]
    assert [e.detail["reason"] for e in flush_events] == ["barge_in"]
    assert flushes == ["user hook"]
    played = chat.player.played_clip  # only the second answer is left in the player
    assert played is not None and "two" in heard_in(engine, played)


@pytest.mark.parametrize("mode", ["tap2talk", "duplex"])
def test_a_dialog_chat_leaves_the_users_hooks_in_place_and_they_see_the_turn_as_it_was(
    server: Any, engine: Any, question: Clip, mode: str
) -> None:
    calls: dict[str, list[Any]] = {}

    def hook(name: str) -> Callable[..., None]:
        calls[name] = []
        return lambda *args: calls[name].append(args)

    hooks = {
        name: hook(name)
        for name in ("on_audio", "on_state", "on_text", "on_turn", "on_flush", "on_speech_started")
    }
    dialog = Dialog(server.endpoints, mode=mode, ledger=Ledger(), **hooks)
    while_running: dict[str, Any] = {}

    async def script(chat: VoiceChat) -> None:
        await chat.wait_state(LISTENING, timeout=timeout(20))  # the bridge is open
        await chat.wait_turns(1, timeout=timeout(40))
        while_running.update({name: getattr(dialog, name) for name in hooks})

    chat = converse(VoiceChat(dialog, source=question, realtime=False), script)
    # never replaced, not even while the chat ran
    assert all(
        while_running[name] is fn and getattr(dialog, name) is fn for name, fn in hooks.items()
    )
    (turn,) = chat.turns
    assert "two" in turn.text.lower()
    # each hook saw the turn as it was, as it would without a chat
    assert calls["on_turn"] == [(turn,)] and calls["on_flush"] == []
    assert calls["on_speech_started"] and "Responding" in [s for (s,) in calls["on_state"]]
    assert ("user", turn.heard, True) in calls["on_text"]
    assert ("assistant", turn.text, True) in calls["on_text"]
    assert turn.audio is not None
    assert sum(c.duration for (c,) in calls["on_audio"]) == pytest.approx(turn.audio.duration)


def test_a_failed_take_is_shown_and_the_chat_keeps_listening(server: Any, question: Clip) -> None:
    async def script(chat: VoiceChat) -> None:
        with pytest.raises(AudioError, match="heard no speech"):
            await chat.wait_turns(1, timeout=timeout(10))
        assert chat.state == LISTENING and chat.running
        chat.say(question, realtime=False)
        await chat.wait_turns(1, timeout=timeout(40))

    dialog = Dialog(server.endpoints, mode="duplex", ledger=Ledger())
    chat = converse(VoiceChat(dialog, source=Clip.silence(1.0, 16000), realtime=False), script)
    (failure,) = chat.failures
    assert isinstance(failure, AudioError)
    (turn,) = chat.turns
    assert "two" in turn.text.lower()


def test_qwen_audio_turn_answers_in_text_and_says_it_only_with_tts(
    server: Any, engine: Any, question: Clip
) -> None:
    def talk(tts: bool) -> VoiceChat:
        qa = QwenAudio(server.endpoints, ledger=Ledger(), timeout=30)
        return converse(
            VoiceChat(qa, source=question, realtime=False, tts=tts),
            lambda chat: chat.wait_turns(1, timeout=timeout(40)),
        )

    quiet = talk(False)
    (turn,) = quiet.turns
    assert "two" in turn.text.lower()
    assert quiet.player.played_clip is None
    assert "text only" in quiet.notice
    spoken = talk(True)
    assert "eSpeak" in spoken.notice
    played = spoken.player.played_clip
    assert played is not None and "two" in heard_in(engine, played)


def test_start_without_microphone_or_loop_says_what_to_do(
    server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat = VoiceChat(QwenAudio(server.endpoints, ledger=Ledger()))
    with pytest.raises(ConfigError, match="running event loop"):
        chat.start()
    monkeypatch.setenv("NBTOOLKIT_HEADLESS", "1")

    async def main() -> None:
        chat.start()

    with pytest.raises(AudioError, match="source=Clip"):
        run(main())
    with pytest.raises(ConfigError, match="tts=True is for QwenAudio"):
        VoiceChat(OmniRealtime(server.endpoints, ledger=Ledger()), tts=True)


# ----------------------------------------------------------------------------- camera frames
def picture(colour: tuple[int, int, int]) -> Any:
    from PIL import Image

    return Image.new("RGB", (160, 120), colour)


@pytest.fixture(scope="module")
def look(engine: Any) -> Clip:
    """ "what is in front of me", then silence for server VAD."""
    speech = Clip.from_array(engine.synthesize("what is in front of me", rate=16000), 16000)
    return Clip.silence(0.3, 16000) + speech + Clip.silence(1.5, 16000)


def colours_of(jpeg: bytes) -> tuple[int, int, int]:
    import io

    from PIL import Image

    r, g, b = Image.open(io.BytesIO(jpeg)).convert("RGB").getpixel((80, 60))
    return r, g, b


def test_recorder_frames_stand_in_for_the_camera_and_the_last_one_repeats() -> None:
    from nbtoolkit.errors import ImageError
    from nbtoolkit.widgets.recorder import Recorder

    rec = Recorder(frames=[picture((220, 20, 20)), picture((20, 220, 20))])
    shots = [run(rec.snapshot()) for _ in range(3)]
    assert all(s.startswith(b"\xff\xd8\xff") for s in shots)
    assert [max(range(3), key=colours_of(s).__getitem__) for s in shots] == [0, 1, 1]
    with pytest.raises(ImageError, match="camera=True"):
        run(Recorder().snapshot())


def test_dialog_video_chat_answers_about_the_latest_camera_frame(server: Any, look: Clip) -> None:
    async def script(chat: VoiceChat) -> None:
        await chat.wait_state(LISTENING, timeout=timeout(20))
        await chat.snapshot()  # while the question is being spoken
        assert not await chat.send_frame(picture((200, 20, 20)))  # too soon: dropped
        await chat.wait_turns(1, timeout=timeout(40))

    dialog = Dialog(server.endpoints, mode="duplex", video=True, ledger=Ledger())
    chat = converse(
        VoiceChat(dialog, source=look, realtime=True, frames=[picture((20, 200, 20))]), script
    )
    (turn,) = chat.turns
    assert "green" in turn.text.lower() and "red" not in turn.text.lower()
    assert [e.name for e in chat.timeline].count("frame") == 1


def test_dialog_chat_without_video_asks_about_a_snapshot_as_a_turn(
    server: Any, question: Clip
) -> None:
    async def script(chat: VoiceChat) -> None:
        await chat.wait_turns(1, timeout=timeout(40))
        await chat.snapshot()
        await chat.wait_turns(2, timeout=timeout(40))

    dialog = Dialog(server.endpoints, mode="duplex", ledger=Ledger())
    chat = converse(
        VoiceChat(dialog, source=question, realtime=False, frames=[picture((20, 20, 220))]), script
    )
    spoken, seen = chat.turns
    assert "two" in spoken.text.lower()
    assert "blue" in seen.text.lower() and seen.usage.input_image > 0


def test_omni_chat_sends_the_frame_with_the_speech_it_goes_with(server: Any, look: Clip) -> None:
    speaking = asyncio.Event()

    async def script(chat: VoiceChat) -> None:
        await asyncio.wait_for(speaking.wait(), timeout(20))
        await chat.snapshot()
        await chat.wait_turns(1, timeout=timeout(40))

    rt = OmniRealtime(server.endpoints, ledger=Ledger())
    chat = VoiceChat(rt, source=look, realtime=True, frames=[picture((20, 20, 220))])
    chat.recorder.on_chunk(lambda _pcm: speaking.set())
    converse(chat, script)
    (turn,) = chat.turns
    assert "blue" in turn.text.lower() and turn.usage.input_image > 0


def test_a_backend_without_pictures_refuses_frames(server: Any, question: Clip) -> None:
    async def script(chat: VoiceChat) -> None:
        with pytest.raises(ConfigError, match="no pictures"):
            await chat.send_frame(picture((1, 2, 3)))

    chat = VoiceChat(QwenAudio(server.endpoints, ledger=Ledger()), source=question)
    with pytest.raises(ConfigError, match="not started"):
        run(chat.send_frame(picture((1, 2, 3))))
    converse(chat, script)


# ----------------------------------------------------------------------------- the chat's events
def tone_pcm(seconds: float, rate: int = 24000) -> bytes:
    t = np.arange(round(seconds * rate)) / rate
    return Clip.from_array(0.3 * np.sin(2 * np.pi * 440 * t), rate).to_pcm()


def quiet_chat(server: Any) -> VoiceChat:
    """A chat that is never started: events are applied to it directly."""
    return VoiceChat(QwenAudio(server.endpoints, ledger=Ledger()))


def test_chat_events_render_in_order_on_badge_transcript_player_and_timeline(server: Any) -> None:
    chat = quiet_chat(server)
    for event in (
        State(THINKING),
        Heard("one plus one"),
        Said("two"),
        Audio(tone_pcm(0.5), 24000, "r1"),
        Mark("server", "response.done"),
        TurnDone(Reply(text="two", heard="one plus one")),
    ):
        chat.apply(event)

    assert chat.state == LISTENING
    assert chat.transcript == "you: one plus one\nassistant: two"
    played = chat.player.played_clip
    assert played is not None and played.duration == pytest.approx(0.5)
    names = ["THINKING", "first_audio", "RESPONDING", "response.done", "LISTENING"]
    assert [e.name for e in chat.timeline] == names
    # the turn came without a timeline: it gets the chat's marks up to its end
    (turn,) = chat.turns
    assert [e.name for e in turn.timeline] == names[:-1]


def test_the_live_transcript_shows_what_is_heard_and_said_before_the_turn_ends(
    server: Any,
) -> None:
    chat = quiet_chat(server)
    chat.apply(Heard("what is in"))
    chat.apply(Said("a red"))
    html = chat.children[-1].value
    assert "what is in" in html and "a red …" in html
    assert chat.turns == []


def test_one_barge_in_flushes_the_player_once_and_drops_the_late_audio_of_its_answer(
    server: Any,
) -> None:
    chat = quiet_chat(server)
    chat.apply(Audio(tone_pcm(0.3), 24000, "r1"))
    chat.apply(Flush("barge_in", "r1", by="server_vad"))
    chat.apply(Flush("barge_in", "r1", by="player"))  # the same barge-in, seen twice
    chat.apply(Audio(tone_pcm(0.2), 24000, "r1"))  # late audio of the cancelled answer
    assert chat.player.fed_ms == 0
    chat.apply(Audio(tone_pcm(0.4), 24000, "r2"))  # the next answer plays

    flushes = [e for e in chat.timeline if e.name == "player.flush"]
    assert [e.detail["reason"] for e in flushes] == ["barge_in"]
    assert [e.detail["by"] for e in chat.timeline if e.name == "barge_in"] == ["server_vad"]
    assert chat.player.fed_ms == pytest.approx(400)


def test_a_flush_if_audible_leaves_a_silent_player_alone_and_stops_a_playing_one(
    server: Any,
) -> None:
    chat = quiet_chat(server)
    chat.apply(Audio(tone_pcm(0.3), 24000, "r1"))
    chat.apply(Flush("record", "r1", if_audible=True))  # headless: nothing plays
    assert chat.timeline.first("player.flush") is None
    chat.player.playing = True  # what the browser view reports while it plays
    chat.apply(Flush("record", "r1", if_audible=True))
    assert chat.timeline.first("player.flush") is not None
    assert chat.player.fed_ms == 0


def test_a_failed_turn_keeps_what_arrived_says_why_and_listens_again(server: Any) -> None:
    chat = quiet_chat(server)
    chat.apply(State(THINKING))
    partial = Reply(text="two pl", heard="one plus one", status="failed")
    chat.apply(Failed(ConnectionLost("The answer stopped", "say it again", partial=partial)))

    assert chat.state == LISTENING
    assert chat.turns == [partial]
    assert isinstance(chat.failures[0], ConnectionLost)
    assert "The answer stopped" in chat.children[0].children[0].value  # the badge


def test_the_omni_bridge_turns_server_events_into_chat_events_in_order(server: Any) -> None:
    got: list[ChatEvent] = []
    rt = OmniRealtime(server.endpoints, ledger=Ledger())
    bridge = bridge_for(rt, False, got.append)
    audio = base64.b64encode(tone_pcm(0.1)).decode()
    ids = {"response_id": "r1", "item_id": "i2"}
    for frame in (
        {"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "i1"},
        {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 900, "item_id": "i1"},
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": "i1",
            "transcript": "one plus one",
        },
        {"type": "response.created", "response": {"id": "r1"}},
        {"type": "response.audio_transcript.delta", "delta": "two", **ids},
        {"type": "response.audio.delta", "delta": audio, **ids},
        # the user speaks over the answer: the client has cancelled it
        {"type": "input_audio_buffer.speech_started", "audio_start_ms": 1500, "item_id": "i3"},
        {"type": "response.done", "response": {"id": "r1", "status": "cancelled"}},
    ):
        bridge._on_event(parse_server_event(frame))  # type: ignore[attr-defined]

    assert [e.type for e in got] == [
        "mark", "flush", "state",  # speech started: nothing plays yet, so flush only if audible
        "mark", "state",
        "heard",
        "mark",
        "said",
        "audio",
        "mark", "flush", "state",  # speech over the answer: flush it at once
        "mark", "turn",
    ]  # fmt: skip
    flushes = [e for e in got if isinstance(e, Flush)]
    assert [(f.answer, f.by, f.if_audible) for f in flushes] == [
        ("", "player", True),
        ("r1", "server_vad", False),
    ]
    (done,) = [e for e in got if isinstance(e, TurnDone)]
    assert (done.turn.heard, done.turn.text, done.turn.status) == (
        "one plus one",
        "two",
        "cancelled",
    )


def test_the_dialog_live_bridge_turns_session_events_into_chat_events_in_order(
    server: Any,
) -> None:
    got: list[ChatEvent] = []
    bridge = bridge_for(Dialog(server.endpoints, mode="duplex", ledger=Ledger()), False, got.append)
    tone = Clip.from_pcm(tone_pcm(0.1), 24000)
    cut = Reply(text="two pl", status="cancelled")
    answer = Reply(text="two", heard="one plus one")
    for event in (
        events.SpeechStarted(),
        events.Heard("one plus", final=False),
        events.SpeechStopped(),
        events.Heard("one plus one"),
        events.StateChanged("Thinking"),
        events.StateChanged("Responding"),
        events.TextDelta("two"),
        events.TextDelta(" pl"),
        events.AudioDelta(tone),
        events.SpeechStarted(),  # the user speaks over the answer: the server cancels it
        events.StateChanged("Listening"),
        events.Cancelled(cut),
        events.Done(cut),
        events.StateChanged("Thinking"),
        events.StateChanged("Responding"),
        events.TextDelta("two"),
        events.AudioDelta(tone),
        events.StateChanged("Listening"),
        events.Done(answer),
        events.Failed(AudioError("heard no speech", "speak up")),
    ):
        bridge._on_event(event)  # type: ignore[attr-defined]

    assert [e.type for e in got] == [
        "mark", "flush",  # speech started: flush only if something still plays
        "heard", "heard",
        "state", "state", "said", "said", "audio",
        "mark", "flush",
        "flush",  # the cancelled answer: dropped at once
        "turn",
        "state", "state", "said", "audio",
        "turn",
        "failed",
    ]  # fmt: skip
    flushes = [(f.answer, f.by, f.reason, f.if_audible) for f in got if isinstance(f, Flush)]
    assert flushes == [
        ("dialog-0", "player", "barge_in", True),
        ("dialog-1", "player", "barge_in", True),
        ("dialog-1", "server_vad", "barge_in", False),
    ]
    assert [e.text for e in got if isinstance(e, Said)] == ["two", "two pl", "two"]
    assert [e.answer for e in got if isinstance(e, Audio)] == ["dialog-1", "dialog-2"]
    assert [e.turn for e in got if isinstance(e, TurnDone)] == [cut, answer]


def test_bridges_reach_the_chat_only_through_its_events() -> None:
    import ast
    import inspect

    import nbtoolkit._voice_chat_bridges as bridges

    tree = ast.parse(inspect.getsource(bridges))
    imported = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module is not None
    }
    assert not {m for m in imported if m.startswith(("nbtoolkit.widgets", "nbtoolkit.voice_chat."))}
    assert "nbtoolkit.voice_chat" not in imported
    names = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert "chat" not in names


def test_bridges_never_set_a_backends_hooks_nor_touch_its_private_names() -> None:
    import ast
    import inspect

    import nbtoolkit._voice_chat_bridges as bridges

    tree = ast.parse(inspect.getsource(bridges))
    backends = {"d", "dialog", "rt", "qa", "live"}

    def owner(node: ast.Attribute) -> str:
        """``x`` in ``x.attr`` and in ``self.x.attr``."""
        value = node.value
        if isinstance(value, ast.Name):
            return value.id
        if isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name):
            return value.attr if value.value.id == "self" else ""
        return ""

    attributes = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute)]
    assert [a.attr for a in attributes if owner(a) in backends and a.attr.startswith("_")] == []
    stores = [a for a in attributes if isinstance(a.ctx, ast.Store) and owner(a) in backends]
    assert [f"{owner(a)}.{a.attr}" for a in stores] == []
