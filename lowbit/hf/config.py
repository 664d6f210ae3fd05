"""`LowbitConfig`: the transformers quantization config of quant_method "lowbit" (what config.json carries)."""

from __future__ import annotations

from transformers.utils.quantization_config import QuantizationConfigMixin

from ..quant.config import QuantConfig
from ..runtime.config import BackendConfig

QUANT_METHOD = "lowbit"
CONFIG_VERSION = 1


class LowbitConfig(QuantizationConfigMixin):
    """How `from_pretrained(..., quantization_config=LowbitConfig(...))` quantizes, and how lowbit folders load.

    bits (2..8), block_size (channels per scale, -1 per output channel), method (a data-free method: "rtn", "hqq"
    or a registered one), symmetric and scale_dtype are the `lowbit.QuantConfig` of every quantized Linear.
    memory / precision are the `lowbit.BackendConfig` the quantized layers compute with (Normal, High, Low; see
    lowbit.runtime).
    modules_to_not_convert: module names (or name prefixes) kept float; None keeps transformers' default (the
    output embedding / lm_head and tied weights). A folder written by lowbit (convert, save_pretrained) keeps each
    layer's own settings in its safetensors header; the fields here are then the defaults it was made with.
    """

    def __init__(self, bits: int = 4, block_size: int = 64, method: str = "rtn", symmetric: bool = False,
                 scale_dtype: str = "float16", memory: str = "normal", precision: str = "normal",
                 modules_to_not_convert: list[str] | None = None, version: int = CONFIG_VERSION, **kwargs):
        if kwargs:
            raise ValueError(f"LowbitConfig: unknown keys {sorted(kwargs)}; valid keys: bits, block_size, method, "
                             "symmetric, scale_dtype, memory, precision, modules_to_not_convert")
        if not isinstance(version, int) or version > CONFIG_VERSION:
            raise ValueError(f"LowbitConfig version {version!r} is newer than this lowbit reads ({CONFIG_VERSION}); "
                             "upgrade lowbit")
        self.quant_method = QUANT_METHOD
        self.bits, self.block_size, self.method = bits, block_size, method
        self.symmetric, self.scale_dtype = symmetric, scale_dtype
        self.memory, self.precision = memory, precision
        self.modules_to_not_convert = modules_to_not_convert
        self.version = CONFIG_VERSION
        self.post_init()

    def post_init(self) -> None:
        """Check every field now (ValueError naming it), so a bad config fails before any weight is read."""
        self.quant_config()
        backend = self.backend()
        self.memory, self.precision = backend.memory.value, backend.precision.value
        skip = self.modules_to_not_convert
        if skip is not None and (not isinstance(skip, (list, tuple)) or not all(isinstance(s, str) for s in skip)):
            raise ValueError(f"LowbitConfig: modules_to_not_convert must be a list of module names, got {skip!r}")
        self.modules_to_not_convert = list(skip) if skip is not None else None

    def check_on_load(self) -> None:
        """Quantizing on load is data-free: ValueError for a method that needs calibration (a folder made with it
        by `lowbit convert` loads fine, its header says what each layer is)."""
        cfg = self.quant_config()
        if cfg.data_aware:  # the method registry's needs-calibration flag (or awq=True)
            raise ValueError(f"LowbitConfig: method={cfg.method.value!r} needs calibration data, which "
                             "from_pretrained has not: use a data-free method ('rtn', 'hqq', or one registered "
                             "with lowbit.pipeline.register_method), or make the folder with "
                             "`lowbit convert --model FOLDER --calib TEXT --tokenizer FOLDER` and load that")

    def quant_config(self) -> QuantConfig:
        try:
            return QuantConfig(bits=self.bits, block_size=self.block_size, method=self.method,
                               symmetric=self.symmetric, scale_dtype=self.scale_dtype)
        except (ValueError, TypeError) as e:
            raise ValueError(f"LowbitConfig: {e}") from None

    def backend(self) -> BackendConfig:
        try:
            return BackendConfig(memory=self.memory, precision=self.precision)
        except (ValueError, TypeError) as e:
            raise ValueError(f"LowbitConfig: {e}") from None

    def to_dict(self) -> dict:
        return {"quant_method": QUANT_METHOD, "version": self.version, "bits": self.bits,
                "block_size": self.block_size, "method": str(getattr(self.method, "value", self.method)),
                "symmetric": self.symmetric, "scale_dtype": self.scale_dtype, "memory": self.memory,
                "precision": self.precision, "modules_to_not_convert": self.modules_to_not_convert}

    @classmethod
    def from_dict(cls, config_dict: dict, return_unused_kwargs: bool = False, **kwargs):
        d = {k: v for k, v in config_dict.items() if k != "quant_method"}
        if config_dict.get("quant_method", QUANT_METHOD) != QUANT_METHOD:
            raise ValueError(f"LowbitConfig.from_dict: quant_method {config_dict['quant_method']!r} is not "
                             f"{QUANT_METHOD!r}")
        config = cls(**d)
        unused = config.update(**kwargs)
        return (config, unused) if return_unused_kwargs else config
