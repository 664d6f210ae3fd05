"""Numbers in, compressed weights out: formats, bit packing, RTN, HQQ. No nn.Module here."""

from .config import QuantConfig, QuantMethod
from .format import ComputeWeight, QuantizedWeight, dequantize_blocks
from .formats import FormatSpec, PackedWeight, format_for, formats, register_format, unregister_format
from .packing import pack_bits, pack_words, unpack_bits, unpack_words
from .quantize import quantize_weight

__all__ = [
    "ComputeWeight", "FormatSpec", "PackedWeight", "QuantConfig", "QuantMethod", "QuantizedWeight",
    "dequantize_blocks", "format_for", "formats", "pack_bits", "pack_words", "quantize_weight", "register_format",
    "unpack_bits", "unpack_words", "unregister_format",
]
