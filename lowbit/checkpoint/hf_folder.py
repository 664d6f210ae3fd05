"""Hugging Face model folders: the files that travel with the weights (config.json, tokenizer), copied atomically."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from .outputs import write_file_atomic
from .sources import read_json

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# Files a model folder needs besides its weights and config.json; copied as they are when present.
CARRIED_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                 "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model", "spiece.model",
                 "sentencepiece.bpe.model", "chat_template.jinja", "chat_template.json", "generation_config.json",
                 "preprocessor_config.json")


def read_config(path: Path) -> dict:
    """A config.json as a dict; CheckpointError naming the file when it is not a JSON object."""
    from .errors import CheckpointError

    config = read_json(path, "model config")
    if not isinstance(config, dict):
        raise CheckpointError(f"model config {path} is a JSON {type(config).__name__}, not an object")
    return config


def carried_files(folder: Path) -> list[Path]:
    """The tokenizer and generation files present in `folder` (regular files only)."""
    return [folder / n for n in CARRIED_FILES if (folder / n).is_file() and not (folder / n).is_symlink()]


def write_json(path: Path, obj: dict, inputs: Iterable[Path] = ()) -> None:
    """Write `obj` as indented JSON (as transformers writes config.json), atomically."""
    write_file_atomic(path, (json.dumps(obj, indent=2) + "\n").encode("utf-8"), inputs)


def copy_files(files: Iterable[Path], out_dir: Path, inputs: Iterable[Path] = ()) -> list[Path]:
    """Copy each file into `out_dir` under its own name, atomically; returns the written paths."""
    inputs, written = list(inputs), []
    for f in files:
        dst = out_dir / f.name
        write_file_atomic(dst, f.read_bytes(), [*inputs, f])
        written.append(dst)
    return written


def is_model_folder(path: Path) -> bool:
    """A folder holding a config.json next to its weights (what `from_pretrained` and `convert` accept)."""
    return path.is_dir() and (path / CONFIG_NAME).is_file()
