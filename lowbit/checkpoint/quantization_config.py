"""The `quantization_config` a lowbit model folder's config.json carries (no transformers import here).

`lowbit convert` stamps it into the config.json it writes; `lowbit.hf.LowbitConfig` (above checkpoint) reads it back.
With it, `AutoModelForCausalLM.from_pretrained(folder)` loads the packed weights through lowbit's quantizer instead
of initialising every quantized Linear at random; each layer's own settings stay in the safetensors header.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..quant.config import QuantConfig
from .hf_folder import CONFIG_NAME, read_config, write_json

QUANT_METHOD = "lowbit"


def quantization_config(cfg: QuantConfig, skipped: Iterable[str] = ()) -> dict:
    """The dict `LowbitConfig.from_dict` reads: the model-wide defaults the folder was made with.

    cfg: the default QuantConfig (a data-aware method is recorded as it is; loading reads the header, not these
    fields). skipped: module names kept float, recorded as modules_to_not_convert."""
    return {"quant_method": QUANT_METHOD, "version": 1, "bits": cfg.bits, "block_size": cfg.block_size,
            "method": cfg.method.value, "symmetric": cfg.symmetric, "scale_dtype": cfg.scale_dtype,
            "memory": "normal", "precision": "normal", "modules_to_not_convert": sorted(skipped) or None}


def stamp_quantization_config(written: Iterable[Path], cfg: QuantConfig, skipped: Iterable[str] = ()) -> None:
    """Add `quantization_config` to the config.json among the files convert copied into its output folder."""
    for path in written:
        if Path(path).name == CONFIG_NAME:
            config = read_config(Path(path))
            config["quantization_config"] = quantization_config(cfg, skipped)
            write_json(Path(path), config)
