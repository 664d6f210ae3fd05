"""Which kernel a quantized parameter runs with: the question tests, benchmarks and plug-ins ask of a layer."""

from __future__ import annotations

import math

from ..runtime.dispatch import Kernel, WeightFormat, select_kernel
from . import format_exec
from .lstm import QuantLSTM
from .weight_cache import compute_view, current_capabilities, entry_for


def kernel_for(module, name: str, m: int, device_type: str | None = None) -> Kernel | str:
    """The kernel quantized parameter `name` of `module` runs with at M rows (what dispatch picks; no warning),
    for a weight of any format: a `Kernel` member, or the name of a registered kernel row. A QuantLSTM that runs
    torch's fused LSTM on float gate weights (`QuantLSTM.fused_decision`) reports DENSE for each of its weights."""
    if isinstance(module, QuantLSTM):
        fused = module.fused_decision(device_type or next(iter(module.buffers())).device.type)
        if fused is not None:
            return fused.kernel
    if module.is_affine(name):
        packed, scale, zero, shape, bits, block = module._op_args(name)
        qw = compute_view(packed, scale, zero, [shape[0], math.prod(shape[1:])], bits, block)
        fmt = WeightFormat.of(qw, entry_for(qw).refused)
        device = qw.device.type
    else:
        qw, entry = format_exec.weight_state(module, name)
        fmt = WeightFormat.of(format_exec.DispatchView.of(qw), entry.refused)
        device = next(iter(module.format_tensors(name).values())).device.type
    return select_kernel(device_type or device, m, fmt, current_capabilities(), module.backend).kernel
