"""`quantize_static`: offline full INT8 (MNN's quantized.out) for a whole model and its calibration data.

Steps: eval mode (a training model is switched, with a warning); BatchNorm folding (`fold.py`); the chosen
Linear/Conv1d/Conv2d/LSTM layers' input ranges over the calibration set (`calibrate.py`); per layer 8-bit
symmetric weights (max_abs or ADMM scales; SmoothQuant-scaled with smooth_alpha) and the static twin of its
quantized layer with the activation step fixed (`lowbit.nn.static`, `lowbit.nn.static_lstm`); a ReLU right after
a Conv/Linear (a ReLU6 or Hardswish right after a Conv) runs in that layer's int8 epilogue (`fuse.py`). Every
other module computes in float between them (each static layer quantizes its own input and returns float). A failed
call leaves the model exactly as it was (`rollback.py`). The summary (`model.lowbit_summary`, a `StaticSummary`)
lists every layer with weights and what became of it; `model.lowbit_static` holds what a checkpoint needs
(`lowbit.static.checkpoint`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

import torch
from torch import nn

from ..calib import as_calibration, ensure_eval
from ..nn import QuantModule, swap_quantized
from ..nn.static import to_static
from ..nn.swap import quant_class
from ..nn.weight_cache import current_capabilities
from ..quant.observers import scale_from_threshold
from ..quant.static_config import StaticConfig
from ..quant.static_int8 import int8_weight, smooth_factors, weight_scales
from ..runtime.static_dispatch import float_conv_faster
from .calibrate import channel_absmax, collect_ranges, thresholds
from .fold import _replace, fold_batchnorm
from .fuse import act_name, fusable_relus
from .rollback import ModelSnapshot
from .summary import StaticRecord, StaticSummary

STATIC_VERSION = 1


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(name == p or fnmatch.fnmatchcase(name, p) for p in patterns)


def choose_layers(model: nn.Module, skip: tuple[str, ...]) -> tuple[dict[str, nn.Module], list[StaticRecord]]:
    """({name: layer to quantize}, records of the layers with weights that stay float and why).

    The candidates are lowbit.quantize's (`nn.swap.quant_class`: Linear, Conv1d, Conv2d, LSTM); static INT8 keeps
    its own rules among them (skip by exact name or glob, no min_weights, the root module never chosen)."""
    named = dict(model.named_modules())
    for pattern in skip:
        if not any(_matches(n, [pattern]) for n in named if n):
            raise ValueError(f"skip pattern {pattern!r} matches no module of the model (names look like "
                             f"{[n for n in named if n][:4]})")
    chosen, kept = {}, []
    inside_quant = {n for n, m in named.items() if isinstance(m, QuantModule)}
    for name, m in named.items():
        if not name or any(name == q or name.startswith(q + ".") for q in inside_quant):
            if isinstance(m, QuantModule):
                kept.append(StaticRecord(name, type(m).__name__, "float", "already quantized (weight-only)"))
            continue
        if _matches(name, skip):
            if quant_class(m) is not None or _own_weights(m):
                kept.append(StaticRecord(name, type(m).__name__, "float", "skip"))
        elif isinstance(m, nn.LSTM) and m.proj_size:
            kept.append(StaticRecord(name, "LSTM", "float", f"proj_size={m.proj_size} is not supported"))
        elif quant_class(m) is not None:
            chosen[name] = m
        elif _own_weights(m):
            kept.append(StaticRecord(name, type(m).__name__, "float", "no static int8 form for this op"))
    return chosen, kept


def _own_weights(m: nn.Module) -> bool:
    return any(p.dim() >= 2 for p in m.parameters(recurse=False))


def quantize_static(model: nn.Module, calibration, config: StaticConfig | None = None, skip: Iterable[str] = (),
                    progress: bool = True) -> nn.Module:
    """Quantize `model` in place to static W8A8 with activation scales from `calibration`; returns the model.

    calibration: an iterable of model inputs (tensor, tuple = positional args, dict = kwargs), a folder of
    .pt/.npy/.safetensors files, "module:function", or a `lowbit.calib.CalibrationSet`; config.samples caps it.
    skip: names or globs kept float (added to config.skip). With config.debug, `model.lowbit_summary.debug` holds
    the per-layer cosine / SNR / overflow table on the calibration set.
    """
    cfg = config if config is not None else StaticConfig()
    if not isinstance(cfg, StaticConfig):
        raise TypeError(f"config must be a lowbit StaticConfig, got {type(cfg).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"quantize_static needs an nn.Module, got {type(model).__name__}")
    skip = (*cfg.skip, *([skip] if isinstance(skip, str) else skip))
    cal = as_calibration(calibration, limit=cfg.samples)
    if len(cal) == 0:
        raise ValueError("the calibration source is empty: pass at least one model input")
    snapshot = ModelSnapshot(model)
    try:
        return _quantize(model, cal, cfg, skip, progress)
    except BaseException:
        snapshot.restore()  # a failed call leaves the model exactly as it was (modules, values, training flags)
        raise


def _quantize(model: nn.Module, cal, cfg: StaticConfig, skip: tuple[str, ...], progress: bool) -> nn.Module:
    ensure_eval(model)
    folded = fold_batchnorm(model, next(iter(cal))) if cfg.fold_bn else []
    layers, kept = choose_layers(model, skip)
    if not layers:
        raise ValueError("no Linear/Conv1d/Conv2d/LSTM layer left to quantize (all skipped or none in the model)")
    fused = dict(fusable_relus(model, next(iter(cal)), layers)) if cfg.fuse_relu else {}
    float_copies = {n: _float_copy(m) for n, m in layers.items()} if cfg.debug else {}
    smooth = _smoothing(model, cal, layers, cfg.smooth_alpha, progress) if cfg.smooth_alpha is not None else {}
    ranges = collect_ranges(model, cal, layers, cfg, progress, smooth=smooth)
    limits = thresholds(ranges, cfg, progress)
    records, static = [], {}
    for name, layer in layers.items():
        step = scale_from_threshold(limits[name], cfg.activation_clamp)
        new = to_static(swap_quantized(layer, _int8_weights(layer, cfg, smooth.get(name))), step,
                        cfg.activation_clamp, smooth.get(name))
        note = f"{cfg.activation_method.value} |x| <= {limits[name]:.4g} (max {ranges[name].absmax:.4g})"
        note += _float_note(layer, ranges[name].shape)
        if name in fused:
            act_module = model.get_submodule(fused[name])
            new.fuse_act(act_name(act_module))
            _replace(model, fused[name], nn.Identity())
            note += f"; + {type(act_module).__name__} {fused[name]!r} fused"
        _replace(model, name, new)
        static[name] = {"kind": type(new).__name__, **new.static_meta()}
        records.append(StaticRecord(name, type(layer).__name__, "int8", note, step))
    summary = StaticSummary(records + kept, folded, cfg, fused_relu=sorted(fused.items()))
    model.lowbit_static = {"version": STATIC_VERSION, "layers": static, "folded_bn": [list(p) for p in folded],
                           "fused_relu": [list(p) for p in sorted(fused.items())], "config": cfg.to_dict()}
    if cfg.debug:
        from .debug import debug_table

        summary.debug = debug_table(model, cal, float_copies, progress)
    model.lowbit_summary = summary
    return model


def _float_note(layer: nn.Module, shape: tuple | None) -> str:
    """The summary's word on a conv that runs a float copy on the CPU at the calibration input's size (torch's fp32
    conv is faster there: `lowbit.runtime.static_dispatch.float_conv_faster`), else ""."""
    if not isinstance(layer, nn.Conv2d) or shape is None or len(shape) != 4 or layer.padding_mode != "zeros" \
            or isinstance(layer.padding, str):
        return ""
    kh, kw = layer.kernel_size
    oh = (shape[2] + 2 * layer.padding[0] - layer.dilation[0] * (kh - 1) - 1) // layer.stride[0] + 1
    ow = (shape[3] + 2 * layer.padding[1] - layer.dilation[1] * (kw - 1) - 1) // layer.stride[1] + 1
    nhwc = (layer.groups == 1 or layer.out_channels == layer.groups == layer.in_channels) \
        and current_capabilities().native_extension  # the channels-last kernels (lowbit.nn.static) run it
    why = float_conv_faster(layer.groups, layer.in_channels // layer.groups, kh * kw, max(1, oh * ow), nhwc)
    return f"; on the CPU at {oh}x{ow} outputs a float copy ({why}: torch's fp32 conv is faster)" if why else ""


def _int8_weights(layer: nn.Module, cfg: StaticConfig, smooth: torch.Tensor | None) -> dict:
    """{parameter name: 8-bit symmetric QuantizedWeight} of a Linear/Conv ('weight') or LSTM (every gate weight)."""
    names = [n for n, p in layer.named_parameters(recurse=False) if n.startswith("weight")]
    out = {}
    for pname in names:
        weight = getattr(layer, pname).detach()
        if smooth is not None:  # x W^T = (x / s)(W s)^T: the division runs in the layer, the product is in W
            weight = weight / smooth.to(weight.dtype)
        scales = weight_scales(weight, cfg.weight_clamp, cfg.per_channel, cfg.weight_method.value, cfg.admm_iters)
        out[pname] = int8_weight(weight, scales, cfg.weight_clamp)
    return out


def _smoothing(model, cal, layers, alpha: float, progress: bool) -> dict[str, torch.Tensor]:
    """{Linear name: 1 / s} with SmoothQuant's s = max|x_j|^alpha / max|w_j|^(1 - alpha) per input channel j."""
    linears = {n: m for n, m in layers.items() if isinstance(m, nn.Linear)}
    if not linears:
        return {}
    act = channel_absmax(model, cal, linears, progress)
    return {n: (1.0 / smooth_factors(act[n], m.weight.detach().abs().amax(0), alpha)).contiguous()
            for n, m in linears.items() if n in act}


def _float_copy(m: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(m)
