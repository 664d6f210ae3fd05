"""Calibration and tuning inputs for the built-in MiniLM (the model itself: `lowbit.models.minilm`): which of the
project's own sentences, as unpadded `CalibrationSet`s.

`minilm_tuning_data` gives the same kind of items as `minilm_calibration`, so a plan with GPTQ layers tuned on them
(`lowbit auto --model minilm`) is reproduced by `lowbit convert --model minilm --calib minilm --calib-limit N --config
plan.json --float-inputs OUT`; when GPTQ is fitted on a separate set of N sentences, the tuning sentences are chosen
among the others (`exclude`), so no GPTQ error is measured on a sentence it was fitted to.
"""

from __future__ import annotations

from ..models.minilm import token_batches
from .sentences import CALIBRATION_SENTENCES
from .sources import CalibrationSet

# GPTQ on MiniLM improves from 128 to 256 sentences (lowest cosine 0.985 -> 0.988 at int4 block 64) and hardly beyond
# (0.988 at 1000, for 4x the time): benchmarks/results/dataaware_minilm_calib_sweep_1t.md
DEFAULT_SENTENCES = 256


def pick_sentences(limit: int | None = None, exclude=()) -> list[str]:
    """`limit` calibration sentences spread evenly over all topics (all of them when None or more), none of
    `exclude` (e.g. the ones GPTQ is fitted on, when these are for measuring)."""
    skip = set(exclude)
    pool = [s for s in CALIBRATION_SENTENCES if s not in skip]
    if not pool:
        raise ValueError(f"no MiniLM calibration sentence is left: all {len(skip)} are excluded")
    if limit is None or limit >= len(pool):
        return pool
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit={limit!r} must be a positive int (the number of sentences) or None")
    return [pool[i * len(pool) // limit] for i in range(limit)]


def minilm_calibration(model, limit: int | None = DEFAULT_SENTENCES, batch_size: int = 32) -> CalibrationSet:
    """Tokenized batches of the project's calibration sentences, each item `(features,)` for `model(features)`.

    limit: number of sentences (default DEFAULT_SENTENCES = 256; None = all), as `pick_sentences` picks them.
    """
    return sentence_batches(model, pick_sentences(limit), batch_size)


def sentence_batches(model, sentences: list[str], batch_size: int = 32) -> CalibrationSet:
    """`sentences` tokenized by `model` and batched by exact token count (`lowbit.models.minilm.token_batches`), so
    no batch holds padding: padded positions would pull the calibration statistics (GPTQ's Hessians) away from the
    real tokens."""
    items = token_batches(model, sentences, batch_size)
    return CalibrationSet(items, f"{len(sentences)} MiniLM calibration sentences in {len(items)} unpadded batches")


def minilm_tuning_data(model, limit: int = 64, exclude=()) -> CalibrationSet:
    """`pick_sentences(limit, exclude)` (none of lowbit.models.SENTENCES) as `(features,)` items, one per token
    count (`lowbit auto`'s default data for --model minilm)."""
    return sentence_batches(model, pick_sentences(limit, exclude))
