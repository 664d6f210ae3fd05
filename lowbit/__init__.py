"""lowbit: post-training weight compression for PyTorch, with fused low-bit kernels for GPU (Triton) and CPU.

`import lowbit` is cheap: no GPU is touched, no environment is read, and Triton is imported only when a kernel
first needs it. Public names resolve lazily from their sub-packages. Its one side effect registers quant_method
"lowbit" with transformers without importing it: now if transformers' quantizer registry is already imported, else
by a one-shot import hook that runs when it is (see lowbit.hf.hook).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "QuantConfig": "lowbit.quant",
    "QuantMethod": "lowbit.quant",
    "QuantizedWeight": "lowbit.quant",
    "quantize_weight": "lowbit.quant",
    "BackendConfig": "lowbit.runtime",
    "Memory": "lowbit.runtime",
    "Precision": "lowbit.runtime",
    "capabilities": "lowbit.runtime",
    "quantize": "lowbit.api",  # lowbit.nn.quantize plus calibration= for data-aware methods (method registry)
    "auto_quantize": "lowbit.auto",
    "set_backend": "lowbit.nn",
    "save": "lowbit.checkpoint",
    "load": "lowbit.checkpoint",
    "convert": "lowbit.checkpoint",
    "export": "lowbit.checkpoint",
    "from_pretrained": "lowbit.checkpoint",
    "quantize_static": "lowbit.static",  # offline full INT8 (static W8A8) with calibration data
    "StaticConfig": "lowbit.static",
    "LowbitConfig": "lowbit.hf",  # transformers quantization_config: from_pretrained(..., quantization_config=...)
}

__all__ = ["__version__", *_EXPORTS]

# Packages above lowbit.checkpoint that register checkpoint header sections (lowbit.checkpoint.sections) when
# imported; checkpoint imports them the first time it looks a section up, so `import lowbit` stays cheap.
SECTION_PROVIDERS = ("lowbit.static",)

from .hf import hook as _hf_hook  # noqa: E402  (imports nothing heavy)

_hf_hook.install()


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lowbit' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
