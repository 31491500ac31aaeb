"""How many realtime events per second does OmniRealtime handle, against the dashscope SDK?

1. Record: one real server-VAD session with the local server and the offline engine (a spoken
   question, the spoken answer, ``session.finish``); keep every frame the server sent.
2. Replay: a plain ``websockets`` server in a *separate process* (so it never competes for this
   process's GIL) sends those frames as fast as the socket takes them — ``session.created``, the
   turn repeated until the stream is long enough, ``session.finished`` — and ignores what the client
   says, except that ``session.finish`` closes the connection as the real server does.
3. Consume the same stream with (a) ``nbtoolkit.backends.omni.OmniRealtime``, ``async for event in
   rt``, and (b) the SDK's ``OmniRealtimeConversation`` with an ``on_event`` callback. Each handler
   only counts. Rate = events after ``session.created`` / time from ``session.created`` to
   ``session.finished``, both stamped in the consumer with ``time.monotonic``.

Goal: (a) ≥ 3× (b). The replay server offers no permessage-deflate, so both read the same bytes.
Run: ``.venv/bin/python benchmarks/realtime_client.py [--events 6000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing as mp
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from _common import Row, print_table

MODEL = "qwen-omni-turbo-realtime"
QUESTION = "what is three plus four"
GOAL = 3.0


# ----------------------------------------------------------------------------- 1. record
async def _record_session() -> list[str]:
    """Every frame the local server sends in one real server-VAD turn, then session.finish."""
    from websockets.asyncio.client import connect

    from nbtoolkit.local import start

    server = start()
    try:
        speech = server.engine.synthesize(QUESTION, rate=16000).tobytes()
        silence = bytes(16000 * 2 * 3 // 2)
        url = f"{server.endpoints.realtime_url}?model={MODEL}"
        headers = {"Authorization": f"Bearer {server.token.reveal()}"}
        frames: list[str] = []
        async with connect(url, additional_headers=headers, max_size=None, proxy=None) as ws:
            update = {"modalities": ["text", "audio"], "voice": "Chelsie"}
            await ws.send(json.dumps({"type": "session.update", "session": update}))
            for pcm in (speech, silence):
                for i in range(0, len(pcm), 3200):
                    chunk = base64.b64encode(pcm[i : i + 3200]).decode()
                    await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
            for until in ("response.done", "session.finished"):
                while not frames or json.loads(frames[-1])["type"] != until:
                    frames.append(str(await asyncio.wait_for(ws.recv(), 60)))
                if until == "response.done":
                    await ws.send(json.dumps({"type": "session.finish"}))
        return frames
    finally:
        server.stop()


def replay_stream(recorded: list[str], events: int) -> list[str]:
    """``session.created``, ``session.updated``, the turn repeated to about ``events`` frames, and
    ``session.finished``."""
    kinds = [json.loads(f)["type"] for f in recorded]
    head = recorded[: kinds.index("session.updated") + 1]
    turn = recorded[len(head) : kinds.index("session.finished")]
    repeats = max(1, (events - len(head) - 1) // len(turn))
    return [*head, *turn * repeats, recorded[kinds.index("session.finished")]]


# ----------------------------------------------------------------------------- 2. replay
def _replay_server(frames: list[str], conn: Connection) -> None:
    """Child process: serve ``frames`` to every connection; report the port through ``conn``."""
    asyncio.run(_serve(frames, conn))


async def _serve(frames: list[str], conn: Connection) -> None:
    from websockets.asyncio.server import ServerConnection, serve

    async def session(ws: ServerConnection) -> None:
        async def listen() -> None:
            async for message in ws:
                if '"session.finish"' in str(message):
                    await ws.close()
                    return

        listener = asyncio.create_task(listen())
        for frame in frames:
            await ws.send(frame)
        await listener  # until the client finishes the session or goes away

    async with serve(session, "127.0.0.1", 0, compression=None, max_size=None) as server:
        conn.send(server.sockets[0].getsockname()[1])
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # until told to stop


# ----------------------------------------------------------------------------- 3. consume
async def ours(url: str) -> tuple[int, float]:
    """(events after session.created, seconds) with OmniRealtime, ``async for event in rt``."""
    from nbtoolkit.backends.omni import OmniRealtime
    from nbtoolkit.config import Endpoints, Secret
    from nbtoolkit.ledger import Ledger
    from nbtoolkit.protocols.realtime import SessionFinished

    endpoints = Endpoints(url, url, url, None, Secret("replay-server-ignores-the-key"), local=True)
    rt = OmniRealtime(endpoints, ledger=Ledger(), ping_interval=None)
    count = 0
    await rt.connect()
    try:
        async for event in rt:
            count += 1
            if isinstance(event, SessionFinished):
                end = time.monotonic()
                break
    finally:
        await rt.close()
    created = rt.timeline.first("session.created")
    assert created is not None
    return count, end - (rt.timeline.t0 + created.t)


def sdk(url: str, timeout: float) -> tuple[int, float]:
    """(events after session.created, seconds) with the SDK's OmniRealtimeConversation."""
    from dashscope.audio.qwen_omni import OmniRealtimeCallback, OmniRealtimeConversation

    stamps: dict[str, float] = {}
    finished = threading.Event()
    count = 0

    class Counter(OmniRealtimeCallback):
        # the SDK hints `str` but passes the parsed dict (docs/protocols.md#realtime-sdk-client)
        def on_event(self, message: dict[str, Any]) -> None:  # type: ignore[override]
            nonlocal count
            kind = message["type"]
            if kind == "session.created":
                stamps["created"] = time.monotonic()
                return
            count += 1
            if kind == "session.finished":
                stamps["finished"] = time.monotonic()
                finished.set()

    conv = OmniRealtimeConversation(model=MODEL, callback=Counter(), url=url, api_key="replay")
    conv.connect()
    try:
        if not finished.wait(timeout):
            raise TimeoutError(f"the SDK handled {count} events in {timeout:.0f} s and stopped")
    finally:
        conv.close()
    return count, stamps["finished"] - stamps["created"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=6000, help="frames in the replayed stream")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    recorded = asyncio.run(_record_session())
    frames = replay_stream(recorded, args.events)
    kinds = [json.loads(f)["type"] for f in recorded]
    audio = sum(k == "response.audio.delta" for k in kinds)
    print(
        f"recorded one local session: {len(recorded)} frames ({audio} audio deltas, "
        f"{sum(map(len, recorded)) / 1024:.0f} KiB); replaying {len(frames)} frames "
        f"({sum(map(len, frames)) / 2**20:.1f} MiB)"
    )

    ctx = mp.get_context("spawn")
    ours_end, theirs = ctx.Pipe()
    child = ctx.Process(target=_replay_server, args=(frames, theirs), daemon=True)
    child.start()
    try:
        port = ours_end.recv()
        url = f"ws://127.0.0.1:{port}/api-ws/v1/realtime"
        ours_best = sdk_best = 0.0
        for _ in range(args.repeats):  # alternate, so both see the same machine load
            n, seconds = asyncio.run(ours(url))
            assert n == len(frames) - 1, (n, len(frames))
            ours_best = max(ours_best, n / seconds)
            n, seconds = sdk(url, timeout=120)
            assert n == len(frames) - 1, (n, len(frames))
            sdk_best = max(sdk_best, n / seconds)
    finally:
        ours_end.send("stop")
        child.join(10)
        if child.is_alive():
            child.terminate()

    ratio = ours_best / sdk_best
    print_table(
        f"realtime client: events handled per second, best of {args.repeats}",
        [
            Row(
                "OmniRealtime, async for event in rt",
                f"{ours_best:,.0f} ev/s",
                f"SDK {sdk_best:,.0f} ev/s",
                f"{ratio:.1f}×",
                f"≥ {GOAL:.0f}× the SDK",
                ratio >= GOAL,
            )
        ],
    )


if __name__ == "__main__":
    main()
