"""Calibration from text: a .txt / .jsonl file or a folder of them, tokenized with the model's own tokenizer.

What llm-compressor users pass (a text file or dataset and a tokenizer), as lowbit calibration items:
  - FILE.txt: one text per non-empty line;
  - FILE.jsonl: one JSON object per line with a "text" field (or a JSON string per line);
  - FOLDER: every .txt / .jsonl file in it, in name order.
The first `samples` texts are tokenized (truncated to `seq_len` tokens) and batched by exact token count, so no
batch holds padding; each item is {"input_ids": (B, L), "attention_mask": (B, L) ones} for model(**item), or
`(features,)` for a model that takes one features dict (a SentenceTransformer).
"""

from __future__ import annotations

import json
from pathlib import Path

from .sources import CalibrationSet

TEXT_SUFFIXES = (".txt", ".jsonl")
DEFAULT_SEQ_LEN = 512
DEFAULT_SAMPLES = 128


def is_text_source(spec) -> bool:
    """A .txt / .jsonl file, or a folder holding some (and so not a folder of tensor files)."""
    path = Path(str(spec))
    if path.is_file():
        return path.suffix in TEXT_SUFFIXES
    return path.is_dir() and any(p.suffix in TEXT_SUFFIXES for p in path.iterdir())


def _jsonl_texts(path: Path) -> list[str]:
    texts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise ValueError(f"{path} line {number} is not JSON ({e})") from None
        text = row.get("text") if isinstance(row, dict) else row
        if not isinstance(text, str):
            raise ValueError(f"{path} line {number}: expected an object with a string \"text\" field (or a JSON "
                             f"string), got {line[:60]!r}")
        if text.strip():
            texts.append(text)
    return texts


def read_texts(source) -> list[str]:
    """The texts of a .txt / .jsonl file or of every such file in a folder (name order); ValueError when none."""
    path = Path(str(source))
    if not path.exists():
        raise FileNotFoundError(f"calibration text {path} does not exist")
    files = sorted(p for p in path.iterdir() if p.suffix in TEXT_SUFFIXES and p.is_file()) if path.is_dir() else [path]
    texts = []
    for f in files:
        if f.suffix not in TEXT_SUFFIXES:
            raise ValueError(f"calibration text {f}: expected a {' or '.join(TEXT_SUFFIXES)} file")
        texts += _jsonl_texts(f) if f.suffix == ".jsonl" else [t for t in f.read_text("utf-8").splitlines()
                                                              if t.strip()]
    if not texts:
        raise ValueError(f"calibration text {path} holds no text")
    return texts


def load_tokenizer(folder):
    """The tokenizer saved in `folder` (transformers' AutoTokenizer, local files only)."""
    if folder is None:
        raise ValueError("calibration from text needs the model's tokenizer: pass --tokenizer DIR (a folder with "
                         "tokenizer.json / vocab files, e.g. the model's own folder)")
    if not Path(str(folder)).is_dir():
        raise FileNotFoundError(f"--tokenizer {folder}: no such folder")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as e:
        raise ValueError(f"--tokenizer {folder}: no tokenizer could be loaded from it ({e})") from None


def _check_count(value, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what}={value!r} must be a positive int")


def text_calibration(source, tokenizer, seq_len: int = DEFAULT_SEQ_LEN, samples: int = DEFAULT_SAMPLES,
                     batch_size: int = 8, one_argument: bool = False) -> CalibrationSet:
    """Items for `lowbit.quantize(..., calibration=)` from the texts of `source` (see the module docstring).

    tokenizer: a transformers tokenizer, or the folder holding one. seq_len: tokens per text at most (longer texts
    are truncated). samples: how many texts (the first ones). one_argument: items are `(features,)` instead of
    keyword arguments."""
    for value, what in ((seq_len, "seq_len"), (samples, "samples"), (batch_size, "batch_size")):
        _check_count(value, what)
    texts = read_texts(source)[:samples]
    if isinstance(tokenizer, (str, Path)) or tokenizer is None:
        tokenizer = load_tokenizer(tokenizer)
    ids = tokenizer(texts, truncation=True, max_length=seq_len)["input_ids"]
    by_length: dict[int, list[list[int]]] = {}
    for row in ids:
        by_length.setdefault(len(row), []).append(row)
    items = []
    import torch

    for _, rows in sorted(by_length.items()):
        for i in range(0, len(rows), batch_size):
            input_ids = torch.tensor(rows[i:i + batch_size])  # (B, L): one length per batch, no padding
            features = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
            items.append((features,) if one_argument else features)
    return CalibrationSet(items, f"{len(texts)} texts of {source} (at most {seq_len} tokens) in {len(items)} "
                          "unpadded batches")
