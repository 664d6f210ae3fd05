"""Runtime: BackendConfig (memory/precision modes), capabilities(), the kernel table and the one kernel dispatch."""

from .capabilities import Capabilities, capabilities
from .config import BackendConfig, Memory, Precision
from .dispatch import Decision, Kernel, WeightFormat, select_kernel, warn_fallback
from .kernel_row import KernelRow, StaticKernel
from .kernel_table import kernel_rows, register_kernel, unregister_kernel

__all__ = [
    "BackendConfig", "Capabilities", "Decision", "Kernel", "KernelRow", "Memory", "Precision", "StaticKernel",
    "WeightFormat", "capabilities", "kernel_rows", "register_kernel", "select_kernel", "unregister_kernel",
    "warn_fallback",
]
