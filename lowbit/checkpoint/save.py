"""`save`: write a quantized model (or a dict of tensors and QuantizedWeights) as a lowbit checkpoint, atomically."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from pathlib import Path

import torch

from ..quant.formats import PackedWeight, is_packed_weight
from .errors import CheckpointError
from .external import data_path_for, external_record, file_header_digest, header_digest
from .header import INPUT_SCALE, build_metadata, tensor_name
from .outputs import check_output, pair_lock
from .safetensors_io import AtomicWriter, TensorEntry
from .sections import model_sections


def write_checkpoint(path: str | Path, tensors: list[TensorEntry], quantized: dict[str, dict],
                     fill: Callable[[AtomicWriter], None], external_data: bool = False,
                     inputs: Iterable[Path] = (), sections: dict | None = None,
                     input_scales: list[str] | None = None) -> None:
    """Plan a checkpoint of these tensors, let `fill(writer)` write each one, then publish the file(s) atomically.

    inputs: files the tensors are read from; an output that is one of them is refused before anything is written,
    as is an output that exists and is not a regular file. With external_data the tensors go to `<path>.data` and
    `path` keeps only the metadata; both are published under `pair_lock` (data file first), then the data file's
    header is read back, so a run that raced another writer of the same output fails instead of reporting success
    for a pair that does not match. sections: {kind: header object} (lowbit.checkpoint.sections).
    """
    path, inputs = Path(path), list(inputs)
    check_output(path, inputs)
    with ExitStack() as stack:
        if external_data:
            data_path = data_path_for(path)
            check_output(data_path, inputs)
            data = stack.enter_context(AtomicWriter(data_path, tensors, {"lowbit.external_of": path.name}))
            meta = build_metadata(quantized, external_record(path, data.header), sections, input_scales)
            main = stack.enter_context(AtomicWriter(path, [], meta))
            fill(data)
            with pair_lock(data_path.parent if str(data_path.parent) else Path(".")):
                check_output(path)  # both outputs still writable, so the first rename is not left alone
                data.commit()
                main.commit()
                _check_published(path, data_path, data.header)
        else:
            meta = build_metadata(quantized, None, sections, input_scales)
            main = stack.enter_context(AtomicWriter(path, tensors, meta))
            fill(main)
            main.commit()


def _check_published(path: Path, data_path: Path, header: bytes) -> None:
    if file_header_digest(data_path) != header_digest(header):
        raise CheckpointError(f"{data_path} was replaced by another writer while {path} was being written, so the "
                              f"pair on disk does not match; write {path} again (one writer at a time)")


def checkpoint_tensors(model_or_state_dict) -> tuple[dict[str, torch.Tensor], dict[str, PackedWeight]]:
    """(plain tensors, quantized weights) of a quantized model or of a dict of Tensor / packed-weight values (any
    registered format)."""
    if isinstance(model_or_state_dict, torch.nn.Module):
        from ..nn import quantized_weights

        model = model_or_state_dict
        quantized = dict(quantized_weights(model))
        fields = {tensor_name(p, f) for p, qw in quantized.items() for f in qw.tensors()}
        plain = {k: v for k, v in model.state_dict().items() if k not in fields}
    elif isinstance(model_or_state_dict, Mapping):
        quantized = {k: v for k, v in model_or_state_dict.items() if is_packed_weight(v)}
        plain = {k: v for k, v in model_or_state_dict.items() if not is_packed_weight(v)}
    else:
        raise TypeError(f"save() takes an nn.Module or a dict of tensors, got {type(model_or_state_dict).__name__}")
    for k, v in plain.items():
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"state dict entry {k!r} is a {type(v).__name__}; only tensors and QuantizedWeight "
                            "are saved")
    return plain, quantized


def save(model_or_state_dict, path: str | Path, external_data: bool = False) -> Path:
    """Write a lowbit checkpoint (safetensors + lowbit metadata, see docs/FORMAT.md); returns the path.

    model_or_state_dict: a model quantized by `lowbit.quantize`, or a dict mapping names to tensors (kept as is) and
    to QuantizedWeight (stored as `<name>_packed/_scale/_zero` plus metadata) or a packed weight of another registered
    format (`<name>_<field>` per tensor). Atomic: the file is written to a temporary file in the same directory and
    renamed; on any failure an earlier file at `path` is left untouched.
    external_data: put the tensors in `<path>.data` and keep `path` small (MNN's --saveExternalData).
    """
    plain, quantized = checkpoint_tensors(model_or_state_dict)
    flat: dict[str, torch.Tensor] = dict(plain)
    for p, qw in quantized.items():
        for f, t in qw.tensors().items():
            name = tensor_name(p, f)
            if name in flat:
                raise CheckpointError(f"tensor name {name!r} of quantized weight {p!r} collides with a plain tensor")
            flat[name] = t
    for k, v in flat.items():
        if v.device.type == "meta":
            raise CheckpointError(f"tensor {k!r} is on the meta device and has no values to save; load weights first")
    entries = [TensorEntry(k, v.dtype, tuple(v.shape)) for k, v in flat.items()]

    def fill(writer: AtomicWriter) -> None:
        for k, v in flat.items():
            writer.write(k, v)

    sections = model_sections(model_or_state_dict) if isinstance(model_or_state_dict, torch.nn.Module) else None
    input_scales = [p for p in quantized if tensor_name(p, INPUT_SCALE) in plain]  # AWQ vectors: format 3
    write_checkpoint(path, entries, {p: qw.metadata() for p, qw in quantized.items()}, fill, external_data,
                     sections=sections, input_scales=input_scales)
    return Path(path)
