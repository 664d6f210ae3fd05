"""The module swap: `quantize`, `swap_quantized`, `quantized_weights`, `set_backend`, and the summary.

`quantize` decides per layer (skip globs, tiny layers, shapes a layer cannot take, overrides), computes the
QuantizedWeights and calls `swap_quantized`, the contract shared with `lowbit.load` (see docs/DESIGN.md).
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from dataclasses import dataclass, field, is_dataclass

import torch
from torch import nn

from ..quant.config import QuantConfig
from ..quant.format import QuantizedWeight
from ..quant.quantize import quantize_weight
from ..runtime.config import BackendConfig
from . import weight_cache
from .conv import QuantConv1d, QuantConv2d, float_copy_note
from .linear import QuantLinear, QuantModule, as_backend
from .lstm import QuantLSTM, lstm_param_names

_SWAPS = ((nn.Linear, QuantLinear), (nn.Conv1d, QuantConv1d), (nn.Conv2d, QuantConv2d), (nn.LSTM, QuantLSTM))
# float layers whose quantized twin can hold an AWQ input-scale vector (`set_input_scale`; not the LSTM, whose
# recurrent input cannot be divided outside the cell)
INPUT_SCALE_LAYERS = tuple(f for f, q in _SWAPS if hasattr(q, "set_input_scale"))


@dataclass
class LayerRecord:
    """One layer in the summary: its name, type, and either its bytes before/after or why it stayed float."""

    name: str
    kind: str
    weights: int
    bytes_before: int = 0
    bytes_after: int = 0
    config: str = ""
    reason: str = ""


@dataclass
class QuantizeSummary:
    """What `quantize` did: swapped layers, skipped layers with their reasons, weight bytes before/after."""

    swapped: list[LayerRecord] = field(default_factory=list)
    skipped: list[LayerRecord] = field(default_factory=list)

    @property
    def bytes_before(self) -> int:
        """Float bytes of the swapped layers' quantized parameters."""
        return sum(r.bytes_before for r in self.swapped)

    @property
    def bytes_after(self) -> int:
        """Packed bytes (codes, scales, zeros) of the same parameters."""
        return sum(r.bytes_after for r in self.swapped)

    def __str__(self) -> str:
        from tabulate import tabulate

        rows = [[r.name, r.kind, r.weights, r.config, r.bytes_before, r.bytes_after, ""] for r in self.swapped]
        rows += [[r.name, r.kind, r.weights, "float", "", "", r.reason] for r in self.skipped]
        table = tabulate(rows, headers=["layer", "type", "weights", "config", "bytes before", "bytes after", "kept "
                                        "float because"], tablefmt="github")
        ratio = self.bytes_after / self.bytes_before if self.bytes_before else 0.0
        return (f"{table}\n\nswapped {len(self.swapped)}, kept float {len(self.skipped)}; quantized weights "
                f"{self.bytes_before:,} -> {self.bytes_after:,} bytes ({ratio:.1%})")


def quant_class(module: nn.Module):
    for float_cls, quant_cls in _SWAPS:
        if isinstance(module, float_cls) and not isinstance(module, QuantModule):
            return quant_cls
    return None


def quantized_param_names(module: nn.Module) -> list[str]:
    if isinstance(module, nn.LSTM):
        return lstm_param_names(module.num_layers, module.bidirectional, module.bias)[0]
    return ["weight"]


def _matches(name: str, pattern: str) -> bool:
    return name == pattern or fnmatch.fnmatchcase(name, pattern) or name.startswith(pattern + ".")


def check_patterns(skip, overrides) -> tuple[list[str], dict]:
    skip = [skip] if isinstance(skip, str) else list(skip or [])
    for p in skip:
        if not isinstance(p, str):
            raise TypeError(f"skip must hold layer names or glob patterns (str), got {p!r}")
    overrides = dict(overrides or {})
    for k, v in overrides.items():
        if not isinstance(k, str) or not isinstance(v, QuantConfig):
            raise TypeError(f"overrides must map a name or glob (str) to a lowbit.QuantConfig, got {k!r}: "
                            f"{type(v).__name__}")
    return skip, overrides


def config_for(name: str, cfg: QuantConfig, overrides: dict) -> QuantConfig:
    """An exact-name override first, then the first matching glob, else the model-wide config."""
    if name in overrides:
        return overrides[name]
    return next((c for p, c in overrides.items() if _matches(name, p)), cfg)


def why_float(name: str, module: nn.Module, parent: nn.Module | None, skip: list[str], min_weights: int,
               count: int) -> str | None:
    """The reason a candidate layer stays float, or None to quantize it."""
    hit = next((p for p in skip if _matches(name, p)), None)
    if hit is not None:
        return f"skip pattern {hit!r}"
    if isinstance(parent, nn.MultiheadAttention):
        return "nn.MultiheadAttention reads this weight directly (F.multi_head_attention_forward)"
    base = next(f for f, _ in _SWAPS if isinstance(module, f))
    if type(module).forward is not base.forward:
        return f"{type(module).__name__} overrides {base.__name__}.forward; a swap would drop that behaviour"
    if isinstance(module, nn.LSTM) and module.proj_size:
        return f"QuantLSTM does not support proj_size={module.proj_size}"
    if count < min_weights:
        return f"tiny: {count} weights < min_weights={min_weights}"
    if any(getattr(module, p).device.type == "meta" for p in quantized_param_names(module)):
        return "weights are on the meta device (load packed weights with swap_quantized / lowbit.load instead)"
    return None


def select_layers(model: nn.Module, skip: list[str], min_weights: int) -> list[tuple[str, nn.Module, LayerRecord]]:
    """THE layer selection (lowbit.quantize, lowbit.nn.quantize, lowbit auto): (name, module, record) for every
    module with a quantized twin, in `named_modules` order; `record.reason` says why it stays float ("" to quantize
    it). skip: checked patterns (`check_patterns`)."""
    modules = dict(model.named_modules())
    out = []
    for name, module in modules.items():
        if quant_class(module) is None:
            continue
        parent = modules.get(name.rpartition(".")[0]) if name else None
        count = sum(getattr(module, p).numel() for p in quantized_param_names(module))
        record = LayerRecord(name, type(module).__name__, count)
        record.reason = why_float(name, module, parent, skip, min_weights, count) or ""
        out.append((name, module, record))
    return out


def quantize(model: nn.Module, cfg: QuantConfig | None = None, backend: BackendConfig | None = None,
             skip=(), overrides: dict | None = None, min_weights: int = 1024, *, quantize_fn=None) -> nn.Module:
    """Quantize the Linear, Conv1d, Conv2d and LSTM layers of `model` in place; return the model.

    cfg: the model-wide QuantConfig (default 4-bit block 64 RTN); overrides: {layer name or glob: QuantConfig};
    skip: layer names or globs kept float (a name also skips everything under it); min_weights: layers with fewer
    weights stay float (as MNN). backend: how the swapped layers compute (BackendConfig, default memory Normal).
    The summary (`QuantizeSummary`) is attached as `model.lowbit_summary`; print it for a table. quantize_fn:
    `(w, cfg, name) -> QuantizedWeight` per weight (default `quantize_weight`, RTN/HQQ/fp16; lowbit.quantize passes
    its method registry's).
    """
    quantize_fn = quantize_fn or quantize_weight
    cfg = cfg or QuantConfig()
    if not isinstance(cfg, QuantConfig):
        raise TypeError(f"cfg must be a lowbit.QuantConfig, got {type(cfg).__name__}")
    if isinstance(min_weights, bool) or not isinstance(min_weights, int) or min_weights < 0:
        raise ValueError(f"min_weights={min_weights!r} must be a non-negative int")
    backend = as_backend(backend)
    skip, overrides = check_patterns(skip, overrides)
    aware = next((c for c in (cfg, *overrides.values()) if c.data_aware), None)
    if aware is not None:  # data-aware methods run above nn (lowbit.methods), fed by calibration inputs
        raise ValueError(f"method={aware.method.value!r} needs calibration data: use lowbit.quantize(model, cfg, "
                         "calibration=...) (lowbit.nn.quantize is the data-free swap)")
    summary, weights = QuantizeSummary(), {}
    for name, module, record in select_layers(model, skip, min_weights):
        names = quantized_param_names(module)
        if not record.reason:
            layer_cfg = config_for(name, cfg, overrides)
            try:
                packed = {p: quantize_fn(getattr(module, p), layer_cfg, f"{name}.{p}") for p in names}
            except ValueError as e:
                record.reason = f"cannot quantize: {e}"
            else:
                weights.update({f"{name}.{p}" if name else p: qw for p, qw in packed.items()})
                record.config = describe_config(layer_cfg) + float_copy_note(module, layer_cfg.bits)
                record.bytes_before = sum(tensor_nbytes(getattr(module, p)) for p in names)
                record.bytes_after = sum(qw.nbytes for qw in packed.values())
        (summary.skipped if record.reason else summary.swapped).append(record)
    model = swap_quantized(model, weights, backend)
    model.lowbit_summary = summary
    return model


def describe_config(cfg: QuantConfig) -> str:
    if cfg.is_float:
        return "fp16"
    block = "per-channel" if cfg.block_size == -1 else f"b{cfg.block_size}"
    return f"int{cfg.bits} {block} {'sym' if cfg.symmetric else 'asym'} {cfg.method.value}"


def tensor_nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def swap_quantized(model: nn.Module, weights: dict[str, QuantizedWeight],
                   backend: BackendConfig | None = None) -> nn.Module:
    """Replace each module owning a parameter in `weights` by its Quant counterpart holding exactly those weights.

    weights: {full parameter name ("encoder.fc.weight", "rnn.weight_hh_l0_reverse"): a packed weight of any
    registered format (`QuantizedWeight` for affine; lowbit.quant.formats)}. Biases and
    other float parameters are kept as they are (also on the meta device), and each new layer takes the `training`
    flag of the module it replaces (`from_float`). Returns the model (a new module only when the model itself is the
    swapped layer).
    """
    backend = as_backend(backend)
    by_module: dict[str, dict[str, QuantizedWeight]] = defaultdict(dict)
    for full, qw in weights.items():
        mod_name, _, pname = full.rpartition(".")
        by_module[mod_name][pname] = qw
    modules = dict(model.named_modules())
    for mod_name, ws in by_module.items():
        if mod_name not in modules:
            raise ValueError(f"no module named {mod_name!r} in the model for packed weights {sorted(ws)}")
        old = modules[mod_name]
        new = _quant_module(old, mod_name, ws, backend)
        if not mod_name:
            model = new
        for parent in model.modules():  # every reference: a module shared under two names is swapped in both
            for child_name, child in parent._modules.items():
                if child is old:
                    parent._modules[child_name] = new
    return model


def _quant_module(module: nn.Module, name: str, ws: dict[str, QuantizedWeight], backend: BackendConfig):
    quant_cls = quant_class(module)
    expected = quantized_param_names(module) if quant_cls is not None else []
    if quant_cls is None or sorted(ws) != sorted(expected):
        raise ValueError(f"module {name!r} ({type(module).__name__}) cannot hold packed weights {sorted(ws)}: "
                         f"supported are Linear/Conv1d/Conv2d 'weight' and all LSTM gate weights {expected or ''}")
    if quant_cls is QuantLSTM:
        return QuantLSTM.from_float(module, ws, backend)
    return quant_cls.from_float(module, ws["weight"], backend)


def quantized_weights(model: nn.Module) -> dict[str, QuantizedWeight]:
    """{full parameter name: QuantizedWeight} of every quantized layer: the inverse view of `swap_quantized`."""
    out = {}
    for prefix, module in model.named_modules():
        if isinstance(module, QuantModule):
            for p in module.quantized_names:
                out[f"{prefix}.{p}" if prefix else p] = module.quantized_weight(p)
    return out


def set_backend(model: nn.Module, backend: BackendConfig) -> nn.Module:
    """Switch every quantized layer to `backend` without re-quantizing (prepared caches are dropped)."""
    backend = as_backend(backend)
    for module in model.modules():
        if isinstance(module, QuantModule):
            module.set_backend(backend)
    return model


def resident_bytes(model: nn.Module) -> int:
    """Bytes held for the model's weights now: parameters, buffers and prepared kernel caches (each storage once)."""
    seen, total = set(), 0
    tensors = [*model.parameters(), *model.buffers()]
    for module in model.modules():
        if isinstance(module, QuantModule):
            for p in module.quantized_names:
                packed = module._buffers.get(f"{p}_packed")  # None while memory Normal's float copy stands in
                tensors.extend(_cached_tensors(weight_cache.cached(packed)) if packed is not None else [])
            tensors.extend(_cached_tensors(module.__dict__.get("_q8_tiles")))  # memory Low's tiled 8-bit codes
    for t in tensors:
        key = (t.untyped_storage().data_ptr(), t.device) if t.device.type != "meta" else id(t)
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes() if t.device.type != "meta" else 0
    return total


def _cached_tensors(obj, depth: int = 0) -> list[torch.Tensor]:
    """Every tensor inside a cache entry (tensors, dicts, sequences, dataclasses, plain objects)."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if depth > 4 or obj is None or isinstance(obj, (str, int, float, bool)):
        return []
    if isinstance(obj, dict):
        items = obj.values()
    elif isinstance(obj, (list, tuple)):
        items = obj
    elif is_dataclass(obj) or hasattr(obj, "__dict__"):
        items = vars(obj).values()
    else:
        return []
    return [t for item in items for t in _cached_tensors(item, depth + 1)]


def tied_modules(model: nn.Module) -> list[str]:
    """Modules whose weight is a tied copy of another (a Hugging Face lm_head sharing the embeddings, from
    transformers' `all_tied_weights_keys`): kept float when writing a model folder, since the folder stores only the
    embedding and transformers' loader re-ties the head to it."""
    return sorted({k.rpartition(".")[0] for k in (getattr(model, "all_tied_weights_keys", None) or {})})
