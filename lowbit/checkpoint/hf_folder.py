"""Hugging Face model folders: the files that travel with the weights (config.json, tokenizer), copied atomically.

A hub download (the `~/.cache/huggingface/hub/models--org--name/snapshots/<rev>/` layout) holds every file as a
symbolic link into the repository's `blobs/`: a link is followed when it resolves to a regular file inside the
folder, or, for a snapshot folder, inside its repository cache (`../../blobs`); a dangling link, a link to anything
but a regular file and a link elsewhere are refused naming the file (never skipped, never copied blindly).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from .outputs import write_file_atomic
from .sources import read_json

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
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


def _link_root(folder: Path) -> Path:
    """Where links of `folder` may point: the folder itself, or a hub snapshot's repository cache."""
    real = folder.resolve()
    return real.parent.parent if real.parent.name == "snapshots" else real


def model_file(folder: Path, name: str) -> Path | None:
    """`folder/name` when present and readable as a regular file (a link followed as the module docstring says);
    None when absent; CheckpointError naming the file otherwise."""
    from .errors import CheckpointError

    path = folder / name
    if not os.path.lexists(path):
        return None
    if path.is_symlink():
        target = Path(os.path.realpath(path))
        if not target.exists():
            raise CheckpointError(f"{path} is a dangling symbolic link (to {os.readlink(path)}); download the model "
                                  "again or copy the file into the folder")
        root = _link_root(folder)
        if root != target.parent and root not in target.parents:
            raise CheckpointError(f"{path} is a symbolic link to {target}, outside {root}; copy the file into the "
                                  "folder if it belongs to this model")
    if not path.is_file():
        raise CheckpointError(f"{path} is not a regular file (or a link to one); a model folder's {name} must be")
    return path


def carried_files(folder: Path) -> list[Path]:
    """The tokenizer and generation files present in `folder` (regular files, or links to one; see model_file)."""
    return [f for f in (model_file(folder, n) for n in CARRIED_FILES) if f is not None]


def config_file(folder: Path) -> Path | None:
    """The folder's config.json, checked to be a JSON object (None when there is none)."""
    path = model_file(folder, CONFIG_NAME)
    if path is not None:
        read_config(path)
    return path


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
