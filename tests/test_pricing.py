"""Cost arithmetic per the Qwen-Omni realtime price page (seeded in nbtoolkit/data/prices.json)."""

from __future__ import annotations

import pytest

from nbtoolkit import pricing
from nbtoolkit.results import Usage

OMNI = "qwen-omni-turbo-realtime"


@pytest.mark.parametrize(
    "model", [OMNI, "qwen-omni-turbo-realtime-latest", "qwen-omni-turbo-realtime-2025-05-08"]
)
def test_every_seeded_omni_model_has_the_same_price(model: str) -> None:
    assert pricing.price_table(model) == pricing.price_table(OMNI)


def test_audio_output_charges_audio_and_not_its_transcript() -> None:
    usage = Usage(OMNI, input_text=100, input_audio=500, output_text=80, output_audio=320)
    # 100×0.0016 + 500×0.025 + 320×0.05 per 1000; the 80 text-out tokens are free
    assert pricing.cost(usage) == pytest.approx((0.16 + 12.5 + 16.0) / 1000)


def test_text_only_call_charges_text_output_at_the_text_input_price() -> None:
    usage = Usage(OMNI, input_text=1000, output_text=1000)
    assert pricing.cost(usage) == pytest.approx(0.0016 + 0.0064)


def test_text_output_costs_more_when_the_input_held_audio() -> None:
    usage = Usage(OMNI, input_text=0, input_audio=1000, output_text=1000)
    assert pricing.cost(usage) == pytest.approx(0.025 + 0.018)


def test_text_output_costs_more_when_the_input_held_an_image() -> None:
    usage = Usage(OMNI, input_text=1000, input_image=1000, output_text=1000)
    assert pricing.cost(usage) == pytest.approx(0.0016 + 0.006 + 0.018)


def test_unknown_model_has_no_price_and_reads_unknown() -> None:
    usage = Usage("qwen-audio-turbo", input_text=33, input_audio=85, output_text=10)
    assert pricing.cost(usage) is None
    assert pricing.cost_label(usage) == "unknown"
    assert usage.cost is None


def test_offline_usage_costs_nothing_and_says_so() -> None:
    for usage in (
        Usage(OMNI, input_audio=500, output_audio=300, local=True),
        Usage("local/omni", input_audio=500, output_audio=300),
    ):
        assert pricing.cost(usage) == 0.0
        assert pricing.cost_label(usage) == "offline (no charge)"


def test_price_table_names_its_source() -> None:
    assert "Qwen-Omni realtime" in pricing.price_source()


def test_cost_label_shows_small_costs_as_nonzero() -> None:
    usage = Usage(OMNI, input_text=10, output_text=5)
    assert pricing.cost_label(usage) == "0.000048 CNY"
