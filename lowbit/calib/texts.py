"""Text sets shipped as package data (lowbit/calib/data/*.txt) and the padded batches a user's tokenizer makes.

Sets (`text_set(name)`):
  "heldout_varied": 124 hand-written sentences of many kinds (questions, news, dialogue, instructions, German,
      French, Spanish and more, numbers, code-ish lines), for evaluation only: nothing is calibrated or tuned on them.
  "docstrings": 320 sentences from the Python standard library's docstrings (tools/extract_docstring_sentences.py
      wrote them once), technical calibration text of another kind than `lowbit.calib.sentences`.
Files hold one sentence per line; lines starting with "#" are comments. `read_sentences(filename)` reads any of
them; lowbit.calib.sentences reads the built-in MiniLM's calibration set (minilm_calibration.txt) with it.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from .sources import CalibrationSet

TEXT_SETS = {"heldout_varied": "heldout_varied.txt", "docstrings": "docstrings.txt"}


def text_set(name: str) -> tuple[str, ...]:
    """The sentences of the shipped set `name` (one of TEXT_SETS), in file order."""
    if name not in TEXT_SETS:
        raise ValueError(f"unknown text set {name!r}: use one of {', '.join(TEXT_SETS)}")
    return read_sentences(TEXT_SETS[name])


@cache
def read_sentences(filename: str) -> tuple[str, ...]:
    """The sentences of the package data file lowbit/calib/data/<filename>: one per line, stripped, in file order;
    blank lines and lines starting with "#" skipped. Read once (cached); FileNotFoundError if the file is missing,
    ValueError if it holds no sentence."""
    path = resources.files("lowbit.calib").joinpath("data", filename)
    if not path.is_file():
        raise FileNotFoundError(f"lowbit's text set {path} is missing: reinstall lowbit (it is package data)")
    lines = path.read_text(encoding="utf-8").splitlines()
    sentences = tuple(s.strip() for s in lines if s.strip() and not s.startswith("#"))
    if not sentences:
        raise ValueError(f"lowbit's text set {path} holds no sentence")
    return sentences


def spread(sentences, limit: int | None) -> list[str]:
    """`limit` sentences taken evenly over `sentences` (all of them when None or more)."""
    sentences = list(sentences)
    if limit is None or limit >= len(sentences):
        return sentences
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit={limit!r} must be a positive int (the number of sentences) or None")
    return [sentences[i * len(sentences) // limit] for i in range(limit)]


def padded_batches(tokenizer, sentences, batch_size: int = 8, max_length: int = 256) -> CalibrationSet:
    """`sentences` in order, `batch_size` at a time, as `tokenizer(batch, padding=True)` gives them: each item is
    `(features,)` (input_ids, attention_mask, ...) for a sentence-transformers model's `model(features)`.

    Unlike `lowbit.calib.minilm.sentence_batches` (batched by exact length), shorter sentences carry padding, as in
    a user's own calibration loop."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive int")
    sentences = list(sentences)
    if not sentences:
        raise ValueError("padded_batches needs at least one sentence")
    items = [(dict(tokenizer(sentences[i:i + batch_size], padding=True, truncation=True, max_length=max_length,
                             return_tensors="pt")),) for i in range(0, len(sentences), batch_size)]
    return CalibrationSet(items, f"{len(sentences)} sentences in {len(items)} padded batches of {batch_size}")
