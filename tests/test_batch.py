"""Batch evaluation: resume, failures, rate limit, concurrency, scoring, and the Dask executor."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import timeout

from nbtoolkit.audio.clip import Clip
from nbtoolkit.batch import (
    BatchItem,
    ItemResult,
    TokenBucket,
    exact_match,
    quoted,
    run_batch,
    wer,
)
from nbtoolkit.batch.items import to_items
from nbtoolkit.config import Endpoints, Secret, local_endpoints
from nbtoolkit.errors import ConfigError, ServerError
from nbtoolkit.results import Reply, Usage
from nbtoolkit.text import tokens

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]


def word_items() -> list[BatchItem]:
    """Items whose 'audio' is the word itself, so a function backend can answer them."""
    return [BatchItem(f"clip-{i}", word, reference=word) for i, word in enumerate(WORDS)]


def echo(source: object, question: str | None) -> str:
    return str(source)


class FakeClock:
    """Time that moves only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def stored_ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


# ---------------------------------------------------------------- resume


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_rerun_after_interrupt_completes_only_the_rest_without_duplicates(
    tmp_path: Path, suffix: str
) -> None:
    output = tmp_path / f"run{suffix}"
    calls: list[str] = []

    def crashes_on_fourth(source: object, question: str | None) -> str:
        if len(calls) == 3:
            raise KeyboardInterrupt  # what a kernel interrupt looks like to the batch
        calls.append(str(source))
        return str(source).upper()

    with pytest.raises(KeyboardInterrupt):
        run_batch(word_items(), crashes_on_fourth, concurrency=1, output=output, progress=False)
    assert calls == WORDS[:3]

    second: list[str] = []

    def counts(source: object, question: str | None) -> str:
        second.append(str(source))
        return str(source).upper()

    result = run_batch(word_items(), counts, concurrency=3, output=output, progress=False)
    assert sorted(second) == sorted(WORDS[3:])
    assert result.resumed == 3
    assert [r.id for r in result] == [f"clip-{i}" for i in range(len(WORDS))]
    assert [r.text for r in result] == [w.upper() for w in WORDS]

    if suffix == ".jsonl":
        ids = stored_ids(output)
    else:
        import pandas as pd

        ids = list(pd.read_parquet(output)["id"])
    assert sorted(ids) == sorted(r.id for r in result)  # each id stored exactly once

    third: list[str] = []
    run_batch(word_items(), lambda s, q: third.append(str(s)) or "", output=output, progress=False)
    assert third == []


def test_line_cut_short_by_a_crash_is_dropped_and_its_item_runs_again(tmp_path: Path) -> None:
    output = tmp_path / "run.jsonl"
    run_batch(word_items()[:2], echo, output=output, progress=False)
    with output.open("a") as f:
        f.write('{"id": "clip-2", "text": "cha')  # the process died mid-write
    ran: list[str] = []
    result = run_batch(
        word_items()[:3], lambda s, q: ran.append(str(s)) or str(s), output=output, progress=False
    )
    assert ran == ["charlie"]
    assert result["clip-2"].text == "charlie"
    assert stored_ids(output) == ["clip-0", "clip-1", "clip-2"]


def test_failed_items_run_again_only_when_asked(tmp_path: Path) -> None:
    output = tmp_path / "run.jsonl"

    def fails_on_delta(source: object, question: str | None) -> str:
        if source == "delta":
            raise ServerError("The service failed", "try again later", status=503)
        return str(source)

    first = run_batch(word_items(), fails_on_delta, output=output, progress=False)
    assert [r.id for r in first.failed] == ["clip-3"]
    ran: list[str] = []

    def records(source: object, question: str | None) -> str:
        ran.append(str(source))
        return str(source)

    assert run_batch(word_items(), records, output=output, progress=False).failed != []
    assert ran == []
    again = run_batch(word_items(), records, output=output, progress=False, retry_failed=True)
    assert ran == ["delta"]
    assert again.failed == []
    assert again["clip-3"].text == "delta"


def test_parquet_output_is_written_in_parts_and_survives_an_unflushed_journal(
    tmp_path: Path,
) -> None:
    import pandas as pd

    from nbtoolkit.batch.store import ParquetStore

    path = tmp_path / "run.parquet"
    store = ParquetStore(path, part_size=3)
    for i, word in enumerate(WORDS):
        store.append(ItemResult(f"clip-{i}", word))
    # no close(): the process "dies" with two items only in the journal
    assert sorted(p.name for p in path.glob("part-*")) == [
        "part-00000.parquet",
        "part-00001.parquet",
    ]
    assert len(pd.read_parquet(path)) == 6  # readers see the finished parts only

    reopened = ParquetStore(path, part_size=3)  # the journal becomes a part at once
    assert sorted(reopened.load()) == [f"clip-{i}" for i in range(len(WORDS))]
    reopened.close()
    assert sorted(pd.read_parquet(path)["id"]) == [f"clip-{i}" for i in range(len(WORDS))]


# ---------------------------------------------------------------- failures


def test_failing_item_is_recorded_with_its_error_while_the_others_succeed() -> None:
    def flaky(source: object, question: str | None) -> Reply:
        if source == "charlie":
            raise ServerError("The service failed (500)", "try again later", status=500)
        if source == "echo":
            raise ValueError("cannot decode this audio")
        usage = Usage("local/engine", input_text=4, input_audio=25, output_text=1, local=True)
        return Reply(str(source), usage=usage, request_id=f"req-{source}", latency=0.01)

    result = run_batch(word_items(), flaky, "What is said?", concurrency=3, progress=False)
    assert [r.id for r in result.failed] == ["clip-2", "clip-4"]
    charlie = result["clip-2"]
    assert charlie.error_type == "ServerError"
    assert charlie.error_message == "The service failed (500) — try again later"
    assert charlie.text is None and charlie.cost is None
    assert result["clip-4"].error_type == "ValueError"
    ok = [r for r in result if r.ok]
    assert [r.text for r in ok] == [w for w in WORDS if w not in ("charlie", "echo")]
    assert all(r.cost == 0.0 and r.tokens == 30 for r in ok)
    assert result["clip-0"].request_id == "req-alpha"

    summary = result.summary()
    assert (summary.items, summary.ok) == (8, 6)
    assert summary.failed == {"ServerError": 1, "ValueError": 1}
    assert summary.tokens == 180
    assert summary.cost_label() == "offline (no charge)"
    assert summary.wer == 0.0 and summary.exact_match == 1.0
    html = result._repr_html_()
    assert "ServerError ×1" in html and "offline (no charge)" in html

    frame = result.to_dataframe()
    assert list(frame["ok"]) == [r.ok for r in result]
    assert frame.loc[frame["id"] == "clip-2", "error_type"].item() == "ServerError"


def test_a_secret_in_an_error_message_never_reaches_the_results(tmp_path: Path) -> None:
    key = Secret("sk-batch-test-0123456789")

    def leaks(source: object, question: str | None) -> str:
        raise RuntimeError(f"bad key {key.reveal()}")

    output = tmp_path / "run.jsonl"
    result = run_batch(word_items()[:1], leaks, output=output, progress=False)
    assert "sk-batch-test" not in (result["clip-0"].error_message or "")
    assert "sk-batch-test" not in output.read_text()


# ---------------------------------------------------------------- rate limit and concurrency


def test_token_bucket_allows_a_burst_then_spaces_requests() -> None:
    bucket = TokenBucket(rate=2, burst=3)
    assert [bucket.reserve(0.0) for _ in range(5)] == [0.0, 0.0, 0.0, 0.5, 1.0]
    # after a pause the burst is available again
    assert [bucket.reserve(10.0) for _ in range(4)] == [0.0, 0.0, 0.0, 0.5]


def test_rate_limit_spaces_backend_calls_on_an_injected_clock() -> None:
    clock = FakeClock()
    started: list[float] = []

    def at(source: object, question: str | None) -> str:
        started.append(clock())
        return str(source)

    bucket = TokenBucket(rate=4, clock=clock, sleep=clock.sleep)
    result = run_batch(word_items(), at, rate_limit=bucket, concurrency=1, progress=False)
    assert len(result.failed) == 0
    assert started == [i * 0.25 for i in range(len(WORDS))]


def test_concurrent_callers_each_get_their_own_slot() -> None:
    clock = FakeClock()  # never advanced: every caller arrives at t=0
    waits: list[float] = []
    bucket = TokenBucket(rate=10, clock=clock, sleep=waits.append)
    threads = [threading.Thread(target=bucket.acquire) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout(5))
    assert sorted(waits) == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])  # the first waits 0


def test_no_more_than_concurrency_items_are_in_flight() -> None:
    lock = threading.Lock()
    in_flight = 0
    peak = 0
    together = threading.Barrier(3, timeout=timeout(10))

    def tracked(source: object, question: str | None) -> str:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        together.wait()  # three calls must be running at once for this to return
        with lock:
            in_flight -= 1
        return str(source)

    items = [BatchItem(str(i), f"w{i}") for i in range(12)]
    result = run_batch(items, tracked, concurrency=3, progress=False)
    assert result.failed == []
    assert peak == 3


# ---------------------------------------------------------------- backends and items


def test_factory_builds_one_client_per_thread_and_client_gets_audio_and_question() -> None:
    built: list[int] = []
    asked: list[tuple[object, str | None]] = []

    class Client:
        def __init__(self) -> None:
            built.append(threading.get_ident())

        def ask(self, audio: object = None, text: str | None = None) -> Reply:
            asked.append((audio, text))
            return Reply(f"{text}: {audio}")

    result = run_batch(word_items(), Client, "Say it", concurrency=2, progress=False)
    assert result["clip-1"].text == "Say it: bravo"
    assert 1 <= len(built) <= 2 and len(set(built)) == len(built)
    assert sorted(asked) == sorted((w, "Say it") for w in WORDS)

    single = Client()
    assert run_batch(word_items()[:2], single, progress=False)["clip-0"].text == "None: alpha"


def test_items_from_a_dataframe_keep_ids_and_references() -> None:
    import pandas as pd

    frame = pd.DataFrame(
        {"path": ["a.wav", "b.wav", "c.wav"], "reference": ["one", None, "three"], "id": [7, 8, 9]}
    )
    assert to_items(frame) == [
        BatchItem("7", "a.wav", "one"),
        BatchItem("8", "b.wav", None),
        BatchItem("9", "c.wav", "three"),
    ]
    no_ids = to_items(frame.drop(columns=["id", "reference"]))
    assert [i.id for i in no_ids] == ["a.wav", "b.wav", "c.wav"]
    clip = Clip.silence(0.1)
    assert [i.id for i in to_items([clip, clip])] == ["0", "1"]
    with pytest.raises(ConfigError, match="unique"):
        to_items(["a.wav", "a.wav"])
    with pytest.raises(ConfigError, match="'path' column"):
        to_items(pd.DataFrame({"file": ["a.wav"]}))


def test_records_round_trip_through_the_store_format() -> None:
    usage = Usage("qwen-audio-turbo-latest", input_text=3, input_audio=80, output_text=9)
    result = ItemResult("x", "hello", "hello", usage, 0.5, 1.25, "req-1")
    assert ItemResult.from_record(json.loads(json.dumps(result.to_record()))) == result


# ---------------------------------------------------------------- scoring


def test_wer_counts_word_edits_over_normalised_reference_words() -> None:
    assert wer("the cat sat on the mat", "the cat sat on the mat") == 0.0
    assert wer("The cat sat on the mat.", "the CAT sat, on the mat") == 0.0
    assert wer("the cat sat on the mat", "the cat sit on mat") == pytest.approx(2 / 6)
    assert wer("open the door", "please open the red door now") == pytest.approx(3 / 3)
    assert wer("open the door", "") == 1.0
    assert wer("", "") == 0.0
    assert wer("don't stop", "dont stop") == 0.5
    assert wer("你好世界", "你好世") == 0.25  # ideographs count one by one
    assert quoted('The audio says: "open the door".') == "open the door"
    assert quoted("no quotes here") == "no quotes here"
    assert exact_match("Hello, world!", "hello world")
    assert not exact_match("hello world", "hello word")


def test_summary_plots_draw_latency_cost_and_errors() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def some_fail(source: object, question: str | None) -> str:
        if source in ("golf", "hotel"):
            raise TimeoutError("no answer in 5 s")
        return "wrong words"

    result = run_batch(word_items(), some_fail, progress=False)
    summary = result.summary()
    assert summary.failed == {"TimeoutError": 2}
    assert summary.wer == 2.0 and summary.exact_match == 0.0  # two words for each one
    assert summary.cost_label() == "unknown"  # a plain function reports no usage
    fig = result.plot()
    latency, cost, errors = fig.axes
    assert [t.get_text() for t in errors.get_xticklabels()] == ["TimeoutError"]
    assert len(latency.patches) > 0 and len(errors.patches) == 1
    assert [t.get_text() for t in cost.texts] == ["price unknown"]  # said, not drawn as 0
    plt.close(fig)


# ---------------------------------------------------------------- dask


def test_dask_refuses_a_client_holding_a_key_and_names_the_fix() -> None:
    class Holder:
        def __init__(self, endpoints: Endpoints) -> None:
            self.endpoints = endpoints

        def ask(self, audio: object = None, text: str | None = None) -> str:
            return ""

    holder = Holder(local_endpoints("http://127.0.0.1:1", Secret("tok-not-for-workers")))
    with pytest.raises(ConfigError, match="pass a factory") as err:
        run_batch(word_items(), holder, executor="dask", progress=False)
    assert "tok-not-for-workers" not in str(err.value)


@pytest.mark.timeout(120)
def test_dask_local_cluster_with_two_worker_processes_runs_every_item_once(
    tmp_path: Path,
) -> None:
    output = tmp_path / "run.jsonl"
    here = os.getpid()

    def where(source: object, question: str | None) -> str:
        import os

        if source == "foxtrot":
            raise ServerError("The service failed (502)", "try again later", status=502)
        return f"{question} {source} {os.getpid()}"

    result = run_batch(
        word_items(),
        where,
        "heard",
        executor="dask",
        concurrency=4,
        rate_limit=1000,
        output=output,
        progress=False,
    )
    assert [r.id for r in result.failed] == ["clip-5"]
    assert result["clip-5"].error_type == "ServerError"
    answers = {r.id: (r.text or "").split() for r in result if r.ok}
    assert {i: words[:2] for i, words in answers.items()} == {
        f"clip-{i}": ["heard", w] for i, w in enumerate(WORDS) if w != "foxtrot"
    }
    pids = {int(words[2]) for words in answers.values()}
    assert here not in pids and 1 <= len(pids) <= 2
    assert sorted(stored_ids(output)) == sorted(r.id for r in result)


# ---------------------------------------------------------------- the offline engine over the wire

PHRASES = ["what time is it", "turn left", "tell me a joke"]  # in the engine's grammar
QUESTION = "What is said in the audio?"


def spoken(engine: Any, folder: Path) -> list[BatchItem]:
    items = []
    for i, phrase in enumerate(PHRASES):
        clip = Clip.from_array(engine.synthesize(phrase, rate=16000), 16000)
        items.append(BatchItem(f"p{i}", str(clip.save(folder / f"p{i}.wav")), phrase))
    return items


def test_qwen_audio_batch_on_the_local_server_hears_each_clip(
    server: Any, engine: Any, tmp_path: Path
) -> None:
    from nbtoolkit.backends.qwen_audio import QwenAudio

    output = tmp_path / "run.parquet"
    result = run_batch(
        spoken(engine, tmp_path),
        QwenAudio(server.endpoints),
        QUESTION,
        concurrency=2,
        output=output,
        progress=False,
    )
    assert result.failed == []
    for r in result:
        assert tokens(r.reference or "") == tokens(quoted(r.text or "")), r
        assert r.usage is not None and r.usage.input_audio > 0 and r.cost == 0.0
        assert r.request_id
    summary = result.summary(extract=quoted)
    assert summary.wer == 0.0 and summary.cost_label() == "offline (no charge)"
    # unextracted, 'The audio says: "…".' adds three words to each: 9 edits over 10 words
    assert result.summary().wer == pytest.approx(0.9)

    import pandas as pd

    stored = pd.read_parquet(output).set_index("id")
    assert list(stored.loc[["p0", "p1", "p2"], "text"]) == [r.text for r in result]


@pytest.mark.timeout(120)
def test_dask_workers_each_start_their_own_offline_engine(engine: Any, tmp_path: Path) -> None:
    def offline_client() -> Any:
        from nbtoolkit.backends.qwen_audio import QwenAudio
        from nbtoolkit.connection import connect

        return QwenAudio(connect(local=True, quiet=True))  # built on the worker, in its process

    items = spoken(engine, tmp_path)
    result = run_batch(items, offline_client, QUESTION, executor="dask", progress=False)
    assert result.failed == []
    assert [quoted(r.text or "") for r in result] == PHRASES
