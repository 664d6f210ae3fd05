"""The lowbit metadata in a checkpoint's safetensors header, and the checks that run before any tensor is used.

The safetensors "__metadata__" holds one key, "lowbit", whose value is a JSON object (see docs/FORMAT.md):

    {"format": "lowbit.checkpoint", "version": 1, "lowbit_version": "0.1.0",
     "quantized": {"<module>.<param>": <packed weight>.metadata(), ...},
     "external_data": null | {"file": "<name>", "header_sha256": "<hex>"}}

A quantized parameter P of module m is stored as tensors "m.P_packed", "m.P_scale", "m.P_zero" (zero only when
asymmetric; scale and zero absent for bits=16); every other tensor is a float (or integer) tensor kept as is.
A weight of another registered format (`lowbit.quant.formats`; its entry's "format" names it, none is affine) is
stored as "m.P_<field>" for each of its `tensors()`, checked against its spec's `expected_tensors`.
"""

from __future__ import annotations

import json
import math

import torch

from .. import __version__
from ..plugins import load_plugins
from ..quant.config import FLOAT_BITS, SCALE_DTYPES, QuantMethod, method_names
from ..quant.format import check_metadata, expected_shapes
from ..quant.formats import AFFINE, FormatSpec, format_of_metadata
from .errors import CheckpointError
from .safetensors_io import TensorEntry, dtype_name, is_count, parse_json
from .sections import CORE_KEYS, file_sections

FORMAT_NAME = "lowbit.checkpoint"
FORMAT_VERSION = 3  # 2: the optional "static" object; 3: "input_scales" (files with neither are still written as 1)
INPUT_SCALE = "input_scale"  # AWQ's per-input-channel vector of a Linear / conv weight: "fc.weight_input_scale"
METADATA_KEY = "lowbit"
SUFFIXES = ("packed", "scale", "zero")
_MAX_ELEMENTS = (1 << 63) - 1
STORED_METHODS = (*(m.value for m in QuantMethod), "fp16")  # what lowbit's writers put in a weight's "method"


def tensor_name(param: str, field: str) -> str:
    """File name of one tensor field of a quantized parameter: "fc.weight" + "packed" -> "fc.weight_packed"."""
    return f"{param}_{field}"


def build_metadata(quantized: dict, external: dict | None = None,
                   sections: dict[str, dict] | None = None, input_scales: list[str] | None = None) -> dict[str, str]:
    """The safetensors "__metadata__" dict for these quantized weights (packed weights of any registered format, or
    their metadata dicts).

    sections: {kind: object} of registered header sections (lowbit.checkpoint.sections; e.g. "static"), each
    raising the format version to its own. input_scales: quantized parameters stored with an AWQ input-scale vector
    (format 3; none: as before)."""
    metas = {k: (v if isinstance(v, dict) else v.metadata()) for k, v in sorted(quantized.items())}
    sections = sections or {}
    if CORE_KEYS & set(sections):
        raise ValueError(f"sections {sorted(CORE_KEYS & set(sections))} are core header keys")
    kinds = file_sections("a new checkpoint", sections)
    version = max([3 if input_scales else 1, *(s.version for s in kinds.values())])
    body = {
        "format": FORMAT_NAME, "version": version, "lowbit_version": __version__,
        "quantized": metas, "scheme": scheme_summary(metas), "external_data": external,
    }
    body.update(sections)
    if input_scales:
        body["input_scales"] = sorted(input_scales)
    return {METADATA_KEY: json.dumps(body, sort_keys=True, separators=(",", ":"))}


def scheme_summary(quantized: dict[str, dict]) -> dict:
    """The quantization_config-style summary: one group per (method, bits, block_size, symmetric) with its
    parameter names, so tools read the scheme without reading every entry (informational; `quantized` rules).
    Weights of other formats form one group per (format, bits) after those, with a "format" key."""
    groups: dict[tuple, list[str]] = {}
    others: dict[tuple, list[str]] = {}
    for name, m in quantized.items():
        if _is_affine(m):
            groups.setdefault((m["method"], m["bits"], m["block_size"], m["symmetric"]), []).append(name)
        else:
            bits = m.get("bits") if type(m.get("bits")) is int else None
            others.setdefault((str(m.get("format")), bits), []).append(name)
    out = [{"method": k[0], "bits": k[1], "block_size": k[2], "symmetric": k[3], "targets": sorted(v)}
           for k, v in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0], kv[0][3]))]
    out += [{"format": k[0], "bits": k[1], "targets": sorted(v)}
            for k, v in sorted(others.items(), key=lambda kv: (kv[0][0], str(kv[0][1])))]
    return {"groups": out}


def _is_affine(qmeta: dict) -> bool:
    """A `quantized` entry of the affine format (the one with no "format" too); entries were checked before."""
    try:
        return format_of_metadata(qmeta).name == AFFINE
    except ValueError:
        return True  # an unknown tag: only reached before the checks, which refuse it


def format_spec(path, name: str, qmeta) -> FormatSpec:
    """The registered format of one `quantized` entry; a one-line CheckpointError naming the file, the layer and
    the format when this lowbit does not know it."""
    fmt = qmeta.get("format") if isinstance(qmeta, dict) else None
    if isinstance(qmeta, dict) and "format" in qmeta and type(fmt) is not str:
        raise CheckpointError(f"{path}: quantized tensor {name!r} has bad metadata: format={str(fmt)[:40]} must be "
                              "a JSON str")
    try:
        return format_of_metadata(qmeta if isinstance(qmeta, dict) else {})
    except ValueError as e:
        raise CheckpointError(f"{path}: quantized tensor {name!r} (layer {name.rpartition('.')[0]!r}) is stored in "
                              f"format {str(fmt)[:40]!r}: {e}") from None


def parse_metadata(path, meta: dict[str, str]) -> dict:
    """Decode and check the lowbit metadata of file `path`; CheckpointError naming the problem otherwise.

    Numbers must be plain JSON integers (`bits: 4.9`, `true` or `"4"` are refused, never rounded or cast).
    """
    if METADATA_KEY not in meta:
        raise CheckpointError(f"{path} is a safetensors file but not a lowbit checkpoint (no {METADATA_KEY!r} "
                              "metadata); convert float checkpoints with `lowbit convert`")
    try:
        body = parse_json(meta[METADATA_KEY])
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"{path} has corrupted lowbit metadata (not valid JSON: {str(e)[:200]})") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT_NAME:
        got = body.get("format") if isinstance(body, dict) else body
        raise CheckpointError(f"{path} has metadata format {str(got)[:80]!r}, expected {FORMAT_NAME!r}")
    version = body.get("version")
    if type(version) is not int or version < 1 or version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {str(version)[:40]}, but this lowbit "
                              f"{__version__} reads versions 1..{FORMAT_VERSION}; upgrade lowbit")
    if not isinstance(body.get("quantized"), dict):
        raise CheckpointError(f"{path} has corrupted lowbit metadata: 'quantized' must be an object")
    if not isinstance(body.get("lowbit_version", ""), (str, type(None))):
        raise CheckpointError(f"{path} has corrupted lowbit metadata: 'lowbit_version' must be a string")
    for name, qmeta in body["quantized"].items():
        check_quantized_meta(path, name, qmeta)
    _check_input_scale_names(path, body)
    for kind, section in file_sections(path, body).items():
        try:
            section.check(path, body[kind])
        except ValueError as e:
            raise CheckpointError(str(e)) from None
    return body


def _check_input_scale_names(path, body: dict) -> None:
    names = body.get("input_scales", [])
    if names and body["version"] < 3:
        raise CheckpointError(f"{path} has 'input_scales' but declares format version {body['version']} (needs 3)")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"{path} has corrupted lowbit metadata: 'input_scales' must be a list of names")
    for n in names:
        if n not in body["quantized"] or len(body["quantized"][n].get("shape", [])) not in (2, 3, 4):
            raise CheckpointError(f"{path}: input scale of {n!r}, which is not a quantized 2-D (Linear), 3-D "
                                  "(Conv1d) or 4-D (Conv2d) weight")


def check_quantized_meta(path, name: str, qmeta) -> dict:
    """Check one `quantized` entry strictly (types first, then `check_metadata`'s ranges); its constructor fields.

    An entry of another registered format: the shape and dtype, then its spec's `expected_tensors` (returns the
    entry itself)."""
    where = f"{path}: quantized tensor {name!r} has bad metadata"
    if not isinstance(qmeta, dict):
        raise CheckpointError(f"{where}: expected an object, got {str(qmeta)[:80]!r}")
    shape = qmeta.get("shape")
    if not isinstance(shape, list) or len(shape) < 2 or not all(is_count(d) and d > 0 for d in shape) \
            or math.prod(shape) > _MAX_ELEMENTS:
        raise CheckpointError(f"{where}: shape {str(shape)[:80]} must be a list of at least two positive integers "
                              "(fewer than 2**63 elements)")
    spec = format_spec(path, name, qmeta)
    if spec.name != AFFINE:
        return _check_other_meta(where, spec, qmeta)
    for key, kind in (("version", int), ("bits", int), ("block_size", int), ("symmetric", bool),
                      ("dtype", str), ("method", str)):
        if type(qmeta.get(key)) is not kind:
            raise CheckpointError(f"{where}: {key}={str(qmeta.get(key))[:40]} must be a JSON {kind.__name__}")
    if qmeta["version"] < 1:
        raise CheckpointError(f"{where}: version={qmeta['version']} must be >= 1")
    stored = (*STORED_METHODS, *method_names())  # plus the methods registered in this process
    if qmeta["method"] not in stored:
        load_plugins()  # a method registered by a plug-in
        stored = (*STORED_METHODS, *method_names())
    if qmeta["method"] not in stored:
        raise CheckpointError(f"{where}: method={qmeta['method'][:40]!r} is unknown; files hold one of "
                              f"{list(dict.fromkeys(stored))} (a method added by a plug-in must be registered "
                              "before loading: see lowbit.plugins)")
    if (qmeta["method"] == "fp16") != (qmeta["bits"] == FLOAT_BITS):
        raise CheckpointError(f"{where}: method={qmeta['method']!r} with bits={qmeta['bits']}: float16 storage is "
                              f"method 'fp16' with bits {FLOAT_BITS}, and only that")
    try:
        return check_metadata(qmeta)
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{where}: {e}") from None


def _check_other_meta(where: str, spec: FormatSpec, qmeta: dict) -> dict:
    if type(qmeta.get("dtype")) is not str:
        raise CheckpointError(f"{where}: dtype={str(qmeta.get('dtype'))[:40]} must be a JSON str")
    try:
        spec.expected_tensors(qmeta)
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{where}: {e}") from None
    return qmeta


def _field_shapes(fields: dict) -> dict[str, tuple[int, ...]]:
    return expected_shapes(tuple(fields["shape"]), fields["bits"], fields["block_size"], fields["symmetric"])


def expected_entries(name: str, qmeta: dict, scale_dtype: torch.dtype = torch.float16) -> list[TensorEntry]:
    """The tensors (name, dtype, shape) a quantized parameter with this metadata is stored as."""
    fields = check_metadata(qmeta)
    packed_dtype = torch.float16 if fields["bits"] == FLOAT_BITS else torch.uint8
    return [TensorEntry(tensor_name(name, field), packed_dtype if field == "packed" else scale_dtype, tuple(shape))
            for field, shape in _field_shapes(fields).items()]


def _check_group(path, name: str, fields: dict, entries: dict[str, TensorEntry]) -> dict[str, str]:
    """The tensors of one quantized parameter: present, of the shape its metadata implies, and of a dtype the
    format allows (packed U8, or F16 for bits 16; scale F16 or F32; zero the scale's dtype)."""
    group = {}
    for field, shape in _field_shapes(fields).items():
        tname = tensor_name(name, field)
        if tname not in entries:
            raise CheckpointError(f"{path} is missing tensor {tname!r} of quantized weight {name!r}")
        e = entries[tname]
        if e.shape != tuple(shape):
            raise CheckpointError(f"{path}: tensor {tname!r} has shape {list(e.shape)}, but the metadata of "
                                  f"{name!r} ({fields['bits']} bits, shape {list(fields['shape'])}) implies "
                                  f"{list(shape)}")
        if field == "packed":
            allowed = (torch.float16,) if fields["bits"] == FLOAT_BITS else (torch.uint8,)
        else:
            allowed = (entries[group["scale"]].dtype,) if field == "zero" else tuple(SCALE_DTYPES.values())
        if e.dtype not in allowed:
            raise CheckpointError(f"{path}: quantized weight {name!r}, tensor {tname!r}: '{field}' has dtype "
                                  f"{e.dtype} ({dtype_name(e.dtype)}), expected "
                                  f"{' or '.join(f'{d} ({dtype_name(d)})' for d in allowed)}")
        group[field] = tname
    return group


def _group_of(path, name: str, qmeta: dict, entries: dict[str, TensorEntry]) -> dict[str, str]:
    spec = format_spec(path, name, qmeta)
    if spec.name == AFFINE:
        return _check_group(path, name, check_metadata(qmeta), entries)
    return _check_other_group(path, name, spec.expected_tensors(qmeta), entries)


def _check_other_group(path, name: str, specs: dict, entries: dict[str, TensorEntry]) -> dict[str, str]:
    """The tensors of a weight of another format: present, of the shape and one of the dtypes its spec names."""
    group = {}
    for field, (shape, dtypes) in specs.items():
        tname = tensor_name(name, field)
        e = entries.get(tname)
        if e is None:
            raise CheckpointError(f"{path} is missing tensor {tname!r} of quantized weight {name!r}")
        if e.shape != tuple(shape) or e.dtype not in dtypes:
            raise CheckpointError(f"{path}: tensor {tname!r} is {dtype_name(e.dtype)} {list(e.shape)}, but the "
                                  f"metadata of {name!r} implies {list(shape)} of "
                                  f"{' or '.join(dtype_name(d) for d in dtypes)}")
        group[field] = tname
    return group


def _input_scale_fits(shape: list[int], length: int) -> bool:
    """A Linear's vector has K = shape[1] entries; a conv's (O, C_in/groups, *kernel) one per input channel,
    C_in = groups · shape[1] with groups dividing O (the loader checks the layer's own groups)."""
    per_group = shape[1]
    if len(shape) == 2 or per_group == 0:
        return length == per_group
    return length > 0 and length % per_group == 0 and shape[0] % (length // per_group) == 0


def _check_input_scales(path, entries: dict[str, TensorEntry], quantized: dict[str, dict], names) -> set[str]:
    """Each listed parameter's input-scale tensor: present, floating, one entry per input channel."""
    claimed = set()
    for name in names:
        tname, shape = tensor_name(name, INPUT_SCALE), quantized[name]["shape"]
        e = entries.get(tname)
        if e is None:
            raise CheckpointError(f"{path} is missing tensor {tname!r} (the input scale of {name!r})")
        if len(e.shape) != 1 or not _input_scale_fits(shape, e.shape[0]) or not e.dtype.is_floating_point:
            want = f"[{shape[1]}]" if len(shape) == 2 else f"[groups · {shape[1]}] (groups dividing {shape[0]})"
            raise CheckpointError(f"{path}: tensor {tname!r} is {dtype_name(e.dtype)} {list(e.shape)}, expected a "
                                  f"floating tensor of shape {want} (the input scale of {name!r})")
        claimed.add(tname)
    return claimed


def split_entries(path, entries: dict[str, TensorEntry], quantized: dict[str, dict],
                  input_scales=()) -> tuple[dict, list[str]]:
    """Group tensor names by quantized parameter and list the float ones; refuse contradictions between the two.

    The one check of a file's tensors against its metadata (`lowbit.load` and `lowbit info` both run it through
    `open_checkpoint`). Returns ({param: {field: tensor name}}, [float tensor names]); the input-scale tensors of
    `input_scales` are neither (the loader places them).
    """
    groups = {name: _group_of(path, name, qmeta, entries) for name, qmeta in quantized.items()}
    claimed = {t for g in groups.values() for t in g.values()}
    claimed |= _check_input_scales(path, entries, quantized, input_scales)
    floats = []
    for tname in entries:
        if tname in claimed:
            continue
        if tname in quantized:
            raise CheckpointError(f"{path}: tensor {tname!r} is stored as a plain tensor and also listed as a "
                                  "quantized weight")
        base, _, field = tname.rpartition("_")
        if field in SUFFIXES and base in quantized:
            raise CheckpointError(f"{path}: tensor {tname!r} is not used by the metadata of {base!r} "
                                  f"(symmetric={quantized[base].get('symmetric')}, bits={quantized[base].get('bits')})")
        floats.append(tname)
    return groups, floats
