"""Calibration inputs for the built-in MiniLM sentence encoder (`lowbit.models.load_minilm`)."""

from __future__ import annotations

from .sentences import CALIBRATION_SENTENCES
from .sources import CalibrationSet

# GPTQ on MiniLM improves from 128 to 256 sentences (lowest cosine 0.985 -> 0.988 at int4 block 64) and hardly beyond
# (0.988 at 1000, for 4x the time): bench/results/dataaware_minilm_calib_sweep_1t.md
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
    """`sentences` tokenized by `model` and batched by exact token count, so no batch holds padding: padded positions
    are computed by every Linear layer but are not part of any sentence, and would pull the calibration statistics
    (GPTQ's Hessians) away from the real tokens."""
    tokenize = getattr(model, "preprocess", None) or model.tokenize
    by_length: dict[int, list[str]] = {}
    for s in sentences:
        by_length.setdefault(int(tokenize([s])["input_ids"].shape[1]), []).append(s)
    items = []
    for _, group in sorted(by_length.items()):
        items += [(tokenize(group[i:i + batch_size]),) for i in range(0, len(group), batch_size)]
    n = sum(len(g) for g in by_length.values())
    return CalibrationSet(items, f"{n} MiniLM calibration sentences in {len(items)} unpadded batches")
