"""Calibration tokens for a decoder folder: `--calib` as text, token files, a function, or random ids."""

from __future__ import annotations

import json
from pathlib import Path

import torch

TEXT_SUFFIXES = (".txt", ".jsonl")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "tokenizer_config.json")


def _text(path: Path) -> str:
    if path.suffix == ".jsonl":  # one JSON object per line with a "text" field (as most corpora ship)
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return "\n\n".join(d["text"] if isinstance(d, dict) else str(d) for d in lines)
    return path.read_text()


def text_windows(path: Path, folder: Path, limit: int, seq_len: int) -> list[torch.Tensor]:
    """The text of `path` tokenized with the tokenizer in `folder`, cut into at most `limit` windows of `seq_len`."""
    from transformers import AutoTokenizer

    if not any((folder / f).is_file() for f in _TOKENIZER_FILES):
        raise ValueError(f"--calib {path}: {folder} holds no tokenizer ({', '.join(_TOKENIZER_FILES)}); pass the "
                         "tokenizer's folder with --tokenizer DIR")
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    ids = torch.tensor(tokenizer(_text(path))["input_ids"], dtype=torch.long)
    n = min(limit, len(ids) // seq_len)
    if n == 0:
        raise ValueError(f"--calib {path}: {len(ids)} tokens, fewer than one window of --seq-len {seq_len}")
    return [ids[i * seq_len:(i + 1) * seq_len].unsqueeze(0) for i in range(n)]


def random_tokens(vocab: int, limit: int, seq_len: int, seed: int = 0) -> list[torch.Tensor]:
    """`limit` windows of uniformly random token ids (synthetic models, benchmarks)."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (1, seq_len), generator=gen) for _ in range(limit)]


def calibration_tokens(spec: str, folder: str | Path, limit: int | None = None, seq_len: int = 512,
                       tokenizer: str | Path | None = None) -> list:
    """--calib for a decoder folder: a .txt/.jsonl file (tokenized with the tokenizer in `tokenizer`, default the
    model's `folder`, and cut into windows), 'random' (random ids), or any `lowbit.calib` source whose items are
    token ids or dicts with input_ids (and attention_mask)."""
    folder, limit = Path(folder), limit or 128
    if spec == "random":
        config = json.loads((folder / "config.json").read_text())
        return random_tokens(config["vocab_size"], limit, seq_len)
    if Path(spec).suffix in TEXT_SUFFIXES and Path(spec).is_file():
        return text_windows(Path(spec), Path(tokenizer or folder), limit, seq_len)
    from ..calib import as_calibration

    items = []
    for item in as_calibration(spec, limit):
        items.append(item.args[0] if item.args else dict(item.kwargs))
    return items
