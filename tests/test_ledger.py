"""The usage ledger: cost sums, budget refusal, thread safety, summaries, display and plot."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import threading
from collections.abc import Iterator

import matplotlib.pyplot as plt
import pytest
from conftest import timeout

from nbtoolkit.display.usage import plot_usage
from nbtoolkit.errors import BudgetExceeded, ConfigError
from nbtoolkit.ledger import Ledger, session_ledger, set_session_budget
from nbtoolkit.results import Reply, Timeline, Usage

OMNI = "qwen-omni-turbo-realtime"
VOICE_TURN = Usage(OMNI, 100, 500, 0, 80, 320)  # 0.02866 CNY
TEXT_CALL = Usage(OMNI, 1000, 0, 0, 1000, 0)  # 0.008 CNY
UNPRICED = Usage("qwen-audio-turbo", 33, 85, 0, 10, 0)
OFFLINE = Usage(OMNI, 100, 500, 0, 80, 320, local=True)


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    plt.close("all")


def test_cost_sums_each_call_priced_on_its_own() -> None:
    ledger = Ledger()
    ledger.record(VOICE_TURN, backend="omni", kind="turn")
    ledger.record(TEXT_CALL, backend="omni")
    assert ledger.cost() == pytest.approx(0.02866 + 0.008)
    assert ledger.totals() == VOICE_TURN + TEXT_CALL


def test_unknown_price_is_counted_apart_not_as_zero() -> None:
    ledger = Ledger()
    ledger.record(TEXT_CALL, backend="omni")
    entry = ledger.record(UNPRICED, backend="qwen_audio")
    assert entry.cost is None
    assert ledger.cost() == pytest.approx(0.008)
    assert ledger.unpriced == 1
    assert "0.008000 CNY + 1 call(s) of unknown price" in ledger._repr_html_()


def test_budget_refuses_once_spent_and_names_the_fix() -> None:
    ledger = Ledger(budget_cny=0.03)
    ledger.check()
    ledger.record(VOICE_TURN, backend="omni")
    ledger.check()  # 0.02866 < 0.03
    ledger.record(TEXT_CALL, backend="omni")
    with pytest.raises(BudgetExceeded) as caught:
        ledger.check()
    message = str(caught.value)
    assert "0.030000 CNY" in message and "0.036660 CNY" in message
    assert "budget_cny" in message and "ledger.reset()" in message


def test_raising_the_budget_or_resetting_lets_calls_through_again() -> None:
    ledger = Ledger(budget_cny=0.01)
    ledger.record(VOICE_TURN, backend="omni")
    with pytest.raises(BudgetExceeded):
        ledger.check()
    ledger.budget_cny = 1.0
    ledger.check()
    ledger.budget_cny = 0.01
    ledger.reset()
    ledger.check()
    assert len(ledger) == 0


def test_offline_calls_cost_nothing_and_are_never_refused() -> None:
    ledger = Ledger(budget_cny=0.0)
    ledger.check(local=True)
    entry = ledger.record(OFFLINE, backend="omni", kind="turn")
    assert entry.offline and entry.cost == 0.0
    assert ledger.cost() == 0.0 and ledger.unpriced == 0
    with pytest.raises(BudgetExceeded):
        ledger.check()  # a cloud call with a zero budget is refused
    assert "offline (no charge)" in ledger._repr_html_()


def test_negative_budget_is_refused_with_a_fix() -> None:
    with pytest.raises(ConfigError, match="None for no budget"):
        Ledger(budget_cny=-1)


def test_many_threads_recording_give_exact_totals() -> None:
    ledger = Ledger()
    threads_n, calls_n = 8, 250
    start = threading.Barrier(threads_n)

    def work(n: int) -> None:
        start.wait(timeout(10))
        for _ in range(calls_n):
            ledger.record(Usage(OMNI, 1, 2, 3, 4, 5), backend=f"t{n}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout(30))
        assert not t.is_alive()
    total = threads_n * calls_n
    assert len(ledger) == total
    assert sorted(e.index for e in ledger.entries) == list(range(total))
    assert ledger.totals() == Usage(OMNI, total, 2 * total, 3 * total, 4 * total, 5 * total)
    assert all(s.calls == calls_n for s in ledger.by_backend().values())


def test_summaries_per_backend_and_per_turn() -> None:
    ledger = Ledger()
    ledger.record(VOICE_TURN, backend="omni", kind="turn", turn=1)
    ledger.record(TEXT_CALL, backend="qwen_audio", turn=1)
    ledger.record(UNPRICED, backend="qwen_audio", turn=2)
    per_backend = ledger.by_backend()
    assert list(per_backend) == ["omni", "qwen_audio"]
    assert per_backend["qwen_audio"].calls == 2
    assert per_backend["qwen_audio"].unpriced == 1
    per_turn = ledger.by_turn()
    assert per_turn[1].cost == pytest.approx(0.03666)
    assert per_turn[2].usage == UNPRICED


def test_dataframe_has_one_row_per_entry_with_unknown_cost_as_nan() -> None:
    ledger = Ledger()
    ledger.record(VOICE_TURN, backend="omni", request_id="r1", latency=0.5)
    ledger.record(UNPRICED, backend="qwen_audio")
    df = ledger.to_dataframe()
    assert list(df["backend"]) == ["omni", "qwen_audio"]
    assert df["cost_cny"].iloc[0] == pytest.approx(0.02866)
    assert df["cost_cny"].isna().iloc[1]
    assert df["input_audio"].sum() == 585


def test_html_shows_entries_totals_and_budget() -> None:
    ledger = Ledger(budget_cny=1)
    ledger.record(VOICE_TURN, backend="omni<x>", latency=0.42)
    page = ledger._repr_html_()
    assert "omni&lt;x&gt;" in page and "omni<x>" not in page
    assert "<td>420 ms</td>" in page and "<td>0.028660 CNY</td>" in page
    assert "budget 1.000000 CNY" in page


def test_ledger_plot_has_one_bar_per_turn_for_each_modality() -> None:
    ledger = Ledger(budget_cny=0.05)
    for turn in (1, 2, 3):
        ledger.record(VOICE_TURN, backend="omni", turn=turn)
    ledger.record(TEXT_CALL, backend="omni", turn=3)
    ax = ledger.plot()
    # text in, audio in, text out, audio out occur; image in does not
    assert len(ax.containers) == 4
    assert all(len(bars) == 3 for bars in ax.containers)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["turn 1", "turn 2", "turn 3"]


def test_plot_usage_takes_usages_or_turns_one_bar_each() -> None:
    usages = [VOICE_TURN, TEXT_CALL]
    ax = plot_usage(usages)
    assert all(len(bars) == 2 for bars in ax.containers)
    turns = [Reply("hello", heard="hi", usage=u, timeline=Timeline()) for u in [*usages, UNPRICED]]
    ax = plot_usage(turns)
    assert all(len(bars) == 3 for bars in ax.containers)
    stacked_top = sum(bars.patches[0].get_height() for bars in ax.containers)
    assert stacked_top == VOICE_TURN.total_tokens


def test_session_ledger_is_shared_and_takes_a_budget() -> None:
    ledger = session_ledger()
    before = ledger.budget_cny
    try:
        assert set_session_budget(0.5) is ledger
        assert session_ledger().budget_cny == 0.5
    finally:
        set_session_budget(before)
