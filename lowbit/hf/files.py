"""What the weight files of a folder hold, checked before transformers reads a byte of them.

transformers initialises at random every parameter it finds no tensor for, with a log line at most; the lowbit
quantizer refuses such a folder instead (`check_covers_model`). `read_lowbit_header` collects the lowbit metadata
of the (possibly sharded) safetensors files a lowbit folder holds and checks it as `lowbit.load` does.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..checkpoint.errors import CheckpointError
from ..checkpoint.header import METADATA_KEY, parse_metadata, split_entries
from ..checkpoint.safetensors_io import TensorEntry, read_header


def file_entries(files: list[str]) -> dict[str, TensorEntry | None]:
    """{tensor name: entry} over the checkpoint files (None for a .bin/.pt tensor, whose header is not read)."""
    out: dict[str, TensorEntry | None] = {}
    for f in files:
        if str(f).endswith(".safetensors"):
            entries, _, _ = read_header(Path(f))
            out.update(entries)
        else:
            out.update(dict.fromkeys(torch.load(f, map_location="meta", weights_only=True, mmap=True)))
    return out


def read_lowbit_header(files: list[str]) -> tuple[dict, dict[str, TensorEntry]]:
    """(lowbit metadata body, {tensor: entry}) of a lowbit folder's safetensors files; CheckpointError otherwise.

    Each shard carries the metadata of the whole model (what save_pretrained writes); their `quantized` maps are
    merged, then checked against the tensors of all shards together.
    """
    body, entries = None, {}
    for f in files:
        if not str(f).endswith(".safetensors"):
            raise CheckpointError(f"{f}: a lowbit folder's weights must be .safetensors files")
        found, meta, _ = read_header(Path(f))
        if METADATA_KEY not in meta:
            raise CheckpointError(f"{f} has no lowbit metadata, but the folder's config.json says quant_method "
                                  "'lowbit': the weights are not the packed ones (rewrite the folder with lowbit "
                                  "convert, or drop quantization_config from config.json for a float model)")
        part = parse_metadata(f, meta)
        if body is None:
            body = part
        else:
            body["quantized"].update(part["quantized"])
            body["input_scales"] = sorted({*body.get("input_scales", []), *part.get("input_scales", [])})
        entries.update(found)
    if body is None:
        raise CheckpointError("a lowbit folder needs weight files; none were found")
    if "static" in body:
        raise CheckpointError(f"{files[0]} is a static int8 checkpoint: load it with lowbit.from_pretrained")
    split_entries(files[0], entries, body["quantized"], body.get("input_scales", []))
    return body, entries


def _strip(name: str, prefix: str) -> str:
    return name[len(prefix) + 1:] if prefix and name.startswith(prefix + ".") else name


def check_covers_model(model, files: list[str], in_files: dict, folder: str) -> None:
    """Every tensor the model loads must be in the files, as transformers would place it (with or without the
    base model prefix); tied copies and the model's own ignore list excepted. ValueError naming the first ones."""
    prefix = getattr(model, "base_model_prefix", "") or ""
    have = {_strip(n, prefix) for n in in_files}
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    ignore = [re.compile(p) for p in (getattr(model, "_keys_to_ignore_on_load_missing", None) or [])]
    missing = sorted(k for k in model.state_dict() if _strip(k, prefix) not in have and k not in tied
                     and not any(p.search(k) for p in ignore))
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ValueError(f"{folder}: the weight files {[Path(f).name for f in files]} hold no tensor for "
                         f"{missing[:5]}{more}; transformers would initialise them at random, so the lowbit "
                         "quantizer refuses the folder (is it the model config.json describes?)")


def check_places_packed(model, in_files: dict, folder: str) -> None:
    """Every packed tensor in the files must have a buffer of that name in the (swapped) model."""
    prefix = getattr(model, "base_model_prefix", "") or ""
    model_names = {_strip(k, prefix) for k in model.state_dict()}
    stray = sorted(n for n in in_files if n.endswith(("_packed", "_scale", "_zero")) and _strip(n, prefix)
                   not in model_names)
    if stray:
        raise ValueError(f"{folder}: packed tensors {stray[:5]} have no place in the model; transformers would drop "
                         "them and leave layers at random (wrong model class for this folder?)")
