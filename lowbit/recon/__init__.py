"""Reconstruction-based quantization (`QuantConfig(method="recon")`): codes, scales/zeros or rounding learned block
by block against the float model, on the CPU, for Linear, Conv and LSTM layers, written in the ordinary packed format.

The math (learned fake quantization, AdaRound's regulariser, packing) is `lowbit.quant.recon`; this package finds
the blocks (`blocks.py`), caches their inputs and float targets (`capture.py`), starts them from RTN/HQQ/GPTQ/AWQ
(`start.py`), trains them with a held-out tenth (`train.py`) and runs the whole model (`quantize.py`).
"""

from .blocks import TRANSFORMER_LAYERS, Block, find_blocks
from .quantize import quantize_recon
from .report import ReconSummary
from .train import BlockReport

__all__ = ["TRANSFORMER_LAYERS", "Block", "BlockReport", "ReconSummary", "find_blocks", "quantize_recon"]
