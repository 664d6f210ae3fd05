"""`LowbitQuantize`: the conversion op transformers runs on each Linear weight as it is read (quantize on load)."""

from __future__ import annotations

from transformers.core_model_loading import ConversionOps
from transformers.quantizers.quantizers_utils import get_module_from_name

from ..methods.plain import quantize_by_method
from ..nn.linear import QuantLinear


class LowbitQuantize(ConversionOps):
    """Quantize one Linear weight and swap its module for a QuantLinear in place; nothing is left to assign."""

    def __init__(self, hf_quantizer):
        self.hf_quantizer = hf_quantizer

    def convert(self, input_dict, model=None, full_layer_name=None, missing_keys=None, **kwargs):
        value = next(iter(input_dict.values()))
        value = value[0] if isinstance(value, list) else value
        module_name = full_layer_name.rpartition(".")[0]
        linear, _ = get_module_from_name(model, full_layer_name)
        cfg = self.hf_quantizer.quantization_config
        qw = quantize_by_method(value, cfg.quant_config(), full_layer_name)  # the registered data-free method
        layer = QuantLinear.from_float(linear, qw, cfg.backend())
        layer._is_hf_initialized = True
        parent_name, _, child = module_name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        parent._modules[child] = layer
        if missing_keys is not None:
            missing_keys.discard(full_layer_name)
        return {}
