"""Tuning data for the built-in MiniLM: the project's calibration sentences in padded batches.

Padding does not matter to auto-quantization's metric on the pooled `sentence_embedding` (mean pooling skips padded
positions), and few large batches run much faster than `lowbit.calib.minilm_calibration`'s unpadded ones.
"""

from __future__ import annotations

from ..calib.minilm import pick_sentences
from ..calib.sources import CalibrationSet

OUTPUT = "sentence_embedding"  # the part of a SentenceTransformer's output dict the metric compares


def minilm_tuning_data(model, limit: int = 64, batch_size: int = 32) -> CalibrationSet:
    """`limit` calibration sentences (none of lowbit.models.SENTENCES) as `(features,)` items of `batch_size`."""
    tokenize = getattr(model, "preprocess", None) or model.tokenize
    sentences = pick_sentences(limit)
    items = [(tokenize(sentences[i:i + batch_size]),) for i in range(0, len(sentences), batch_size)]
    return CalibrationSet(items, f"{len(sentences)} MiniLM calibration sentences in {len(items)} padded batches")
