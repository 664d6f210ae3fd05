"""Numbers in, compressed weights out: formats, bit packing, RTN, HQQ. No nn.Module here.

`lowbit.quant.formats` is the format registry module (its `formats()` lists the registered names)."""

from .config import QuantConfig, QuantMethod
from .format import ComputeWeight, QuantizedWeight, dequantize_blocks
from .formats import FormatSpec, PackedWeight, format_for, register_format, unregister_format
from .packing import pack_bits, pack_words, unpack_bits, unpack_words
from .quantize import quantize_weight

__all__ = [
    "ComputeWeight", "FormatSpec", "PackedWeight", "QuantConfig", "QuantMethod", "QuantizedWeight",
    "dequantize_blocks", "format_for", "pack_bits", "pack_words", "quantize_weight", "register_format",
    "unpack_bits", "unpack_words", "unregister_format",
]
