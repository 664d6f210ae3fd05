"""The quantization methods, each registering itself with `lowbit.pipeline.register_method` on import.

  plain.py       "rtn", "hqq" (data-free; float16 storage with bits=16) and the data-free walk
  sequential.py  "gptq", "awq": the calibrated walk, group by group in call order (awq.py: channel-scale folding)
  recon/         "recon": learned reconstruction, block by block

Importing this package registers all of them; readers of the registry (lowbit.api, the CLI, checkpoint.convert,
auto) import `method_for` and `methods` from here so the built-ins are always there. Their math is lowbit.quant.
"""

from ..pipeline.registry import MethodSpec, method_for, methods, register_method, unregister_method
from . import plain, recon, sequential  # noqa: F401  (registration)

__all__ = ["MethodSpec", "method_for", "methods", "register_method", "unregister_method"]
