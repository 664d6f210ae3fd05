"""Open a lowbit checkpoint: check its header and metadata, and view its tensors without copying or unpickling."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..quant.formats import PackedWeight
from .errors import CheckpointError
from .external import resolve_data_file
from .header import format_spec, parse_metadata, split_entries
from .safetensors_io import MappedFile, TensorEntry
from .shards import MappedShards, checkpoint_in_folder
from .values import check_values


@dataclass
class Checkpoint:
    """An opened checkpoint. `quantized`: param name -> metadata; `groups`: param -> {field: tensor name};
    `floats`: names of the plain tensors; `entries`: every tensor's dtype/shape; `data`: where the bytes are."""

    path: Path
    body: dict
    entries: dict[str, TensorEntry]
    groups: dict[str, dict[str, str]]
    floats: list[str]
    data: MappedFile
    file_bytes: int = 0
    external: Path | None = field(default=None)

    @property
    def quantized(self) -> dict[str, dict]:
        return self.body["quantized"]

    def tensor(self, name: str) -> torch.Tensor:
        """A zero-copy, copy-on-write view of one stored tensor."""
        return self.data.tensor(name)

    def quantized_weight(self, name: str) -> PackedWeight:
        """Rebuild one quantized parameter through its format (its tensors are views of the mapped file)."""
        tensors = {f: self.tensor(t) for f, t in self.groups[name].items()}
        spec = format_spec(self.path, name, self.quantized[name])
        try:
            return spec.from_tensors(tensors, self.quantized[name])
        except ValueError as e:
            raise CheckpointError(f"{self.path}: quantized tensor {name!r}: {e}") from None


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Open and fully check a lowbit checkpoint (and its external data file, if any).

    The one validation of a file: `lowbit.load` and `lowbit info` both open files through here, so a file `info`
    describes is a file `load` accepts (`load` then only checks it against the model). Besides the header, the
    stored numbers the forward uses are checked (lowbit/checkpoint/values.py).
    """
    path = Path(path)
    if path.is_dir():  # a model folder: model.safetensors, or a sharded index
        path = checkpoint_in_folder(path)
    main = MappedShards(path) if path.name.endswith(".index.json") else MappedFile(path)
    body = parse_metadata(path, main.metadata)
    data, external, size = main, None, getattr(main, "bytes", None) or path.stat().st_size
    if body.get("external_data") is not None:
        if main.entries:
            raise CheckpointError(f"{path} declares external data but also holds tensors {sorted(main.entries)[:3]}")
        external = resolve_data_file(path, body["external_data"])
        data = MappedFile(external)
        size += external.stat().st_size
    groups, floats = split_entries(path, data.entries, body["quantized"], body.get("input_scales", []))
    ckpt = Checkpoint(path, body, data.entries, groups, floats, data, size, external)
    check_values(ckpt)  # the numbers the forward computes with: scales, zeros, input scales, static steps
    return ckpt
