"""`from_pretrained`: a lowbit checkpoint (or a folder holding one with a Hugging Face config.json) -> a ready model."""

from __future__ import annotations

from pathlib import Path

import torch

from .hf_folder import CONFIG_NAME
from .load import load
from .shards import checkpoint_in_folder


def _checkpoint_file(path: Path) -> Path:
    if path.is_dir():
        return checkpoint_in_folder(path)  # model.safetensors, or a sharded index
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    return path


def _build_from_config(folder: Path) -> torch.nn.Module:
    """The float architecture from config.json, with transformers (optional); weights are replaced by the load."""
    try:
        from transformers import AutoConfig, AutoModel
    except ImportError as e:
        raise ImportError(f"building a model from {folder / CONFIG_NAME} needs transformers (pip install "
                          f"transformers), or pass model= the float model to load into ({e})") from None
    config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    return AutoModel.from_config(config)


def from_pretrained(path: str | Path, model: torch.nn.Module | None = None, backend=None) -> torch.nn.Module:
    """Load a lowbit checkpoint into a model and return it ready to run (eval mode).

    path: a lowbit checkpoint file, or a folder holding one as model.safetensors (what `lowbit convert MODEL OUT/`
    writes, with the model's config.json beside it). model: the float model to load into (any nn.Module, also a
    wrapper such as a SentenceTransformer around the converted model); when None, the folder's config.json is
    built with transformers' AutoModel (an optional dependency; ImportError saying so when it is missing).
    backend: a `lowbit.BackendConfig`. Every check of `lowbit.load` applies.
    """
    path = Path(path)
    file = _checkpoint_file(path)
    if model is None:
        if not (file.parent / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"no {CONFIG_NAME} next to {file} to build the model from; pass model= the "
                                    "float model the checkpoint was made from")
        model = _build_from_config(file.parent)
    return load(model, file, backend=backend).eval()
