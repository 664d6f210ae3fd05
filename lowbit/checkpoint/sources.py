"""Float checkpoints on disk, read one tensor at a time: safetensors, sharded safetensors, torch .pt/.bin.

`open_source(path)` returns a `Source` whose `entries` give every tensor's dtype and shape without reading data and
whose `get(name)` materialises one tensor. torch files are read with `weights_only=True` (no arbitrary unpickling)
and `mmap=True`, so neither format pulls the whole model into memory.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from .errors import CheckpointError
from .safetensors_io import DTYPES, TensorEntry

TORCH_SUFFIXES = (".pt", ".pth", ".bin")


class Source:
    """Tensors of a float checkpoint: `entries` (name -> TensorEntry, in file order) and `get(name)`."""

    def __init__(self, path: Path, entries: dict[str, TensorEntry], getter):
        self.path, self.entries, self._get = path, entries, getter

    def get(self, name: str) -> torch.Tensor:
        return self._get(name)


def _safetensors_shards(files: dict[str, Path]) -> Source:
    """Tensors spread over safetensors files: files maps tensor name -> file."""
    from safetensors import safe_open

    handles: dict[Path, object] = {}
    entries: dict[str, TensorEntry] = {}
    for name, file in files.items():
        if file not in handles:
            if not file.is_file():
                raise FileNotFoundError(f"shard {file} listed in the index does not exist")
            handles[file] = safe_open(str(file), framework="pt")
        sl = handles[file].get_slice(name)
        dtype = sl.get_dtype()
        if dtype not in DTYPES:
            raise CheckpointError(f"{file}: tensor {name!r} has dtype {dtype}, which lowbit cannot convert")
        entries[name] = TensorEntry(name, DTYPES[dtype], tuple(sl.get_shape()))
    return Source(next(iter(handles), Path()), entries, lambda n: handles[files[n]].get_tensor(n))


def _open_safetensors(path: Path) -> Source:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            names, meta = list(f.keys()), f.metadata() or {}
    except SafetensorError as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None
    if "lowbit" in meta:
        raise CheckpointError(f"{path} is already a lowbit checkpoint; convert takes a float checkpoint")
    return _safetensors_shards({n: path for n in names})


def _open_index(path: Path) -> Source:
    try:
        weight_map = json.loads(path.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} is not a sharded-checkpoint index (need a 'weight_map' object): {e}") from None
    return _safetensors_shards({name: path.parent / shard for name, shard in weight_map.items()})


def _open_torch(path: Path) -> Source:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e):
            raise CheckpointError(f"{path} could not be read with torch.load(weights_only=True): {e}") from None
        warnings.warn(f"{path} uses torch's legacy format, which cannot be memory-mapped; reading it whole",
                      stacklevel=3)
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError and others for foreign files
        raise CheckpointError(f"{path} could not be read with torch.load(weights_only=True): {e}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict (a dict of tensors)")
    entries = {k: TensorEntry(k, v.dtype, tuple(v.shape)) for k, v in obj.items()}
    return Source(path, entries, lambda n: obj[n])


def open_source(path: str | Path) -> Source:
    """Open a float checkpoint: a .safetensors file, an HF `*.index.json`, a torch .pt/.pth/.bin, or a directory
    holding one of them (model.safetensors, model.safetensors.index.json, pytorch_model.bin)."""
    path = Path(path)
    if path.is_dir():
        for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"):
            if (path / name).is_file():
                return open_source(path / name)
        raise FileNotFoundError(f"{path} holds no model.safetensors, model.safetensors.index.json or pytorch_model.bin")
    if not path.is_file():
        raise FileNotFoundError(f"input checkpoint {path} does not exist")
    if path.name.endswith(".index.json"):
        return _open_index(path)
    if path.suffix in TORCH_SUFFIXES:
        return _open_torch(path)
    if path.suffix == ".safetensors":
        return _open_safetensors(path)
    raise CheckpointError(f"{path}: unknown checkpoint type; expected .safetensors, *.index.json, .pt, .pth or .bin")
