"""Reconstruction-based quantization (`QuantConfig(method="recon")`): codes, scales/zeros or rounding learned block
by block against the float model, on the CPU, for Linear, Conv and LSTM layers, written in the ordinary packed format.

The math (learned fake quantization, AdaRound's regulariser, packing) is `lowbit.quant.recon`; this package finds
the blocks (`blocks.py`), caches their inputs and float targets (`capture.py`), starts them from RTN/HQQ/GPTQ/AWQ
(`start.py`), trains them with a held-out tenth (`train.py`) and runs the whole model (`quantize.py`).
"""

from ...pipeline.registry import RECONSTRUCTION, MethodSpec, register_method
from .blocks import TRANSFORMER_LAYERS, Block, find_blocks
from .quantize import quantize_recon
from .report import ReconSummary
from .train import BlockReport


def run_recon(model, cfg, backend=None, skip=(), overrides=None, min_weights: int = 1024, calibration=None,
              limit: int | None = None, sequential: bool = True, progress: bool = True, awq_fold=None):
    """`MethodSpec.run` of "recon": `quantize_recon` (always block by block; `sequential` and `awq_fold` do not
    apply)."""
    return quantize_recon(model, cfg, backend, skip, overrides, min_weights, calibration, limit, progress)


register_method(MethodSpec(
    "recon", needs_calibration=True, run=run_recon, rank=RECONSTRUCTION,
    summary="codes, scales or rounding learned block by block against the float model"))

__all__ = ["TRANSFORMER_LAYERS", "Block", "BlockReport", "ReconSummary", "find_blocks", "quantize_recon", "run_recon"]
