"""Runtime: BackendConfig (memory/precision modes), capabilities(), and the one kernel dispatch function."""

from .capabilities import Capabilities, capabilities
from .config import BackendConfig, Memory, Precision
from .dispatch import Decision, Kernel, WeightFormat, select_kernel, warn_fallback

__all__ = [
    "BackendConfig", "Capabilities", "Decision", "Kernel", "Memory", "Precision", "WeightFormat", "capabilities",
    "select_kernel", "warn_fallback",
]
