"""Kernel choice for static W8A8 layers (`lowbit.nn.static`): torch's int8 matmul where this machine's probe
found it exact for the shape class, else the exact float64 emulation. A pure function of (device, shape, caps)."""

from __future__ import annotations

from .capabilities import Capabilities


def select_static_impl(device_type: str, m: int, n: int, k: int, caps: Capabilities) -> tuple[str, str | None]:
    """("int_mm" | "emulated", why not int_mm or None) for an (M, K) x (N, K) static int8 product."""
    if device_type != "cpu":
        return "emulated", f"static int8 runs torch._int_mm on the CPU only (tensor on {device_type})"
    if "int_mm" not in caps.torch_ops_probed:
        return "emulated", "torch._int_mm is absent or was not probed on this machine"
    refusal = caps.torch_op_refusal("int_mm", m, n, k)
    if refusal is not None:
        return "emulated", f"torch._int_mm refused here: {refusal}"
    return "int_mm", None
