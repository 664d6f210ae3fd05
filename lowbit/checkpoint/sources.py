"""Float checkpoints on disk, read one tensor at a time: safetensors, sharded safetensors, torch .pt/.bin.

`open_source(path)` returns a `Source` whose `entries` give every tensor's dtype and shape without reading data and
whose `get(name)` materialises one tensor. safetensors files are parsed by lowbit and read tensor by tensor with
plain reads (no memory map, so the source never accumulates in the resident set); torch files are read with
`weights_only=True` (no arbitrary unpickling) and `mmap=True` (their pages, once read, count as resident
page cache until the conversion ends).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from .errors import CheckpointError
from .safetensors_io import TensorEntry, read_header

TORCH_SUFFIXES = (".pt", ".pth", ".bin")


class Source:
    """Tensors of a float checkpoint: `entries` (name -> TensorEntry, in file order) and `get(name)`."""

    def __init__(self, path: Path, entries: dict[str, TensorEntry], getter):
        self.path, self.entries, self._get = path, entries, getter

    def get(self, name: str) -> torch.Tensor:
        return self._get(name)


def _read_tensor(path: Path, data_start: int, e: TensorEntry) -> torch.Tensor:
    # Plain reads, not a memory map: mapped source pages would stay in the resident set for the whole conversion.
    t = torch.empty(e.shape, dtype=e.dtype)
    if e.nbytes:
        with open(path, "rb") as f:
            f.seek(data_start + e.begin)
            if f.readinto(t.reshape(-1).view(torch.uint8).numpy()) != e.nbytes:
                raise CheckpointError(f"{path} is truncated: tensor {e.name!r} could not be read whole")
    return t


def _safetensors_shards(files: dict[str, Path]) -> Source:
    """Tensors spread over safetensors files: files maps tensor name -> file (one file for unsharded)."""
    headers: dict[Path, tuple[dict, int]] = {}
    entries: dict[str, TensorEntry] = {}
    for name, file in files.items():
        if file not in headers:
            if not file.is_file():
                raise FileNotFoundError(f"shard {file} listed in the index does not exist")
            found, meta, data_start = read_header(file)
            if "lowbit" in meta:
                raise CheckpointError(f"{file} is already a lowbit checkpoint; convert takes a float checkpoint")
            headers[file] = (found, data_start)
        found, _ = headers[file]
        if name not in found:
            raise CheckpointError(f"{file} has no tensor {name!r} although the index lists it there")
        entries[name] = found[name]
    return Source(next(iter(headers), Path()), entries,
                  lambda n: _read_tensor(files[n], headers[files[n]][1], entries[n]))


def _open_safetensors(path: Path) -> Source:
    found, _, _ = read_header(path)
    return _safetensors_shards({n: path for n in sorted(found, key=lambda n: found[n].begin)})


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
