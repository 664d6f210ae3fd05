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
    """`tuning_sentences(limit, exclude)` as `(features,)` items, one per token count."""
    return sentence_batches(model, tuning_sentences(limit, exclude))


def tuning_sentences(limit: int = 64, exclude=()) -> list[str]:
    """`limit` calibration sentences (none of lowbit.models.SENTENCES, none of `exclude`; all that are left when
    fewer), spread evenly over the rest of the pool."""
    skip = set(exclude)
    pool = [s for s in pick_sentences(None) if s not in skip]
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit={limit!r} must be a positive int (the number of sentences)")
    if not pool:
        raise ValueError(f"no MiniLM calibration sentence is left for tuning: all {len(skip)} are excluded")
    limit = min(limit, len(pool))  # as pick_sentences: a larger limit takes them all
    return [pool[i * len(pool) // limit] for i in range(limit)]
