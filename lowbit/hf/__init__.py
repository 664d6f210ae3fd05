"""lowbit inside Hugging Face transformers: `LowbitConfig` and the `quant_method: "lowbit"` quantizer.

Registration is lazy so that `import lowbit` stays cheap (importing transformers' quantizers takes seconds):
`import lowbit` calls `hook.install()`, which registers at once when transformers' quantizer registry is already
imported, and otherwise adds a one-shot import hook that registers right after `transformers.quantizers.auto` is
first imported. `register()` does it explicitly (idempotent). Only `hook` is imported by `import lowbit`; this
package's other modules import transformers.
"""

from __future__ import annotations

from .hook import register

__all__ = ["register", "LowbitConfig"]


def __getattr__(name: str):
    if name == "LowbitConfig":
        try:
            from .config import LowbitConfig
        except ImportError as e:
            raise ImportError(f"lowbit.LowbitConfig is transformers' quantization config: it needs transformers "
                              f"(pip install transformers) ({e})") from None
        return LowbitConfig
    raise AttributeError(f"module 'lowbit.hf' has no attribute {name!r}")
