"""Fake quantization for tuning: a layer's weights replaced by their dequantized values, and model runs.

`dequantized` computes exactly `quantize_weight(w, cfg).dequantize()` and `.nbytes` without packing the codes
(packing is lossless and costs more than the quantization itself; tests/auto/test_auto.py checks the equality). A
quantized layer at memory Normal computes with that dequantized weight, so the measured errors are the quantized
model's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from contextlib import contextmanager

import torch
from torch import nn

from ..calib.capture import call_model
from ..quant.blocks import row_chunks
from ..quant.config import QuantConfig
from ..quant.format import dequantize_blocks, group_size_for, symmetric_zero
from ..quant.quantize import quantize_rows, quantize_weight
from .metrics import select_output


def dequantized_weight(w: torch.Tensor, cfg: QuantConfig, name: str) -> tuple[torch.Tensor, int]:
    """(quantize_weight(w, cfg).dequantize(w.dtype), its nbytes), without packing."""
    if cfg.is_float or cfg.data_aware:
        qw = quantize_weight(w, cfg, name)
        return qw.dequantize(w.dtype), qw.nbytes
    w2d = w.detach().reshape(w.shape[0], -1)
    n, k = w2d.shape
    group, scale_dtype = group_size_for(k, cfg.block_size), cfg.scale_torch_dtype
    parts = [quantize_rows(w2d[rows].float(), cfg, group, scale_dtype) for rows in row_chunks(n, k)]
    codes, scale, zero = (torch.cat(p) if p[0] is not None else None for p in zip(*parts, strict=True))
    full_zero = zero if zero is not None else torch.full_like(scale, float(symmetric_zero(cfg.bits)))
    deq = dequantize_blocks(codes, scale, full_zero, group, w.dtype).reshape(w.shape)
    packed = n * (k if cfg.bits == 8 else (k + 7) // 8 * cfg.bits)
    extra = sum(t.numel() * t.element_size() for t in (scale, zero) if t is not None)
    return deq, packed + extra


def dequantized(module: nn.Module, params: list[str], cfg: QuantConfig, name: str) -> tuple[dict, int]:
    """({param: dequantized weight}, packed bytes) of one layer at `cfg`."""
    ws, nbytes = {}, 0
    for p in params:
        ws[p], b = dequantized_weight(getattr(module, p), cfg, f"{name}.{p}")
        nbytes += b
    return ws, nbytes


@contextmanager
def fake_quantized(model: nn.Module, layers: dict[str, dict[str, torch.Tensor]]):
    """Within the block, the named layers' weights are replaced by the given float tensors ({layer: {param: w}})."""
    modules = dict(model.named_modules())
    saved = []
    try:
        for name, params in layers.items():
            for p, w in params.items():
                param = getattr(modules[name], p)
                saved.append((param, param.data))
                param.data = w.to(param.device, param.dtype)
        yield
    finally:
        for param, data in reversed(saved):
            param.data = data


def run_outputs(model: nn.Module, data, select) -> list:
    """The selected outputs of the model over every data item (CalibrationError naming a rejected item)."""
    p = next(iter(model.parameters()), None)
    device = None if p is None else p.device
    from ..calib.mask import item_mask

    outs, mask_fn = [], getattr(data, "mask_fn", None)
    with torch.no_grad():
        for i, item in enumerate(data):
            out = select_output(call_model(model, item, i, device), select)
            outs.append(_real_rows(_detach(out), item_mask(item, mask_fn)))  # padded positions are no output
    return outs


def _real_rows(out, mask):
    """Tensors of the output with the item's (batch, seq) leading dims cut to the real positions' rows."""
    from collections.abc import Mapping

    from ..calib.mask import matches

    if mask is None:
        return out
    if isinstance(out, torch.Tensor):
        return out[mask] if matches(out, mask) else out
    if isinstance(out, Mapping):
        return {k: _real_rows(v, mask) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return [_real_rows(v, mask) for v in out]
    return out


def _detach(out):
    if isinstance(out, torch.Tensor):
        return out.detach().cpu()
    if isinstance(out, Mapping):  # any Mapping (BatchEncoding too), kept as a plain dict
        return {k: _detach(v) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return [_detach(v) for v in out]
    return out


def _hash_value(h, v) -> None:
    if isinstance(v, torch.Tensor):
        t = v.detach().cpu().contiguous()
        h.update(f"T{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-dim: BatchNorm's count
    elif isinstance(v, Mapping):
        for k in v:
            h.update(f"K{k!r}".encode())
            _hash_value(h, v[k])
    elif isinstance(v, (list, tuple)):
        h.update(f"L{len(v)}".encode())
        for x in v:
            _hash_value(h, x)
    else:
        h.update(f"V{type(v).__name__}{v!r}".encode())


def model_hash(model: nn.Module) -> str:
    """sha256 over the model's class, parameter and buffer names, shapes, dtypes and values."""
    h = hashlib.sha256(type(model).__qualname__.encode())
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        h.update(name.encode())
        _hash_value(h, t)
    return h.hexdigest()


def data_hash(data) -> str:
    """sha256 over every data item's arguments."""
    h = hashlib.sha256()
    for item in data:
        _hash_value(h, (item.args, item.kwargs))
    return h.hexdigest()
