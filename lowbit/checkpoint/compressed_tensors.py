"""The compressed-tensors `pack-quantized` format (what vLLM loads), as a pure mapping from `QuantizedWeight`.

Per quantized Linear `m` (compressed-tensors >= 0.17, `compressors/pack_quantized`):
  m.weight_packed      int32 (N, ceil(K*b/32)): unsigned codes `q + 2**(b-1)` (q signed), one dense LSB-first
                       bit stream per row across little-endian int32 words; each row starts a new word.
  m.weight_scale       (N, K/g) in the model's float dtype (g = K, shape (N, 1), for strategy "channel").
  m.weight_shape       int64 [N, K].
  m.weight_zero_point  asymmetric only: the unsigned zeros packed along dim 0 (N) into int32 words, in one of two
                       layouts (`ZP_LAYOUTS`): "transformers" (default) int32 (N, K/g), the ceil(N*b/32) packed rows
                       followed by zero rows: transformers 5.25 builds the parameter with the unpacked shape (N, G)
                       (compressed-tensors 0.20.1 does not pack it on the meta device) and then unpacks it along N,
                       which reads only the first ceil(N*b/32) rows; "vllm": int32 (ceil(N*b/32), K/g), the packed
                       rows alone (what the package's own compressor writes and vLLM allocates).
Rule: w = (q - zp) * s with q, zp signed. A lowbit row (ceil(K*b/8) bytes, LSB-first) padded to a multiple of 4
bytes and read as little-endian int32 is that row already, for every b in 2..8; lowbit's unsigned code and zero are
the stored unsigned values, so (q_u - z_u) * s is lowbit's own rule and dequantization agrees bit for bit.

Not representable (`unrepresentable`): a last short block (K % g != 0), a non-integer zero (HQQ, lowbit RTN),
weights that are not a Linear's rank-2 `weight` (Conv, LSTM), and float16 storage (bits 16). `requantize` gives
such a block-quantized weight an integer zero and a group size that divides K.
"""

from __future__ import annotations

import sys

import torch

from ..quant.blocks import block_views
from ..quant.format import QuantizedWeight, num_blocks_for
from ..quant.formats import format_refusal
from ..quant.packing import pack_bits, packed_row_bytes
from ..quant.rtn import rtn_codes, rtn_scale_zero

FORMAT = "compressed-tensors"
PACK_FORMAT = "pack-quantized"
MIN_VERSION = "0.17"  # older releases pack 3, 5, 6 and 7 bits differently
VLLM_BITS = (4, 8)  # vLLM's WNA16 schemes serve these widths; the others are valid files vLLM refuses


def module_of(param: str) -> str | None:
    """`encoder.fc.weight` -> `encoder.fc`; None when the parameter is not a module's `weight`."""
    module, _, leaf = param.rpartition(".")
    return module if leaf == "weight" and module else None


def effective_group(qw: QuantizedWeight) -> int:
    """The compressed-tensors group size: -1 (strategy "channel") when a row has one block, else block_size."""
    return -1 if qw.num_blocks == 1 else qw.block_size


def integer_zero(zero: torch.Tensor, bits: int) -> bool:
    """Every zero an integer in the unsigned code range [0, 2**bits)."""
    z = zero.double()
    return bool(((z == z.round()) & (z >= 0) & (z < (1 << bits))).all())


def unrepresentable(name: str, qw: QuantizedWeight) -> str | None:
    """Why `qw` (parameter `name`) cannot be written exactly as pack-quantized, or None when it can."""
    if format_refusal(qw):
        return f"{format_refusal(qw)}: pack-quantized holds affine integer codes"
    if module_of(name) is None or len(qw.shape) != 2:
        return f"not a Linear weight (shape {list(qw.shape)}): pack-quantized holds Linear weights only"
    if qw.is_float:
        return "stored as float16 (bits 16), not integer codes"
    if qw.num_blocks > 1 and qw.k % qw.block_size:
        return f"K={qw.k} is not a multiple of block {qw.block_size} (a last short block)"
    if not qw.symmetric and not integer_zero(qw.zero, qw.bits):
        return f"asymmetric with non-integer zeros (method {qw.method})"
    return None


def can_requantize(name: str, qw: QuantizedWeight) -> bool:
    """Requantizing helps integer-coded Linear weights only (not Conv/LSTM, not float16 storage)."""
    return module_of(name) is not None and len(qw.shape) == 2 and format_refusal(qw) is None and not qw.is_float


def requantize_group(k: int, block_size: int) -> int:
    """Group size for requantizing: block_size when it divides K, else the largest multiple of 16 below it that
    divides K, else -1 (per channel)."""
    if block_size == -1 or k % block_size == 0:
        return block_size
    for g in range(block_size - block_size % 16, 0, -16):
        if k % g == 0:
            return g
    return -1


def requantize(qw: QuantizedWeight, dtype: torch.dtype, weight: torch.Tensor | None = None) -> QuantizedWeight:
    """RTN of lowbit's dequantized weight (or of `weight`, e.g. with smoothing folded back) with the same bits and
    symmetry, integer zeros, scales in `dtype`."""
    w = qw.dequantize(torch.float32).reshape(qw.n, qw.k) if weight is None else weight
    return quantize_exact(w, qw.bits, qw.block_size, qw.symmetric, dtype, qw.dtype)


def quantize_exact(w: torch.Tensor, bits: int, block_size: int, symmetric: bool, scale_dtype: torch.dtype,
                   dtype: torch.dtype | None = None) -> QuantizedWeight:
    """RTN of a float (N, K) weight into what pack-quantized holds exactly: integer zeros and a group size that
    divides K (`requantize_group`); `dtype` the weight's own dtype (default w's)."""
    n, k = w.shape
    block = requantize_group(k, block_size)
    g = k if block == -1 else block
    codes, scales, zeros = [], [], []
    for blocks in block_views(w.to(torch.float32), g):  # (N, nb, g): g divides K, so there is no short block
        scale, zero = rtn_scale_zero(blocks, bits, symmetric, scale_dtype)
        if zero is not None:
            zero = zero.double().round().clamp(0, (1 << bits) - 1).to(scale_dtype)
        codes.append(rtn_codes(blocks, scale, zero, bits).flatten(1))
        scales.append(scale)
        zeros.append(zero)
    return QuantizedWeight(packed=pack_bits(torch.cat(codes, 1), bits), scale=torch.cat(scales, 1),
                           zero=None if symmetric else torch.cat(zeros, 1), shape=(n, k), dtype=dtype or w.dtype,
                           bits=bits, block_size=block, symmetric=symmetric, method="rtn")


def _rows_as_words(packed: torch.Tensor) -> torch.Tensor:
    """uint8 (R, B) little-endian bit streams -> int32 (R, ceil(B/4)), each row padded to whole words."""
    if sys.byteorder != "little":
        raise RuntimeError("compressed-tensors export needs a little-endian host")
    rows, width = packed.shape
    # a fresh row-major buffer: a transposed (1, N) view is "contiguous" with strides view() cannot reinterpret
    out = torch.zeros((rows, width + (-width % 4)), dtype=torch.uint8)
    out[:, :width] = packed
    return out.view(torch.int32)


def packed_words(k: int, bits: int) -> int:
    """int32 words per packed row: ceil(K*b/32)."""
    return (packed_row_bytes(k, bits) + 3) // 4


ZP_LAYOUTS = ("transformers", "vllm")


def zero_point_shape(n: int, nb: int, bits: int, layout: str = "transformers") -> tuple[int, int]:
    """Shape of the stored zero points: (N, nb) padded for transformers, (ceil(N*b/32), nb) packed for vLLM."""
    if layout not in ZP_LAYOUTS:
        raise ValueError(f"unknown zero-point layout {layout!r}; one of {', '.join(ZP_LAYOUTS)}")
    return (n, nb) if layout == "transformers" else (packed_words(n, bits), nb)


def pack_zero_point(zero: torch.Tensor, bits: int, layout: str = "transformers") -> torch.Tensor:
    """Integer zeros (N, nb) in [0, 2**b) -> int32 packed along N (compressed-tensors'
    `pack_to_int32(zp_signed, b, packed_dim=0)`, whose stored values are zp_signed + 2**(b-1) = lowbit's zero),
    zero-padded to N rows for the "transformers" layout (`zero_point_shape`)."""
    n, nb = zero.shape
    z = zero.double().round().to(torch.uint8).t()  # (nb, N): one bit stream per block column
    words = _rows_as_words(pack_bits(z, bits)).t()  # (ceil(N*b/32), nb)
    out = torch.zeros(zero_point_shape(n, nb, bits, layout), dtype=torch.int32)
    out[: words.shape[0]] = words
    return out


def ct_tensors(qw: QuantizedWeight, dtype: torch.dtype, zp_layout: str = "transformers") -> dict[str, torch.Tensor]:
    """The pack-quantized tensors (suffix -> tensor) of a representable 2-D weight; scales cast to `dtype`."""
    out = {"weight_packed": _rows_as_words(qw.packed), "weight_scale": qw.scale.to(dtype),
           "weight_shape": torch.tensor([qw.n, qw.k], dtype=torch.int64)}
    if not qw.symmetric:
        out["weight_zero_point"] = pack_zero_point(qw.zero, qw.bits, zp_layout)
    return out


def ct_shapes(qw: QuantizedWeight, dtype: torch.dtype,
              zp_layout: str = "transformers") -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    """suffix -> (dtype, shape) of `ct_tensors(qw, dtype)`, without computing them."""
    nb = num_blocks_for(qw.k, qw.block_size)
    out = {"weight_packed": (torch.int32, (qw.n, packed_words(qw.k, qw.bits))), "weight_scale": (dtype, (qw.n, nb)),
           "weight_shape": (torch.int64, (2,))}
    if not qw.symmetric:
        out["weight_zero_point"] = (torch.int32, zero_point_shape(qw.n, nb, qw.bits, zp_layout))
    return out


def scale_cast_exact(qw: QuantizedWeight, dtype: torch.dtype) -> bool:
    """Casting the stored scales to the model dtype loses nothing."""
    return bool((qw.scale.to(dtype).to(qw.scale.dtype) == qw.scale).all())


def weights_args(bits: int, group: int, symmetric: bool) -> dict:
    """The documented `QuantizationArgs` fields of one group (static int weights)."""
    return {"num_bits": bits, "type": "int", "symmetric": symmetric,
            "strategy": "channel" if group == -1 else "group", "group_size": None if group == -1 else group,
            "dynamic": False, "observer": "minmax"}


def quantization_config(groups: dict[tuple[int, int, bool], list[str]], ignore: list[str]) -> dict:
    """config.json's `quantization_config`: one config group per (bits, group, symmetric) with its module names."""
    config_groups = {}
    for i, (key, modules) in enumerate(sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], not kv[0][2]))):
        config_groups[f"group_{i}"] = {"targets": sorted(modules), "weights": weights_args(*key)}
    return {"quant_method": FORMAT, "format": PACK_FORMAT, "quantization_status": "compressed",
            "config_groups": config_groups, "ignore": sorted(set(ignore))}

