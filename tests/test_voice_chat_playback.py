"""VoiceChat with a Player whose browser view plays the answer in real time (no browser: a stand-in
view that schedules what the kernel sends the way player.js does and reports it late)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import timeout

from nbtoolkit.audio.clip import Clip
from nbtoolkit.backends.omni import OmniRealtime
from nbtoolkit.ledger import Ledger
from nbtoolkit.voice_chat import VoiceChat
from nbtoolkit.widgets import Player


class PlayingView:
    """Stands in for player.js on ``player``: audio sent to it reaches it ``lag`` seconds later
    and plays back to back in real time (after the player's lead-in); like the browser it reports
    ``playing``/``buffered_ms`` ten times a second while it plays and once more when it stops,
    each report applied another ``lag`` later (prompt, or late on a busy machine). With
    ``stalled`` the kernel applies its first report only, as a kernel busy with queued cells
    (Run All) may."""

    def __init__(self, player: Player, lag: float, stalled: bool) -> None:
        self.player = player
        self.lag = lag
        self.stalled = stalled
        self.applied = 0
        self.loop = asyncio.get_running_loop()
        self.ends = 0.0  # on the loop's clock
        self.reporting = False
        player.send = self.receive  # type: ignore[method-assign]
        player._on_custom_msg(player, {"type": "ready", "rate": 48000}, [])

    def receive(self, content: dict[str, Any], buffers: list[bytes] | None = None) -> None:
        self.loop.call_later(self.lag, self.arrive, content, buffers)

    def arrive(self, content: dict[str, Any], buffers: list[bytes] | None) -> None:
        now = self.loop.time()
        if content["type"] == "pcm":
            seconds = len(buffers[0]) / 2 / content["rate"] if buffers else 0.0
            self.ends = max(self.ends, now + self.player.prebuffer_ms / 1000) + seconds
        elif content["type"] == "flush":
            self.ends = now
        if not self.reporting:
            self.reporting = True
            self.report()

    def report(self) -> None:
        left = max(0.0, self.ends - self.loop.time())
        self.loop.call_later(self.lag, self.apply, left)
        if left > 0:
            self.loop.call_later(min(0.1, left), self.report)
        else:
            self.reporting = False

    def apply(self, left: float) -> None:
        self.applied += 1
        if self.stalled and self.applied > 1:
            return
        self.player.buffered_ms = round(left * 1000)
        self.player.playing = left > 0


@pytest.mark.parametrize(
    ("lag", "stalled"),
    [(0.0, False), (0.2, False), (0.0, True)],
    ids=["prompt_reports", "late_reports", "stalled_reports"],
)
def test_a_question_asked_after_wait_turns_is_not_a_barge_in_on_the_answer_still_playing(
    server: Any, engine: Any, lag: float, stalled: bool
) -> None:
    speech = Clip.from_array(engine.synthesize("one plus one equals what", rate=16000), 16000)
    question = Clip.silence(0.3, 16000) + speech + Clip.silence(1.5, 16000)

    async def main() -> VoiceChat:
        chat = VoiceChat(OmniRealtime(server.endpoints, ledger=Ledger()), source=question)
        PlayingView(chat.player, lag, stalled)
        chat.start()
        try:
            # the offline engine streams its answer in far less time than it takes to play
            await chat.wait_turns(1, timeout=timeout(30))
            chat.say(question, realtime=False)
            await chat.wait_turns(2, timeout=timeout(30))
        finally:
            task = chat.stop()
            if task is not None:
                await asyncio.wait([task], timeout=timeout(15))
        return chat

    chat = asyncio.run(asyncio.wait_for(main(), timeout(90)))
    first, second = chat.turns
    assert first.status == "completed" and "two" in first.text.lower()
    assert second.status == "completed" and "two" in second.text.lower()
    # the first answer was heard to its end: nothing flushed it, nobody barged in
    assert [e.name for e in chat.timeline if e.name in ("player.flush", "barge_in")] == []
