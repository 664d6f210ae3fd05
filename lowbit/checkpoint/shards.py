"""Sharded safetensors output, as Hugging Face writes it (`save_pretrained(max_shard_size=...)`).

Tensors are split into files `model-00001-of-0000N.safetensors` of at most `max_shard_size` bytes each (a tensor
larger than that gets a shard of its own; the tensors of one module stay in one shard), and
`model.safetensors.index.json` maps every tensor name to its file: {"metadata": {"total_size": bytes},
"weight_map": {name: file}}. One shard is written as plain `model.safetensors` without an index, as HF does.
A sharded lowbit checkpoint keeps its lowbit metadata in the index's "metadata" (next to "total_size"); each shard
is a plain safetensors file whose own metadata names the index (`SHARD_KEY`). `MappedShards` reads it back.
"""

from __future__ import annotations

import json
import re
from contextlib import ExitStack
from pathlib import Path

import torch

from .errors import CheckpointError
from .header import build_metadata
from .hf_folder import INDEX_NAME, WEIGHTS_NAME
from .outputs import write_file_atomic
from .safetensors_io import AtomicWriter, MappedFile, TensorEntry

SHARD_KEY = "lowbit.shard_of"  # a lowbit shard's own metadata: the index that holds the lowbit metadata

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20,
          "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str | int) -> int:
    """`"5GB"`, `"500MiB"`, `"2000000"` or an int -> bytes (HF's units: KB/MB/GB are powers of 10)."""
    if isinstance(text, int) and not isinstance(text, bool):
        size = text
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(text))
        if m is None or m.group(2).upper() not in _UNITS:
            raise ValueError(f"max shard size {text!r} is not a size such as 5GB, 500MB, 2GiB or a byte count")
        size = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if size < 1:
        raise ValueError(f"max shard size {text!r} must be at least 1 byte")
    return size


def _module(name: str) -> str:
    return name.rpartition(".")[0]


def split_shards(entries: list[TensorEntry], max_bytes: int | None) -> list[list[TensorEntry]]:
    """Tensors grouped by module, modules in name order, packed into shards of at most max_bytes (None: one)."""
    if max_bytes is None:
        return [list(entries)]
    by_module: dict[str, list[TensorEntry]] = {}
    for e in sorted(entries, key=lambda e: e.name):
        by_module.setdefault(_module(e.name), []).append(e)
    shards, current, size = [], [], 0
    for group in by_module.values():
        nbytes = sum(e.nbytes for e in group)
        if current and size + nbytes > max_bytes:
            shards.append(current)
            current, size = [], 0
        current, size = current + group, size + nbytes
    return shards + [current] if current or not shards else shards


def shard_names(count: int) -> list[str]:
    if count == 1:
        return [WEIGHTS_NAME]
    return [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]


class ShardedWriter:
    """`write(name, tensor)` into whichever shard holds `name`; `commit()` publishes every shard, then the index."""

    def __init__(self, folder: Path, entries: list[TensorEntry], metadata: dict[str, str], max_bytes: int | None):
        self.folder, self.shards, self.metadata = folder, split_shards(entries, max_bytes), metadata
        self.names = shard_names(len(self.shards))
        self._stack = ExitStack()
        self._writers: dict[str, AtomicWriter] = {}
        self.total = sum(e.nbytes for e in entries)

    def __enter__(self) -> ShardedWriter:
        for file, shard in zip(self.names, self.shards, strict=False):
            writer = self._stack.enter_context(AtomicWriter(self.folder / file, shard, self.metadata))
            self._writers.update({e.name: writer for e in shard})
        return self

    def write(self, name: str, tensor: torch.Tensor) -> None:
        self._writers[name].write(name, tensor)

    def commit(self, index_metadata: dict[str, str] | None = None) -> list[Path]:
        """Publish the shards, then (several shards) the index, its "metadata" holding index_metadata too."""
        for writer in dict.fromkeys(self._writers.values()):
            writer.commit()
        files = [self.folder / n for n in self.names]
        if len(self.names) > 1:
            weight_map = {e.name: file for file, shard in zip(self.names, self.shards, strict=False) for e in shard}
            index = {"metadata": {"total_size": self.total, **(index_metadata or {})},
                     "weight_map": dict(sorted(weight_map.items()))}
            write_file_atomic(self.folder / INDEX_NAME, (json.dumps(index, indent=2) + "\n").encode("utf-8"))
            files.append(self.folder / INDEX_NAME)
        return files

    def __exit__(self, *exc) -> None:
        self._stack.close()


def write_folder_checkpoint(folder: Path, tensors: list[TensorEntry], quantized: dict[str, dict], fill,
                            external_data: bool = False, max_shard_size: int | str | None = None) -> list[Path]:
    """A lowbit checkpoint in a model folder: `model.safetensors`, or with max_shard_size shards whose index holds
    the lowbit metadata (its "metadata" object: {"total_size": ..., "lowbit": "<json>"}); returns the files."""
    from .save import write_checkpoint

    max_bytes = parse_size(max_shard_size) if max_shard_size is not None else None
    if max_bytes is None or len(split_shards(tensors, max_bytes)) == 1:
        write_checkpoint(folder / WEIGHTS_NAME, tensors, quantized, fill, external_data)
        return [folder / WEIGHTS_NAME]
    with ShardedWriter(folder, tensors, {SHARD_KEY: INDEX_NAME}, max_bytes) as writer:
        fill(writer)
        return writer.commit(build_metadata(quantized))


class MappedShards:
    """A sharded lowbit checkpoint opened through its index: `entries`, `metadata` (the index's, as strings) and
    `tensor(name)` as `MappedFile` gives them, each tensor a view of its own shard."""

    def __init__(self, index_path: Path):
        from .sources import _shard_path, read_json

        self.path = Path(index_path)
        index = read_json(self.path, "sharded-checkpoint index")
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        metadata = index.get("metadata", {}) if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not isinstance(metadata, dict):
            raise CheckpointError(f"{self.path} is not a sharded-checkpoint index (need 'weight_map' and 'metadata' "
                                  "objects)")
        self.metadata = {k: v for k, v in metadata.items() if isinstance(v, str)}
        files = {name: _shard_path(self.path, name, shard) for name, shard in weight_map.items()}
        self.shards = {f: MappedFile(f) for f in dict.fromkeys(files.values())}
        self.entries, self._where = {}, {}
        for name, file in files.items():
            if name not in self.shards[file].entries:
                raise CheckpointError(f"{file} has no tensor {name!r} although {self.path} lists it there")
            self.entries[name], self._where[name] = self.shards[file].entries[name], file
        for file, shard in self.shards.items():
            extra = sorted(set(shard.entries) - set(self.entries))
            if extra:
                raise CheckpointError(f"{file} holds tensor {extra[0]!r}, which {self.path} does not list")

    def tensor(self, name: str) -> torch.Tensor:
        return self.shards[self._where[name]].tensor(name)

    @property
    def bytes(self) -> int:
        return sum(f.stat().st_size for f in self.shards) + self.path.stat().st_size


def checkpoint_in_folder(folder: Path) -> Path:
    """The checkpoint a model folder holds: model.safetensors, else its sharded index."""
    for name in (WEIGHTS_NAME, INDEX_NAME):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder} holds no {WEIGHTS_NAME} or {INDEX_NAME} (a lowbit checkpoint); convert the "
                            f"model first: lowbit convert MODEL_FOLDER {folder}/")
