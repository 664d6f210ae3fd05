"""Float checkpoints on disk, read one tensor at a time: safetensors, sharded safetensors, torch .pt/.bin.

`open_source(path)` returns a `Source` whose `entries` give every tensor's dtype and shape without reading data and
whose `get(name)` materialises one tensor. safetensors files are parsed by lowbit and read tensor by tensor with
plain reads (no memory map, so the source never accumulates in the resident set); torch files are read with
`weights_only=True` (no arbitrary unpickling) and `mmap=True` (their pages, once read, count as resident
page cache until the conversion ends; torch's legacy non-zip files are read whole, with a warning). A sharded
index may only name shards inside its own directory (no absolute path, no `..`); every file a source reads is in
`Source.files`, so that `convert` can refuse to write over one of them.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath

import torch

from .errors import CheckpointError
from .safetensors_io import TensorEntry, parse_json, read_header

TORCH_SUFFIXES = (".pt", ".pth", ".bin")


class Source:
    """Tensors of a float checkpoint: `entries` (name -> TensorEntry, in file order), `get(name)`, and `files`, every
    file it reads (index and shards): an output must be none of them."""

    def __init__(self, path: Path, entries: dict[str, TensorEntry], getter, files: list[Path] | None = None):
        self.path, self.entries, self._get = path, entries, getter
        self.files = files if files is not None else [path]

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
                  lambda n: _read_tensor(files[n], headers[files[n]][1], entries[n]), list(headers))


def _open_safetensors(path: Path) -> Source:
    found, _, _ = read_header(path)
    source = _safetensors_shards({n: path for n in sorted(found, key=lambda n: found[n].begin)})
    source.files = [path]  # also when the file holds no tensor
    return source


def read_json(path: Path, what: str):
    """A JSON file's content; CheckpointError naming `path` when it is not UTF-8 JSON."""
    try:
        return parse_json(path.read_bytes())
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{what} {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"{what} {path} is not valid JSON: {str(e)[:200]}") from None


def _shard_path(index: Path, tensor, shard) -> Path:
    """A shard named by the index: a relative path inside the index's directory (no absolute path, no `..`)."""
    if not isinstance(tensor, str) or not isinstance(shard, str) or not shard:
        raise CheckpointError(f"{index}: 'weight_map' must map tensor names to shard file names, got "
                              f"{str(tensor)[:80]!r}: {str(shard)[:80]!r}")
    rel = PurePosixPath(shard)
    if rel.is_absolute() or PureWindowsPath(shard).anchor or ".." in rel.parts or "\0" in shard:
        raise CheckpointError(f"{index}: shard {shard!r} of tensor {tensor!r} is outside the index's directory; "
                              "shards must be named relative to it, without '..'")
    return index.parent / rel


def _open_index(path: Path) -> Source:
    index = read_json(path, "sharded-checkpoint index")
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{path} is not a sharded-checkpoint index (need a 'weight_map' object)")
    if isinstance(index.get("metadata"), dict) and "lowbit" in index["metadata"]:
        raise CheckpointError(f"{path} indexes a lowbit checkpoint already; convert takes a float checkpoint")
    files = {name: _shard_path(path, name, shard) for name, shard in weight_map.items()}
    source = _safetensors_shards(files)
    source.files = [path, *dict.fromkeys(files.values())]
    return source


def _torch_load(path: Path):
    """torch.load(weights_only=True): memory-mapped for the zip format, read whole (with a warning) for torch's
    legacy format; CheckpointError naming the file for anything torch cannot read that way."""
    legacy = not zipfile.is_zipfile(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=not legacy)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError, KeyError, ... for foreign files
        kind = "legacy (non-zip) torch file" if legacy else "torch file"
        raise CheckpointError(f"{path} is not a {kind} that torch.load(weights_only=True) can read: "
                              f"{_first_line(e)}") from None
    if legacy:
        warnings.warn(f"{path} uses torch's legacy (non-zip) format, which cannot be memory-mapped; it was read whole",
                      stacklevel=4)
    return obj


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:300]}" if lines else type(e).__name__


def _open_torch(path: Path) -> Source:
    obj = _torch_load(path)
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
