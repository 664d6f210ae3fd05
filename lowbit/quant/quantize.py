"""`quantize_weight`: a float weight in, a `QuantizedWeight` out (RTN, HQQ or float16 storage)."""

from __future__ import annotations

import torch

from .blocks import row_chunks
from .checks import check_float_weight
from .config import QuantConfig, QuantMethod
from .format import QuantizedWeight, group_size_for
from .hqq import quantize_hqq_rows
from .packing import pack_bits
from .rtn import quantize_rtn_rows


def quantize_weight(w: torch.Tensor, cfg: QuantConfig | None = None, name: str = "weight") -> QuantizedWeight:
    """Compress a float weight of shape (N, ...) with `cfg` (default: 4-bit, block 64, asymmetric RTN).

    Weights of rank > 2 (Conv (O, I/groups, *kernel)) are quantized as (N, K) with K = prod(shape[1:]), i.e. blocks
    run along the flattened input channels in row-major order; `dequantize()` restores the original shape.
    """
    cfg = cfg or QuantConfig()
    if not isinstance(cfg, QuantConfig):
        raise TypeError(f"cfg must be a lowbit.QuantConfig, got {type(cfg).__name__}")
    check_float_weight(w, name)
    shape, dtype = tuple(w.shape), w.dtype
    w2d = w.detach().reshape(shape[0], -1)
    if cfg.is_float:
        return _store_float16(w2d, shape, dtype, name)
    if cfg.data_aware:
        raise ValueError(f"{name}: method={cfg.method.value!r} (awq={cfg.awq}) needs calibration data: use "
                         "lowbit.quantize(model, cfg, calibration=...) (or lowbit.quant.gptq.gptq_quantize with a "
                         "Hessian)")
    if cfg.method not in (QuantMethod.RTN, QuantMethod.HQQ):  # a registered method: its own quantize_weight
        raise ValueError(f"{name}: method={cfg.method.value!r} is not computed here (rtn and hqq are): use "
                         "lowbit.quantize, which looks the method up in lowbit's method registry")
    group = group_size_for(w2d.shape[1], cfg.block_size)
    scale_dtype = cfg.scale_torch_dtype
    parts = [quantize_rows(w2d[rows].float(), cfg, group, scale_dtype) for rows in row_chunks(*w2d.shape)]
    codes, scale, zero = (torch.cat(p) if p[0] is not None else None for p in zip(*parts, strict=True))
    return QuantizedWeight(
        packed=pack_bits(codes, cfg.bits), scale=scale, zero=zero, shape=shape, dtype=dtype, bits=cfg.bits,
        block_size=cfg.block_size, symmetric=cfg.symmetric, method=cfg.method.value,
    )


def quantize_rows(w: torch.Tensor, cfg: QuantConfig, group: int, scale_dtype: torch.dtype):
    if cfg.method is QuantMethod.HQQ:
        return quantize_hqq_rows(w, cfg.bits, group, cfg, scale_dtype)
    return quantize_rtn_rows(w, cfg.bits, group, cfg.symmetric, scale_dtype)


def _store_float16(w2d: torch.Tensor, shape, dtype, name: str) -> QuantizedWeight:
    limit = torch.finfo(torch.float16).max
    if bool((w2d.abs() > limit).any()):
        raise ValueError(f"{name} has values beyond float16's range (±{limit}); it cannot be stored with bits=16")
    return QuantizedWeight(packed=w2d.to(torch.float16).contiguous(), scale=None, zero=None, shape=shape,
                           dtype=dtype, bits=16, block_size=-1, symmetric=True, method="fp16")
