"""Which tensors `convert` quantizes, and per-layer overrides from a JSON file.

Default rule (MNN's, and `lowbit.quantize`'s): a tensor is quantized when it is a floating tensor of rank >= 2 whose
last name component is `weight` or starts with `weight_` (Linear/Conv `weight`, LSTM `weight_ih_l0`,
`weight_hh_l0_reverse`), with at least 1024 elements, and no name component containing "emb" or "norm" (nor
named `wte`/`wpe`/`shared`): embeddings, norms, biases and small layers stay as they are.

Overrides file (the shape automatic bit selection writes):

    {"version": 1,
     "layers": {
       "encoder.layer.0.attention.self.query": {"bits": 8, "block_size": -1},
       "encoder.layer.*.output.dense": {"bits": 3, "method": "hqq"},
       "pooler.dense": "skip",
       "classifier": {"bits": 16}
     }}

Keys are module names (`fc`), parameter names (`fc.weight`) or glob patterns over either. Values: an object with
any of bits (2..8; 16 = store float16; 0 = keep untouched), block_size, method ("rtn"|"hqq"), symmetric,
scale_dtype, missing keys taken from the command's settings; or "skip" / 0 (keep untouched). A bare mapping without
"layers" is accepted too. Exact names win over globs; among globs the first in the file wins. An entry that matches
no tensor, an unknown key and an out-of-range value are errors naming the entry. A matched tensor is quantized even
below 1024 elements; embeddings, norms and non-weights are never quantized.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from pathlib import Path

import torch

from ..quant.config import QuantConfig
from .errors import CheckpointError
from .sources import read_json

MIN_ELEMENTS = 1024
OVERRIDES_VERSION = 1
TOP_LEVEL_KEYS = ("version", "layers", "gptq_fit", "model_prefix")  # written by `lowbit auto`: gptq_fit read by
# convert --model, model_prefix (the wrapper prefix of its layer names) by convert FOLDER --config
_KEYS = ("bits", "block_size", "method", "symmetric", "scale_dtype", "gptq_act_order", "gptq_damp", "gptq_scales")
_NEVER = ("emb", "norm")
_NEVER_EXACT = ("wte", "wpe", "shared")
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


@dataclass(frozen=True)
class LayerRule:
    """One override: `pattern` (name or glob) and its config, or cfg None = keep the tensor untouched."""

    pattern: str
    cfg: QuantConfig | None

    @property
    def is_glob(self) -> bool:
        return any(c in self.pattern for c in "*?[")

    def matches(self, tensor: str) -> bool:
        module = tensor.rpartition(".")[0]
        if not self.is_glob:
            return self.pattern in (tensor, module)
        return fnmatchcase(tensor, self.pattern) or fnmatchcase(module, self.pattern)


def never_quantized(name: str, dtype: torch.dtype, shape: tuple[int, ...]) -> str | None:
    """Why a tensor is never quantized (embedding, norm, bias, integer, 1-D), or None if it may be."""
    parts = name.lower().split(".")
    last = parts[-1]
    if dtype not in _FLOAT_DTYPES:  # integers, bool, float8, complex: kept as they are
        return f"{str(dtype).removeprefix('torch.')} tensor"
    if len(shape) < 2:
        return "rank < 2"
    if last != "weight" and not last.startswith("weight_"):
        return "not a weight"
    if any(w in p for p in parts for w in _NEVER) or any(p in _NEVER_EXACT for p in parts):
        return "embedding or norm"
    return None


def _entry_config(where: str, key: str, value, base: QuantConfig) -> QuantConfig | None:
    if value == "skip" or (value == 0 and not isinstance(value, bool)):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = {"bits": value}
    if not isinstance(value, dict):
        raise CheckpointError(f"{where}: entry {key!r} must be an object, 'skip' or 0, got {value!r}")
    unknown = sorted(set(value) - set(_KEYS))
    if unknown:
        raise CheckpointError(f"{where}: entry {key!r} has unknown keys {unknown}; valid keys: {list(_KEYS)}")
    if value.get("bits") in (0, "skip"):
        return None
    bits = value.get("bits", base.bits)
    if isinstance(bits, bool) or not isinstance(bits, int) or not (2 <= bits <= 8 or bits in (0, 16)):
        raise CheckpointError(f"{where}: entry {key!r} has bits={bits!r}, out of range: use 2..8, 16 (float16) or "
                              "0/'skip' (keep)")
    fields = {k: value[k] for k in _KEYS if k in value}
    if fields.get("method", base.method) == "hqq" and "symmetric" not in fields:
        fields["symmetric"] = False  # HQQ is asymmetric; don't inherit a symmetric command-line default
    try:
        return replace(base, **fields)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{where}: entry {key!r}: {e}") from None


def load_overrides(src, base: QuantConfig) -> list[LayerRule]:
    """Parse overrides from a JSON file path or an already-loaded dict into rules (file order)."""
    where = "overrides"
    if isinstance(src, (str, Path)):
        where = str(src)
        if not Path(src).is_file():
            raise FileNotFoundError(f"overrides file {src} does not exist")
        src = read_json(Path(src), "overrides file")
    if not isinstance(src, dict):
        raise CheckpointError(f"{where} must hold a JSON object of layer name -> settings")
    if "layers" in src:
        unknown = sorted(str(k) for k in set(src) - set(TOP_LEVEL_KEYS))
        if unknown:
            raise CheckpointError(f"{where}: unknown top-level key(s) {unknown}; known: {list(TOP_LEVEL_KEYS)}")
        version = src.get("version", OVERRIDES_VERSION)
        if type(version) is not int or not 1 <= version <= OVERRIDES_VERSION:
            raise CheckpointError(f"{where} has version {version!r}; this lowbit reads version {OVERRIDES_VERSION}")
        src = src["layers"]
        if not isinstance(src, dict):
            raise CheckpointError(f"{where}: 'layers' must be an object of layer name -> settings")
    return [LayerRule(str(k), _entry_config(where, k, v, base)) for k, v in src.items()]


def find_rule(rules: list[LayerRule], name: str) -> LayerRule | None:
    """The rule for tensor `name`: an exact name first, else the first matching glob."""
    exact = [r for r in rules if not r.is_glob and r.matches(name)]
    if exact:
        return exact[0]
    return next((r for r in rules if r.is_glob and r.matches(name)), None)


def check_rules_used(rules: list[LayerRule], entries: dict, where: str = "overrides") -> None:
    """Every rule must match a tensor, and a rule that quantizes must match a weight that can be quantized: a typo
    in a layer name, or a rule for a bias, must not pass silently. entries: tensor name -> TensorEntry."""
    names = list(entries)
    for r in rules:
        hits = [n for n in names if r.matches(n)]
        if not hits:
            raise CheckpointError(f"{where}: entry {r.pattern!r} matches no layer in the checkpoint "
                                  f"(unknown layer name; e.g. {names[:2]})")
        why = [never_quantized(n, entries[n].dtype, entries[n].shape) for n in hits]
        if r.cfg is not None and all(why):
            raise CheckpointError(f"{where}: entry {r.pattern!r} names only tensors that are never quantized "
                                  f"({hits[0]!r}: {why[0]}); overrides apply to weights: name the layer "
                                  f"(e.g. {hits[0].rpartition('.')[0] or hits[0]!r}) or its weight")


def skip_matches(pattern: str, name: str) -> bool:
    """A --skip pattern matches a tensor by its name or its module's name, exactly or as a glob."""
    module = name.rpartition(".")[0]
    return pattern in (name, module) or fnmatchcase(name, pattern) or fnmatchcase(module, pattern)


def check_skip_used(skip, names: list[str]) -> None:
    """Every --skip pattern must match a tensor: a mistyped pattern would otherwise quantize what it meant to keep."""
    for p in skip:
        if not isinstance(p, str):
            raise TypeError(f"skip patterns must be strings, got {p!r}")
        if not any(skip_matches(p, n) for n in names):
            raise CheckpointError(f"skip pattern {p!r} matches no tensor or layer in the checkpoint "
                                  f"(e.g. {names[:2]}); check the name")
