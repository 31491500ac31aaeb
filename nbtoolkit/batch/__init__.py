"""Batch evaluation: one question over many clips, in process or on ``dask.distributed``.

    from nbtoolkit.backends.qwen_audio import QwenAudio
    from nbtoolkit.batch import quoted, run_batch

    result = run_batch(df, QwenAudio, "Transcribe the audio.", output="runs/today.jsonl")
    result.summary(extract=quoted)   # items, ok, failures by type, latency, tokens, cost, WER
    result.to_dataframe()
    result.plot()

Run it again with the same ``output`` after a crash or kernel restart: finished items are skipped.
"""

from nbtoolkit.batch.items import BatchItem
from nbtoolkit.batch.outcome import ItemResult
from nbtoolkit.batch.ratelimit import TokenBucket
from nbtoolkit.batch.result import BatchResult, BatchSummary
from nbtoolkit.batch.runner import run_batch
from nbtoolkit.text import exact_match, normalize, quoted, wer

__all__ = [
    "BatchItem",
    "BatchResult",
    "BatchSummary",
    "ItemResult",
    "TokenBucket",
    "exact_match",
    "normalize",
    "quoted",
    "run_batch",
    "wer",
]
