"""Tuning data for the built-in MiniLM: the project's calibration sentences, batched by exact token count.

The same items as `lowbit.calib.minilm_calibration` (no padding: padded positions would enter GPTQ's Hessians), so a
plan with GPTQ layers tuned here is reproduced by `lowbit convert --model minilm --calib minilm --calib-limit N
--config plan.json --float-inputs OUT`. When GPTQ is fitted on a separate calibration set of N sentences
(`minilm_calibration(model, N)`), the tuning sentences are chosen among the others (`exclude`), so no GPTQ error is
measured on a sentence it was fitted to.
"""

from __future__ import annotations

from ..calib.minilm import pick_sentences, sentence_batches
from ..calib.sources import CalibrationSet

OUTPUT = "sentence_embedding"  # the part of a SentenceTransformer's output dict the metric compares


def minilm_tuning_data(model, limit: int = 64, exclude=()) -> CalibrationSet:
    """`pick_sentences(limit, exclude)` (none of lowbit.models.SENTENCES) as `(features,)` items, one per token
    count."""
    return sentence_batches(model, pick_sentences(limit, exclude))
