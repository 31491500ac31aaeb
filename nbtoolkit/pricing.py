"""What a call cost, in CNY, from the price table in ``nbtoolkit/data/prices.json``.

The rule (Qwen-Omni realtime price page, seeded in ``prices.json`` with its ``source``), per call:

* every input token is charged by modality (text, audio, image);
* output audio tokens are charged at the audio price, and when a call produced audio its output
  text (the transcript of that audio) is **not** charged;
* otherwise output text is charged at the text price when the input was text only, and at the
  higher ``text_with_media_input`` price when the input held any audio or image tokens.

Because the output-text price depends on the whole call, price each call separately and add the
costs; pricing a sum of several calls' usage can differ (the ledger does it per call).

Answers are honest about what they do not know:

* a model with no entry in the table has cost ``None`` ("unknown"), never 0;
* offline-engine usage (``usage.local`` or a model named ``local/…``) costs ``0.0``: the engine runs
  on this machine and nobody bills for it. It is labelled "offline (no charge)", never as a cloud
  price, and ``None`` stays reserved for "we do not know".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Protocol

__all__ = [
    "OFFLINE_LABEL",
    "UNKNOWN_LABEL",
    "PriceTable",
    "Priceable",
    "cost",
    "cost_label",
    "format_cny",
    "is_offline",
    "price_source",
    "price_table",
]

OFFLINE_LABEL = "offline (no charge)"
UNKNOWN_LABEL = "unknown"


class Priceable(Protocol):
    """The token counts a price is computed from: :class:`nbtoolkit.results.Usage` has them (named
    here by shape, so prices sit below the results that show them)."""

    @property
    def model(self) -> str: ...
    @property
    def local(self) -> bool: ...
    @property
    def input_text(self) -> int: ...
    @property
    def input_audio(self) -> int: ...
    @property
    def input_image(self) -> int: ...
    @property
    def output_text(self) -> int: ...
    @property
    def output_audio(self) -> int: ...


@dataclass(frozen=True)
class PriceTable:
    """Prices in CNY per 1000 tokens for one model."""

    input_text: float
    input_audio: float
    input_image: float
    output_text: float
    output_text_with_media_input: float
    output_audio: float

    def cost(self, usage: Priceable) -> float:
        """The cost of one call's ``usage`` under this table (the rule in the module docstring)."""
        per_token = 1 / 1000
        total = (
            usage.input_text * self.input_text
            + usage.input_audio * self.input_audio
            + usage.input_image * self.input_image
            + usage.output_audio * self.output_audio
        )
        if usage.output_audio == 0:
            media_in = usage.input_audio > 0 or usage.input_image > 0
            text_price = self.output_text_with_media_input if media_in else self.output_text
            total += usage.output_text * text_price
        return total * per_token


@cache
def _prices() -> dict[str, Any]:
    text = resources.files("nbtoolkit").joinpath("data/prices.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def price_source() -> str:
    """Where the prices in the table come from."""
    return str(_prices()["source"])


def price_table(model: str) -> PriceTable | None:
    """The price table for ``model``, or ``None`` when nbtoolkit has no price for it."""
    data = _prices()
    name = data["models"].get(model)
    if name is None:
        return None
    table = data["tables"][name]
    inp, out = table["input"], table["output"]
    return PriceTable(
        input_text=inp["text"],
        input_audio=inp["audio"],
        input_image=inp["image"],
        output_text=out["text"],
        output_text_with_media_input=out["text_with_media_input"],
        output_audio=out["audio"],
    )


def is_offline(usage: Priceable) -> bool:
    """True for usage reported by the offline engine (nobody charges for it)."""
    return usage.local or usage.model.startswith("local/")


def cost(usage: Priceable) -> float | None:
    """CNY for one call: ``None`` when the model's price is unknown, ``0.0`` for offline usage."""
    if is_offline(usage):
        return 0.0
    table = price_table(usage.model)
    return None if table is None else table.cost(usage)


def format_cny(amount: float) -> str:
    """An amount for display: enough decimals that a single short call does not show as 0."""
    return f"{amount:.6f} CNY"


def cost_label(usage: Priceable) -> str:
    """The cost as people should read it: an amount, "unknown", or "offline (no charge)"."""
    if is_offline(usage):
        return OFFLINE_LABEL
    amount = cost(usage)
    return UNKNOWN_LABEL if amount is None else format_cny(amount)
