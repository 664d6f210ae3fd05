"""Kernel choice for static W8A8 layers (`lowbit.nn.static`): lowbit's native CPU kernel where it is built
(`lowbit.kernels.cpu_static_int8`, VNNI / AVX2 / plain C), else torch's int8 matmul where this machine's probe found
it exact for the shape class, else the exact float64 emulation; on a GPU, the Triton int8 kernel with the static
step. A pure function of (device, shape, caps)."""

from __future__ import annotations

from ..kernels.cpu_static_int8 import NATIVE_MAX_K
from .capabilities import Capabilities


def select_static_impl(device_type: str, m: int, n: int, k: int, caps: Capabilities) -> tuple[str, str | None]:
    """("native" | "int_mm" | "emulated" | "triton", why not a fast kernel or None) for an (M, K) x (N, K) product."""
    if device_type == "cuda" and caps.triton_gpu:
        return "triton", None
    if device_type != "cpu":
        return "emulated", f"no static int8 kernel for tensors on {device_type} here (Triton GPU unavailable)"
    if caps.native_extension and k <= NATIVE_MAX_K:
        return "native", None
    if "int_mm" not in caps.torch_ops_probed:
        return "emulated", "torch._int_mm is absent or was not probed on this machine"
    refusal = caps.torch_op_refusal("int_mm", m, n, k)
    if refusal is not None:
        return "emulated", f"torch._int_mm refused here: {refusal}"
    return "int_mm", None
