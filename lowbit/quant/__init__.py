"""Numbers in, compressed weights out: formats, bit packing, RTN, HQQ. No nn.Module here."""

from .config import QuantConfig, QuantMethod
from .format import ComputeWeight, QuantizedWeight, dequantize_blocks
from .packing import pack_bits, pack_words, unpack_bits, unpack_words
from .quantize import quantize_weight

__all__ = [
    "ComputeWeight", "QuantConfig", "QuantMethod", "QuantizedWeight", "dequantize_blocks", "pack_bits",
    "pack_words", "quantize_weight", "unpack_bits", "unpack_words",
]
