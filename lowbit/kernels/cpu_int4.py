"""lowbit's CPU path for packed integer weights: 2..4 bits in the 4-bit container (every implementation below), and
5..8 bits in the 8-bit container (the native kernel only: `supports_int4_cpu` refuses them without it).

Implementations, in the order `prepare_int4_cpu` prefers them (`Int4CpuWeight.impl` names the one chosen):
- "native":   lowbit's own C kernel (`lowbit.kernels.cpu_native`, ISA variant chosen at build time): unsigned codes
              (`pack_q4` for <= 4 bits, `pack_q8` for 5..8) x activations in the scheme asked per call
              (`ACTIVATIONS`: fp32, exact up to fp32 summation; int8 with a scale per 32 input channels; per
              (row, weight block); per row, ~40 dB); exact zeros (any float, HQQ), any K (padded to 64),
              blocks that are multiples of 32 or per channel.
- "kleidiai": torch's `_dyn_quant_matmul_4bit` (ARM KleidiAI; on x86 torch runs a slow reference): symmetric
              weights only (zero = 2**(bits-1)), blocks of 32..K dividing K; int8 activations per row.
- "int4pack": torch's `_weight_int4pack_mm_for_cpu` in bfloat16; blocks 32/64/128/256 dividing K. torch computes
              (q - 8) * scale + zero_t, so zero_t = (8 - z) * s; scales, zeros and activations are rounded to bf16.
- "dequant":  dequantize the compute layout and matmul in fp32 on every call; exact up to fp32, always works.
"""

from __future__ import annotations

import ctypes
import platform
import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..quant.format import ComputeWeight, QuantizedWeight
from . import cpu_native
from .inputs import check_cpu_activations, integer_weight_refusal

IMPLS = ("native", "kleidiai", "int4pack", "dequant")
ACTIVATIONS = cpu_native.ACTIVATIONS
_INT4PACK_GROUPS = (32, 64, 128, 256)


@dataclass(frozen=True)
class Int4CpuWeight:
    """A 2..8-bit weight prepared for one CPU implementation (5..8 bits: "native" and "dequant" only).

    impl: which implementation serves it (see module docstring). n, k: the (N, K) weight shape; bits; group_size.
    tensors: the implementation's own layout, by name:
      native:   packed uint8 (N, Kp/2) (`cpu_native.pack_q4`, bits <= 4) or (N, Kp) (`pack_q8`, bits 5..8; for
                8 bits with K % 64 == 0 the QuantizedWeight's own packed tensor, shared),
                scale / scale_zero fp32 (N, nb); group_k int;
                act_per_row: one int8 activation scale per row (fastest) or per (row, block) (False).
      kleidiai: packed (opaque torch blob).
      int4pack: packed uint8 (N, K/2) (torch layout), scales_zeros bf16 (nb, N, 2).
      dequant:  the ComputeWeight in `compute`.
    tiled (native, 8 bits): rows per tile when packed, scale and scale_zero are in the tiled kernel's layout
    (`cpu_native.pack_q8t`, `tile_scales`; see `tiled_native`), else 0.
    """

    impl: str
    n: int
    k: int
    bits: int
    group_size: int
    tensors: dict
    group_k: int = 0
    compute: ComputeWeight | None = None
    act_per_row: bool = True
    tiled: int = 0

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values() if isinstance(t, torch.Tensor))


def available_int4_cpu() -> bool:
    """Always True: the "dequant" implementation needs nothing but torch."""
    return True


def _int4pack_op_available() -> bool:
    return hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu") and hasattr(
        torch.ops.aten, "_convert_weight_to_int4pack_for_cpu")


def _kleidiai_op_available() -> bool:
    return hasattr(torch.ops.aten, "_dyn_quant_matmul_4bit") and hasattr(torch.ops.aten, "_dyn_quant_pack_4bit_weight")


def _format_reason(qw: QuantizedWeight) -> str | None:
    reason = integer_weight_refusal(qw)
    if reason:
        return reason
    if qw.device.type != "cpu":
        return f"the weight is on {qw.device}; the CPU int4 path needs it on the CPU"
    return None


def impl_unsupported_reason(qw: QuantizedWeight, impl: str) -> str | None:
    """Why `impl` cannot serve `qw` in this process (None = it can)."""
    if impl not in IMPLS:
        raise ValueError(f"impl={impl!r} is unknown: use one of {IMPLS}")
    reason = _format_reason(qw)
    if reason or impl == "dequant":
        return reason
    g = qw.group_size
    if qw.bits > 4 and impl in ("int4pack", "kleidiai"):
        return f"bits={qw.bits} does not fit the 4-bit container of {impl} (the native kernel serves 5..8 bits)"
    if impl == "native":
        if qw.block_size != -1 and g % 32:
            return f"native kernel needs block_size a multiple of 32 or per channel, got {qw.block_size}"
        if not cpu_native.available_native():
            return f"native kernel unavailable: {cpu_native.native_unavailable_reason()}"
        return None
    if impl == "int4pack":
        if not _int4pack_op_available():
            return f"torch {torch.__version__} has no _weight_int4pack_mm_for_cpu"
        if g not in _INT4PACK_GROUPS or qw.k % g:
            return f"int4pack needs a block of 32/64/128/256 dividing K, got group {g} with K={qw.k}"
        if qw.n % 16:
            return f"int4pack needs N divisible by 16, got N={qw.n}"
        return None
    if not _kleidiai_op_available():
        return f"torch {torch.__version__} has no _dyn_quant_matmul_4bit"
    if not qw.symmetric:
        return "kleidiai needs symmetric weights (its zero is fixed at 8)"
    if qw.k % g or g % 32:
        return f"kleidiai needs a block that is a multiple of 32 dividing K, got group {g} with K={qw.k}"
    return None


def supports_int4_cpu(qw: QuantizedWeight) -> str | None:
    """None when some implementation can serve `qw`, else the reason: integer weights of <= 4 bits always; 5..8
    bits when the native kernel serves them (the per-call "dequant" would be slower than the dense fallback)."""
    reason = _format_reason(qw)
    if reason is None and qw.bits > 4:
        reason = impl_unsupported_reason(qw, "native")
    return reason


def default_impl(qw: QuantizedWeight, avoid=None) -> str:
    """The implementation `prepare_int4_cpu` picks: native, then KleidiAI on ARM, then int4pack, then dequant.

    avoid: {impl: reason} for torch ops found wrong or crashing for this weight's shape on this CPU
    (`lowbit.runtime.probes`); they are skipped.
    """
    order = ["native", "int4pack", "dequant"]
    if platform.machine().lower() in ("aarch64", "arm64"):
        order.insert(1, "kleidiai")  # on x86 torch runs it through a slow reference implementation
    avoid = avoid or {}
    return next(i for i in order if i not in avoid and impl_unsupported_reason(qw, i) is None)


def prepare_int4_cpu(qw: QuantizedWeight, impl: str | None = None, act_per_row: bool = True,
                     avoid=None) -> Int4CpuWeight:
    """Build the layout of `impl` (default: `default_impl(qw, avoid)`) once, at load time.

    act_per_row (native only): quantize activations with one scale per row (default, fastest) or one per
    (row, weight block) (more accurate when activations have outliers, ~10-40% slower at M > 1).
    """
    reason = supports_int4_cpu(qw)
    if reason:
        raise ValueError(f"prepare_int4_cpu cannot serve this weight: {reason}")
    impl = impl or default_impl(qw, avoid)
    reason = (avoid or {}).get(impl) or impl_unsupported_reason(qw, impl)
    if reason:
        raise ValueError(f"impl={impl!r} cannot serve this weight: {reason}")
    base = dict(impl=impl, n=qw.n, k=qw.k, bits=qw.bits, group_size=qw.group_size)
    scale = qw.scale.float()
    zero = qw.zero_or_implicit().float()
    if impl == "native":
        if qw.bits == 8 and qw.k % 64 == 0 and qw.packed.is_contiguous():
            packed = qw.packed  # already the 8-bit container (one code per byte, no padding): shared, not copied
        else:
            codes = qw.unpack()
            packed = cpu_native.pack_q4(codes) if qw.bits <= 4 else cpu_native.pack_q8(codes)
        group_k = -(-qw.k // 64) * 64 if qw.block_size == -1 else qw.group_size
        # fresh tensors go to huge pages (M = 1 streams every byte once per token: 4 KiB pages halved its GB/s);
        # the 8-bit codes shared with qw stay where they are (a copy would double them at memory Low), their
        # whole huge pages collapsed in place
        place = cpu_native.huge_copy
        return Int4CpuWeight(**base, group_k=group_k, act_per_row=bool(act_per_row), tensors={
            "packed": cpu_native.advise_huge(packed) if packed is qw.packed else place(packed), "scale": place(scale),
            "scale_zero": place(scale * zero)})
    if impl == "int4pack":
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(qw.unpack().to(torch.int32), 1)
        # torch: w = (q - 8) * s + zero_t  ==  (q - z) * s  when zero_t = (8 - z) * s; (nb, N, 2) layout
        sz = torch.stack([scale.t(), ((8.0 - zero) * scale).t()], dim=-1).to(torch.bfloat16).contiguous()
        return Int4CpuWeight(**base, tensors={"packed": packed, "scales_zeros": sz})
    if impl == "kleidiai":
        # symmetric codes shifted so the implicit zero 2**(bits-1) lands on KleidiAI's fixed zero of 8
        codes = qw.unpack() + (8 - (1 << (qw.bits - 1)))
        nibbles = (codes[:, 0::2] | (codes[:, 1::2] << 4)).contiguous()  # K is even: a multiple of 32
        packed = torch.ops.aten._dyn_quant_pack_4bit_weight(nibbles, scale.contiguous(), None, qw.group_size,
                                                            qw.k, qw.n)
        return Int4CpuWeight(**base, tensors={"packed": packed})
    return Int4CpuWeight(**base, tensors={}, compute=qw.compute_layout())


def tiled_native(w4: Int4CpuWeight, library=None) -> Int4CpuWeight | None:
    """`w4` (native, 8-bit codes, row-major) with its codes and scales re-laid for the tiled kernel of this build
    (`cpu_native.pack_q8t`: read in place at every M, no per-call transpose); None where the build has no tiled kernel
    or w4 is not such a weight. The same numbers as `w4` (bit-identical where gemm_q8 takes the tiled kernel)."""
    rows = cpu_native.q8t_rows(library)
    if not rows or not isinstance(w4, Int4CpuWeight) or w4.impl != "native" or w4.bits <= 4 or w4.tiled:
        return None
    t = w4.tensors
    return Int4CpuWeight(impl="native", n=w4.n, k=w4.k, bits=w4.bits, group_size=w4.group_size, group_k=w4.group_k,
                         act_per_row=w4.act_per_row, tiled=rows, tensors={
                             "packed": cpu_native.pack_q8t(t["packed"], rows),
                             "scale": cpu_native.tile_scales(t["scale"], rows),
                             "scale_zero": cpu_native.tile_scales(t["scale_zero"], rows)})


def _check_bias(bias: torch.Tensor | None, n: int) -> None:
    # the native kernel reads bias[n] for every output column: a wrong length would read out of bounds
    if bias is not None and (not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (n,)):
        raise ValueError(f"bias has shape {tuple(getattr(bias, 'shape', ()))}; expected ({n},) or None")


def _check_x(x: torch.Tensor, w4: Int4CpuWeight) -> None:
    if not isinstance(w4, Int4CpuWeight):
        raise TypeError(f"w4 must be an Int4CpuWeight from prepare_int4_cpu, got {type(w4).__name__}")
    check_cpu_activations(x, w4.n, w4.k, "linear_int4_cpu")


def linear_int4_cpu(x: torch.Tensor, w4: Int4CpuWeight, bias: torch.Tensor | None = None,
                    activations: str | None = None) -> torch.Tensor:
    """y = x @ W.T + bias with W the <=4-bit weight behind `w4`. x: float (M, K) on CPU; bias (N,) or None.

    activations (native only): the activation scheme, one of `ACTIVATIONS` ("fp32": exact up to fp32 summation;
    "int8/32": int8 with a scale per 32 input channels; "int8/block": per (row, weight block); "int8/row": per row);
    None: `w4.act_per_row`'s choice. The runtime passes the one its dispatch decision names (the precision mode);
    the other implementations run their own scheme (int4pack bf16, kleidiai int8 per row, dequant fp32), which
    is why dispatch refuses them at precision Normal/High.
    Returns (M, N) in x.dtype. Accuracy per implementation: see the module docstring.
    """
    _check_x(x, w4)
    _check_bias(bias, w4.n)
    if activations is not None and activations not in ACTIVATIONS:
        raise ValueError(f"activations={activations!r} is unknown: use one of {ACTIVATIONS}")
    t = w4.tensors
    if w4.impl == "native" and w4.tiled:
        act = activations or ("int8/row" if w4.act_per_row else "int8/block")
        b = None if bias is None else bias.float().contiguous()
        y = cpu_native.gemm_q8t(x.float().contiguous(), t["packed"], t["scale"], t["scale_zero"], w4.n, w4.k,
                                w4.group_k, b, activations=act)
        return y.to(x.dtype)
    if w4.impl == "native":
        b = None if bias is None else bias.float().contiguous()
        gemm = cpu_native.gemm_q4 if w4.bits <= 4 else cpu_native.gemm_q8
        y = gemm(x.float().contiguous(), t["packed"], t["scale"], t["scale_zero"], w4.k, w4.group_k, b,
                 act_per_row=w4.act_per_row, activations=activations)
        return y.to(x.dtype)
    if w4.impl == "int4pack":
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x.to(torch.bfloat16).contiguous(), t["packed"],
                                                       w4.group_size, t["scales_zeros"])
    elif w4.impl == "kleidiai":
        y = torch.ops.aten._dyn_quant_matmul_4bit(x.float().contiguous(), t["packed"], w4.group_size, w4.k, w4.n)
    else:
        y = F.linear(x.float(), w4.compute.dequantize(torch.float32))
    if bias is not None:
        y = y.float() + bias.float()
    return y.to(x.dtype)


_ARENA = threading.local()  # per thread: one uint8 scratch tensor for the bound calls' activation buffers
_ARENA_MAX_BYTES = 4 << 20  # larger scratch (long prompts) is allocated per call instead of kept
_ALIGN = 64


def _untyped(fn):
    """`fn` without ctypes argtypes: called with ready ctypes objects it skips per-argument conversion (~1 us of a
    15-argument call); every argument passed must then carry its exact C type."""
    raw = ctypes.CFUNCTYPE(None)(ctypes.cast(fn, ctypes.c_void_p).value)
    raw.argtypes = None
    return raw


_P, _I64, _I32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int


class NativeCall:
    """`linear_int4_cpu` of one native weight and activation scheme with every argument but the activation fixed:
    the runtime's fast path (`bind_int4_cpu`). Calling it checks nothing.

    `call(x_ptr, m, y_ptr, bias_ptr, num_threads)`: y (m, N) fp32 = act(x) @ W.T + bias for x fp32 contiguous
    (m, K) at `x_ptr`, bias fp32 (N,) at `bias_ptr` (None: no bias), y written at `y_ptr`; m <= `max_m`. The same
    C calls as `cpu_native.gemm_q4` / `gemm_q8` with the same arguments, so the output is bit-identical to
    `linear_int4_cpu`'s; the int8 schemes' scratch (quantized rows, their scales and sums) comes from one buffer kept
    per thread.
    """

    __slots__ = ("_f32", "_gemm", "_last", "_mode", "_ndx", "_quant", "_qargs", "_wargs", "k", "kp", "max_m", "n",
                 "nb", "weight")

    def __init__(self, w4: Int4CpuWeight, activations: str, lib):
        t = w4.tensors
        self.weight = w4  # keeps the tensors behind the pointers alive
        self.n, self.k, self.nb = w4.n, w4.k, t["scale"].shape[1]
        tp = t["packed"]
        self.kp = tp.shape[1] * tp.shape[3] if w4.tiled else tp.shape[1] * 8 // (4 if w4.bits <= 4 else 8)
        self._f32 = activations == "fp32"
        self._last = (None, None)  # (arena pointer, m, its three scratch pointers as ctypes objects)
        # lb_gemm_*'s leading arguments: weight, scales, scale*zero, N, Kp, 32-column sub-blocks per block, blocks
        self._wargs = (_P(t["packed"].data_ptr()), _P(t["scale"].data_ptr()), _P(t["scale_zero"].data_ptr()),
                       _I64(self.n), _I64(self.kp), _I64(w4.group_k // 32), _I64(self.nb))
        if self._f32:  # the register kernel (below F32_BLOCKED_MIN_M rows; `_gemm_f32` tiles larger M)
            self.max_m = cpu_native.F32_BLOCKED_MIN_M - 1
            self._gemm = _untyped(lib.lb_gemm_f32)
            self._mode = _I32(4 if w4.bits <= 4 else 8)  # lb_gemm_f32's last argument: the container bits
        else:
            self.max_m = 1 << 62
            self._mode = _I32(cpu_native.INT8_ACT_MODES[activations])
            self._ndx = self.kp // 32 if activations == "int8/32" else self.nb
            self._quant = _untyped(lib.lb_quant_act)
            self._qargs = (_I64(self.k), _I64(self.kp), _I64(w4.group_k), _I64(self.nb), self._mode)
            self._gemm = _untyped(lib.lb_gemm_q8t if w4.tiled else lib.lb_gemm_q4 if w4.bits <= 4 else lib.lb_gemm_q8)

    def __call__(self, x_ptr: int, m: int, y_ptr: int, bias_ptr: int | None, nt: int) -> None:
        cm, cx, cy, cb, cnt = _I64(m), _P(x_ptr), _P(y_ptr), _P(bias_ptr), _I32(nt)
        if self._f32:
            self._gemm(*self._wargs, cx, cm, cb, cy, cnt, self._mode)
            return
        off_d = m * self.kp  # a multiple of 64
        off_s = off_d + -(-4 * m * self._ndx // _ALIGN) * _ALIGN
        need = off_s + 4 * m * self.nb
        buf = getattr(_ARENA, "buf", None)
        if buf is None or buf.numel() < need:
            buf = torch.empty(need, dtype=torch.uint8)
            if need <= _ARENA_MAX_BYTES:
                _ARENA.buf = buf
        p = buf.data_ptr()
        last = self._last  # one attribute, replaced whole: threads sharing this call never see a mixed pair
        if last[0] != p or last[1] != m:
            last = self._last = (p, m, _P(p), _P(p + off_d), _P(p + off_s))
        q, d, s = last[2], last[3], last[4]
        self._quant(cx, cm, *self._qargs, q, d, s, cnt)
        self._gemm(*self._wargs, q, d, s, cm, self._mode, cb, cy, cnt)


def bind_int4_cpu(w4: Int4CpuWeight, activations: str | None) -> NativeCall | None:
    """The fast call of `w4` at this activation scheme (see `NativeCall`), or None where `linear_int4_cpu` would
    not run the native kernel's plain calls: another implementation, fp32 activations with K not a multiple of 64
    (the slow path pads x), or the native library missing."""
    if not isinstance(w4, Int4CpuWeight) or w4.impl != "native":
        return None
    act = activations or ("int8/row" if w4.act_per_row else "int8/block")
    if act not in ACTIVATIONS or (act == "fp32" and (w4.k % 64 or w4.tiled)):
        return None
    lib = cpu_native.native_library()
    return None if lib is None else NativeCall(w4, act, lib.lib)
