"""Usage parsing and display, Reply display, Timeline latencies, spans and swimlane plot."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from collections.abc import Iterator

import matplotlib.pyplot as plt
import pytest

from nbtoolkit.config import Secret
from nbtoolkit.display.timeline import plot_timeline
from nbtoolkit.results import Reply, Timeline, Usage

OMNI = "qwen-omni-turbo-realtime"

# response.done usage of a realtime voice turn (docs/protocols.md#realtime-events)
REALTIME_USAGE = {
    "total_tokens": 1000,
    "input_tokens": 600,
    "output_tokens": 400,
    "input_tokens_details": {"text_tokens": 100, "audio_tokens": 500},
    "output_tokens_details": {"text_tokens": 80, "audio_tokens": 320},
}
# Qwen-Audio HTTP usage (seed qwen-audio-api.md, §2.6)
HTTP_USAGE = {"input_tokens": 33, "output_tokens": 10, "audio_tokens": 85}

# a realistic realtime VAD turn, t in seconds
REALTIME_TURN = [
    (0.00, "vad", "input_audio_buffer.speech_started"),
    (1.20, "vad", "input_audio_buffer.speech_stopped"),
    (1.25, "server", "input_audio_buffer.committed"),
    (1.30, "server", "response.created"),
    (1.62, "server", "response.audio_transcript.delta"),
    (1.70, "audio-out", "response.audio.delta"),
    (1.80, "audio-out", "response.audio.delta"),
    (2.40, "audio-out", "response.audio.done"),
    (2.50, "server", "response.done"),
]


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    plt.close("all")


def test_from_dashscope_reads_realtime_details_by_modality() -> None:
    usage = Usage.from_dashscope(REALTIME_USAGE, model=OMNI)
    assert usage == Usage(OMNI, 100, 500, 0, 80, 320)
    assert usage.total_tokens == 1000


def test_from_dashscope_reads_http_audio_tokens_as_audio_input() -> None:
    usage = Usage.from_dashscope(HTTP_USAGE, model="qwen-audio-turbo")
    assert (usage.input_text, usage.input_audio, usage.output_text) == (33, 85, 10)
    assert usage.model == "qwen-audio-turbo"


def test_from_dashscope_fills_missing_text_details_from_totals() -> None:
    usage = Usage.from_dashscope(
        {
            "input_tokens": 700,
            "output_tokens": 50,
            "input_tokens_details": {"audio_tokens": 400, "image_tokens": 250},
        }
    )
    assert (usage.input_text, usage.input_audio, usage.input_image) == (50, 400, 250)
    assert (usage.output_text, usage.output_audio) == (50, 0)


def test_from_dashscope_of_nothing_is_zero_and_keeps_the_callers_model() -> None:
    assert Usage.from_dashscope(None, model=OMNI, local=True) == Usage(OMNI, local=True)


def test_sum_of_usages_adds_every_modality_and_marks_mixed_models() -> None:
    a = Usage(OMNI, 1, 2, 3, 4, 5)
    assert sum([a, a, a]) == Usage(OMNI, 3, 6, 9, 12, 15)
    assert (a + Usage("qwen-audio-turbo", 1)).model == "mixed"
    assert (a + Usage("qwen-audio-turbo", 1)).cost is None


def test_usage_html_shows_tokens_and_cost() -> None:
    page = Usage.from_dashscope(REALTIME_USAGE, model=OMNI)._repr_html_()
    for number in ("100", "500", "80", "320", "600", "400", "1000", "0.028660 CNY"):
        assert f"<td>{number}</td>" in page


def test_usage_html_says_unknown_for_a_model_without_price() -> None:
    page = Usage("qwen-audio-turbo", 33, 85, 0, 10)._repr_html_()
    assert "<td>unknown</td>" in page
    assert "CNY</td>" not in page


class _Player:
    """Stands in for a Clip that renders an audio player."""

    def _repr_html_(self) -> str:
        return "<audio controls></audio>"


def test_reply_html_escapes_text_and_shows_player_usage_and_latency() -> None:
    reply = Reply(
        "<script>alert(1)</script> 2 & 2",
        usage=Usage(OMNI, 10, 0, 0, 5, 0),
        audio=_Player(),  # type: ignore[arg-type]
        request_id="req-42",
        latency=0.8,
        first_token_latency=0.25,
        model=OMNI,
    )
    page = reply._repr_html_()
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; 2 &amp; 2" in page
    assert "<audio controls></audio>" in page
    assert "250 ms" in page and "800 ms" in page and "req-42" in page
    assert "0.000048 CNY" in page


def test_reply_html_never_shows_a_secret_in_the_text() -> None:
    key = Secret("sk-test-results-0123456789")
    page = Reply(f"the key is {key.reveal()}", raw={"key": key.reveal()})._repr_html_()
    assert key.reveal() not in page


def test_spoken_reply_html_shows_heard_text_status_and_latencies() -> None:
    turn = Reply(
        heard="what is two plus <two>",
        text="four",
        usage=Usage(OMNI, 0, 120, 0, 4, 60),
        timeline=Timeline.from_events(REALTIME_TURN),
        status="cancelled",
    )
    page = turn._repr_html_()
    assert "what is two plus &lt;two&gt;" in page and "four" in page
    assert "<td>cancelled</td>" in page
    assert "<td>speech_end_to_first_audio</td><td>500 ms</td>" in page
    assert "<td>9 events</td>" in page


def test_latencies_measure_speech_end_to_first_audio_and_first_token() -> None:
    figures = Timeline.from_events(REALTIME_TURN).latencies()
    assert figures["speech"] == pytest.approx(1.2)
    assert figures["speech_end_to_first_audio"] == pytest.approx(0.5)
    assert figures["speech_end_to_first_token"] == pytest.approx(0.42)
    assert figures["speech_end_to_done"] == pytest.approx(1.3)
    assert "request_to_first_token" not in figures  # no request event: not invented


def test_latencies_from_request_with_short_event_names() -> None:
    timeline = Timeline.from_events(
        [(0.0, "client", "request"), (0.3, "client", "first_token"), (1.1, "client", "done")]
    )
    assert timeline.latencies() == pytest.approx(
        {"request_to_first_token": 0.3, "request_to_done": 1.1}
    )


def test_spans_pair_start_and_stop_events_on_their_lanes() -> None:
    spans = Timeline.from_events(REALTIME_TURN).spans()
    assert [(s.lane, s.label, s.start, s.end) for s in spans] == [
        ("vad", "speech", 0.0, 1.2),
        ("server", "response", 1.3, 2.5),
        ("audio-out", "audio out", 1.7, 2.4),
    ]


def test_to_rows_lists_every_event_in_ms() -> None:
    rows = Timeline.from_events([(0.5, "client", "request", {"n": 1})]).to_rows()
    assert rows == [{"t_ms": 500.0, "lane": "client", "name": "request", "detail": {"n": 1}}]


def test_timeline_html_collapses_repeated_deltas_and_shows_ms() -> None:
    page = Timeline.from_events(REALTIME_TURN)._repr_html_()
    assert "response.audio.delta ×2 (to 1800.0 ms)" in page
    assert "<td>1700.0</td>" in page


def test_marked_events_are_timed_from_the_timeline_start() -> None:
    timeline = Timeline()
    first = timeline.mark("client", "request")
    second = timeline.mark("client", "done")
    assert 0 <= first.t <= second.t
    assert timeline.between("request", "done") == second.t - first.t


def test_plot_timeline_draws_one_row_per_lane_and_one_bar_per_span() -> None:
    timeline = Timeline.from_events(REALTIME_TURN)
    ax = plot_timeline(timeline)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["server", "vad", "audio-out"]
    assert len(ax.collections) == len(timeline.spans()) == 3
