"""torch's own quantized CPU matmuls, called on synthetic weights so their numbers can be checked on this machine.

torch's int8/int4 CPU kernels are chosen per ISA inside torch (ATEN_CPU_CAPABILITY, fbgemm's CPUID), and some are
wrong or crash on some CPUs for some shapes: torch 2.13's `_weight_int8pack_mm` with AVX-512 reads past a row
when K % 16 != 0 (segfaults at M > 1, wrong sums at M = 1 on Intel), while its AVX2 variant is right. So lowbit
never trusts an op's presence alone: `lowbit.runtime.probes` runs `run_case` for every `probe_cases` shape in a
child process, once per machine and torch version, and refuses each `shape_class` where a case failed.

Each case builds its operands the way lowbit's kernels do (cpu_int8 / cpu_int4) and compares the op's output
with a float64 reference on the same codes and scales: SQNR in dB, or -inf for a non-finite output.
"""

from __future__ import annotations

import math
import warnings

import torch

OPS = ("int8pack", "int8_dynamic", "int4pack", "kleidiai", "int_mm")

# Each op's rounding is ~40-55 dB on Gaussian data (bf16 activations, or int8 activations per tensor); a kernel
# that reads the wrong memory lands below 20 dB.
SQNR_FLOOR_DB = {"int8pack": 35.0, "int8_dynamic": 25.0, "int4pack": 35.0, "kleidiai": 30.0,
                 "int_mm": 200.0}  # int_mm: int8 x int8 -> int32 must be exact (inf dB)

# M rows: one row (GEMV paths), a few (tail handling), many (blocked paths).
_M_VALUES = {"M=1": (1,), "M=2..15": (3, 5), "M>=16": (17, 64)}
# N and K aligned or not to 16 (one AVX-512 register of floats); two values per class, so an out-of-bounds read
# that happens to land on harmless memory for one shape is still caught by the other.
_N_VALUES = {True: (16, 48), False: (45, 17)}
_K_VALUES = {  # K values each op accepts: int8pack needs K % 8 == 0, the int4 ops a block dividing K
    "int8pack": {True: (64, 128), False: (72, 136)},
    "int8_dynamic": {True: (64, 128), False: (133, 72)},
    "int4pack": {True: (64, 128)},
    "kleidiai": {True: (64, 128)},
    "int_mm": {True: (64, 128), False: (133, 72)},
}
_GROUP = 32  # int4 block used by the probe (every K above is a multiple)


def shape_class(m: int, n: int, k: int) -> str:
    """The class a (M, N, K) product falls in; probes refuse whole classes, named by this string."""
    mc = "M=1" if m <= 1 else "M=2..15" if m < 16 else "M>=16"
    return f"{mc}, N{'%16=0' if n % 16 == 0 else '%16!=0'}, K{'%16=0' if k % 16 == 0 else '%16!=0'}"


def op_present(op: str) -> bool:
    """True when this torch build has the op (its numbers are another matter: see `run_case`)."""
    aten = torch.ops.aten
    if op == "int8pack":
        return hasattr(torch, "_weight_int8pack_mm")
    if op == "int8_dynamic":
        return hasattr(torch.ops.quantized, "linear_dynamic") and bool(torch.backends.quantized.supported_engines)
    if op == "int4pack":
        return hasattr(aten, "_weight_int4pack_mm_for_cpu") and hasattr(aten, "_convert_weight_to_int4pack_for_cpu")
    if op == "kleidiai":
        return hasattr(aten, "_dyn_quant_matmul_4bit") and hasattr(aten, "_dyn_quant_pack_4bit_weight")
    if op == "int_mm":
        return hasattr(torch, "_int_mm")
    raise ValueError(f"unknown op {op!r}: use one of {OPS}")


def probe_cases(op: str) -> list[tuple[int, int, int]]:
    """The (M, N, K) shapes probed for `op`: two of each dimension per shape class."""
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}: use one of {OPS}")
    return [(m, n, k) for ms in _M_VALUES.values() for m in ms for ns in _N_VALUES.values() for n in ns
            for ks in _K_VALUES[op].values() for k in ks]


def sqnr_db(ref: torch.Tensor, y: torch.Tensor) -> float:
    """20 log10(|ref| / |ref - y|) in float64; -inf when y is not finite or has the wrong shape."""
    if y.shape != ref.shape or not bool(torch.isfinite(y).all()):
        return -math.inf
    err = (ref - y.double()).norm().item()
    return math.inf if err == 0 else 20 * math.log10(ref.norm().item() / err)


def run_case(op: str, m: int, n: int, k: int, seed: int = 0) -> float:
    """Run `op` once on an (M, K) x (N, K) product of seeded data; its SQNR in dB against float64."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + m * 10_007 + n * 101 + k)
    x = torch.randn(m, k, generator=g)
    if op == "int_mm":  # static int8 (lowbit.kernels.cpu_static_int8): int8 (M, K) x int8 (K, N) -> int32, exact
        xq = torch.randint(-127, 128, (m, k), generator=g, dtype=torch.int8)
        wt = torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int8).t().contiguous()
        return sqnr_db(xq.double() @ wt.double(), torch._int_mm(xq, wt))
    if op in ("int8pack", "int8_dynamic"):
        q = torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int8)
        s = torch.rand(n, generator=g) * 0.02 + 0.01
        return _int8_case(op, x, q, s)
    q = torch.randint(0, 16, (n, k), generator=g, dtype=torch.int32)
    s = torch.rand(n, k // _GROUP, generator=g) * 0.1 + 0.01
    return _int4_case(op, x, q, s)


def _int8_case(op: str, x: torch.Tensor, q: torch.Tensor, s: torch.Tensor) -> float:
    if op == "int8pack":
        xb, sb = x.bfloat16(), s.bfloat16()
        y = torch._weight_int8pack_mm(xb, q, sb)
        return sqnr_db(xb.double() @ (q.double() * sb.double()[:, None]).T, y)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantized tensor creation.*deprecated")
        qweight = torch._make_per_channel_quantized_tensor(q, s.double(), torch.zeros(len(s), dtype=torch.long), 0)
    packed = torch.ops.quantized.linear_prepack(qweight, None)
    y = torch.ops.quantized.linear_dynamic(x, packed, True)
    return sqnr_db(x.double() @ (q.double() * s.double()[:, None]).T, y)


def _int4_case(op: str, x: torch.Tensor, q: torch.Tensor, s: torch.Tensor) -> float:
    n, k = q.shape
    s64 = s.double().repeat_interleave(_GROUP, dim=1)  # (N, K / group) -> (N, K)
    if op == "int4pack":
        z = torch.full_like(s, 3.0)  # an asymmetric zero, as HQQ weights have
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
        sz = torch.stack([s.t(), ((8.0 - z) * s).t()], dim=-1).bfloat16().contiguous()
        xb = x.bfloat16()
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(xb, packed, _GROUP, sz)
        w = (q.double() - 8) * sz[..., 0].t().double().repeat_interleave(_GROUP, dim=1) \
            + sz[..., 1].t().double().repeat_interleave(_GROUP, dim=1)
        return sqnr_db(xb.double() @ w.T, y)
    nibbles = (q[:, 0::2] | (q[:, 1::2] << 4)).to(torch.uint8).contiguous()
    packed = torch.ops.aten._dyn_quant_pack_4bit_weight(nibbles, s.contiguous(), None, _GROUP, k, n)
    y = torch.ops.aten._dyn_quant_matmul_4bit(x, packed, _GROUP, k, n)
    return sqnr_db(x.double() @ ((q.double() - 8) * s64).T, y)
