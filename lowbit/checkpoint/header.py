"""The lowbit metadata in a checkpoint's safetensors header, and the checks that run before any tensor is used.

The safetensors "__metadata__" holds one key, "lowbit", whose value is a JSON object (see docs/FORMAT.md):

    {"format": "lowbit.checkpoint", "version": 1, "lowbit_version": "0.1.0",
     "quantized": {"<module>.<param>": QuantizedWeight.metadata(), ...},
     "external_data": null | {"file": "<name>", "header_sha256": "<hex>"}}

A quantized parameter P of module m is stored as tensors "m.P_packed", "m.P_scale", "m.P_zero" (zero only when
asymmetric; scale and zero absent for bits=16); every other tensor is a float (or integer) tensor kept as is.
"""

from __future__ import annotations

import json

import torch

from .. import __version__
from ..quant.format import QuantizedWeight
from ..quant.validate import check_metadata
from .errors import CheckpointError
from .safetensors_io import TensorEntry

FORMAT_NAME = "lowbit.checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "lowbit"
SUFFIXES = ("packed", "scale", "zero")
_SCALE_DTYPES = {"float16": torch.float16, "float32": torch.float32}


def tensor_name(param: str, field: str) -> str:
    """File name of one tensor field of a quantized parameter: "fc.weight" + "packed" -> "fc.weight_packed"."""
    return f"{param}_{field}"


def build_metadata(quantized: dict[str, QuantizedWeight | dict], external: dict | None = None) -> dict[str, str]:
    """The safetensors "__metadata__" dict for these quantized weights (QuantizedWeight or its metadata dict)."""
    body = {
        "format": FORMAT_NAME, "version": FORMAT_VERSION, "lowbit_version": __version__,
        "quantized": {k: (v.metadata() if isinstance(v, QuantizedWeight) else v) for k, v in sorted(quantized.items())},
        "external_data": external,
    }
    return {METADATA_KEY: json.dumps(body, sort_keys=True, separators=(",", ":"))}


def parse_metadata(path, meta: dict[str, str]) -> dict:
    """Decode and check the lowbit metadata of file `path`; CheckpointError naming the problem otherwise."""
    if METADATA_KEY not in meta:
        raise CheckpointError(f"{path} is a safetensors file but not a lowbit checkpoint (no {METADATA_KEY!r} "
                              "metadata); convert float checkpoints with `lowbit convert`")
    try:
        body = json.loads(meta[METADATA_KEY])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} has corrupted lowbit metadata (not valid JSON: {e})") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT_NAME:
        got = body.get("format") if isinstance(body, dict) else body
        raise CheckpointError(f"{path} has metadata format {got!r}, expected {FORMAT_NAME!r}")
    version = body.get("version")
    if not isinstance(version, int) or version < 1 or version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {version!r}, but this lowbit {__version__} reads "
                              f"versions 1..{FORMAT_VERSION}; upgrade lowbit")
    if not isinstance(body.get("quantized"), dict):
        raise CheckpointError(f"{path} has corrupted lowbit metadata: 'quantized' must be an object")
    for name, qmeta in body["quantized"].items():
        try:
            check_metadata(qmeta)
        except (ValueError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{path}: quantized tensor {name!r} has bad metadata: {e}") from None
    return body


def expected_entries(name: str, qmeta: dict, scale_dtype: torch.dtype = torch.float16) -> list[TensorEntry]:
    """The tensors (name, dtype, shape) a quantized parameter with this metadata is stored as."""
    fields = check_metadata(qmeta)
    shell = QuantizedWeight(packed=None, scale=None, zero=None, **fields)
    out = []
    for field, shape in shell.expected_shapes().items():
        dtype = (torch.float16 if shell.is_float else torch.uint8) if field == "packed" else scale_dtype
        out.append(TensorEntry(tensor_name(name, field), dtype, tuple(shape)))
    return out


def split_entries(path, entries: dict[str, TensorEntry], quantized: dict[str, dict]) -> tuple[dict, list[str]]:
    """Group tensor names by quantized parameter and list the float ones; refuse contradictions between the two.

    Returns ({param: {field: tensor name}}, [float tensor names]).
    """
    groups: dict[str, dict[str, str]] = {}
    for name, qmeta in quantized.items():
        fields = check_metadata(qmeta)
        shell = QuantizedWeight(packed=None, scale=None, zero=None, **fields)
        groups[name] = {}
        for field, shape in shell.expected_shapes().items():
            tname = tensor_name(name, field)
            if tname not in entries:
                raise CheckpointError(f"{path} is missing tensor {tname!r} of quantized weight {name!r}")
            if entries[tname].shape != tuple(shape):
                raise CheckpointError(f"{path}: tensor {tname!r} has shape {list(entries[tname].shape)}, but the "
                                      f"metadata of {name!r} ({fields['bits']} bits, shape {list(fields['shape'])}) "
                                      f"implies {list(shape)}")
            groups[name][field] = tname
    claimed = {t for g in groups.values() for t in g.values()}
    floats = []
    for tname in entries:
        if tname in claimed:
            continue
        base, _, field = tname.rpartition("_")
        if field in SUFFIXES and base in quantized:
            raise CheckpointError(f"{path}: tensor {tname!r} is not used by the metadata of {base!r} "
                                  f"(symmetric={quantized[base].get('symmetric')}, bits={quantized[base].get('bits')})")
        floats.append(tname)
    return groups, floats
