"""`LowbitHfQuantizer`: transformers' quantizer for quant_method "lowbit".

Two paths, chosen by transformers (`pre_quantized`: the folder's config.json has a lowbit quantization_config):
- quantize on load: each Linear weight goes through `LowbitQuantize` as soon as transformers has read it, and the
  module is swapped for a QuantLinear there and then; the model is built on the meta device, so the float model is
  never held whole (at most one float weight at a time, since transformers loads synchronously in this mode).
- load packed weights: before loading, the meta model's Linears named in the files' lowbit metadata become
  QuantLinears with meta buffers of the stored shapes and dtypes; transformers then fills them by name.
Both refuse a folder whose files miss tensors of the model (transformers would initialise them at random).
`save_pretrained` writes the packed buffers and the lowbit metadata into the safetensors header, so the saved
folder is also a lowbit checkpoint and reloads bit-exactly.
"""

from __future__ import annotations

import torch
from transformers.quantizers.base import HfQuantizer
from transformers.quantizers.quantizers_utils import get_module_from_name, should_convert_module

from ..checkpoint.header import INPUT_SCALE, build_metadata, tensor_name
from .config import LowbitConfig
from .files import check_covers_model, check_places_packed, file_entries, read_lowbit_header


class LowbitHfQuantizer(HfQuantizer):
    """Quantize on load (RTN / HQQ, per `LowbitConfig`) or load a lowbit folder's packed weights."""

    requires_calibration = False
    quantization_config: LowbitConfig

    def __init__(self, quantization_config, **kwargs):
        super().__init__(quantization_config, **kwargs)
        if not self.pre_quantized:
            quantization_config.check_on_load()
        self.skip: list[str] = []

    def validate_environment(self, *args, **kwargs):
        device_map = kwargs.get("device_map")
        if isinstance(device_map, dict) and "disk" in device_map.values():
            raise ValueError("lowbit: disk offload is not supported; load the model on one device")

    def _process_model_before_weight_loading(self, model, checkpoint_files=None, **kwargs):
        cfg = self.quantization_config
        self.skip = self.get_modules_to_not_convert(model, cfg.modules_to_not_convert, model._keep_in_fp32_modules)
        folder = str(getattr(model.config, "name_or_path", "") or "the folder")
        if self.pre_quantized:
            if not checkpoint_files:
                raise ValueError(f"{folder}: a lowbit folder needs its .safetensors weight files")
            body, entries = read_lowbit_header(checkpoint_files)
            swap_to_packed(model, body, entries, cfg.backend(), folder)
            check_places_packed(model, entries, folder)
            in_files = entries
        elif checkpoint_files:
            in_files = file_entries(checkpoint_files)
        else:
            return model
        check_covers_model(model, checkpoint_files, in_files, folder)
        return model

    def param_needs_quantization(self, model, param_name: str, **kwargs) -> bool:
        if self.pre_quantized:
            return False
        module, name = get_module_from_name(model, param_name)
        return (type(module) is torch.nn.Linear and name == "weight"
                and should_convert_module(param_name.rpartition(".")[0], self.skip))

    def get_quantize_ops(self):
        from .ops import LowbitQuantize

        return LowbitQuantize(self)

    def get_state_dict_and_metadata(self, model):
        """The state dict as it is (packed buffers by name) and the lowbit header the folder reloads from."""
        from ..nn import QuantModule

        metas, scales = {}, []
        state = set(model.state_dict())
        for name, module in model.named_modules():
            if isinstance(module, QuantModule):
                for p, meta in module.quant_meta.items():
                    full = f"{name}.{p}" if name else p
                    metas[full] = meta
                    if tensor_name(full, INPUT_SCALE) in state:
                        scales.append(full)
        return None, build_metadata(metas, input_scales=scales)

    def _process_model_after_weight_loading(self, model, **kwargs):
        from ..nn import QuantModule

        for name, module in model.named_modules():
            if isinstance(module, QuantModule):
                meta = [k for k, b in module.named_buffers() if b is not None and b.device.type == "meta"]
                if meta:
                    raise ValueError(f"lowbit: {name}: buffers {meta} were not loaded from the folder")
        return model

    def is_serializable(self, **kwargs) -> bool:
        return True

    @property
    def is_trainable(self) -> bool:
        return False


def _model_name(file_name: str, model_names: set[str], prefix: str) -> str:
    """The model's name for a file tensor name, as transformers maps it (base model prefix added or dropped)."""
    if file_name in model_names or not prefix:
        return file_name
    if f"{prefix}.{file_name}" in model_names:
        return f"{prefix}.{file_name}"
    stripped = file_name.removeprefix(prefix + ".")
    return stripped if stripped in model_names else file_name


def swap_to_packed(model, body: dict, entries: dict, backend, folder: str) -> None:
    """Swap the meta model's layers named in the lowbit metadata for quantized ones with meta buffers of the stored
    shapes and dtypes (transformers then loads them by name); ValueError when a layer cannot take them."""
    from ..checkpoint.errors import CheckpointError
    from ..checkpoint.load import check_swappable
    from ..nn import swap_quantized
    from ..quant.format import QuantizedWeight

    prefix = getattr(model, "base_model_prefix", "") or ""
    params = {n for n, _ in model.named_parameters()} | set(model.state_dict())
    weights = {}
    for name, meta in body["quantized"].items():
        fields = {f: entries[tensor_name(name, f)] for f in ("packed", "scale", "zero")
                  if tensor_name(name, f) in entries}
        tensors = {f: torch.empty(e.shape, dtype=e.dtype, device="meta") for f, e in fields.items()}
        weights[_model_name(name, params, prefix)] = QuantizedWeight.from_tensors(tensors, meta)
    try:
        check_swappable(folder, model, weights)
    except CheckpointError as e:
        raise ValueError(str(e)) from None
    swap_quantized(model, weights, backend)
    modules = dict(model.named_modules())
    for name in body.get("input_scales", []):
        layer = _model_name(name, params, prefix).rpartition(".")[0]
        e = entries[tensor_name(name, INPUT_SCALE)]
        modules[layer].register_buffer(tensor_name("weight", INPUT_SCALE),
                                       torch.empty(e.shape, dtype=e.dtype, device="meta"))
