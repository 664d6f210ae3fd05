"""Decoder language models quantized block by block, with one block's float weights in memory at a time.

`quantize_decoder(folder, out, calibration, cfg)` reads a Hugging Face causal-LM folder (config.json and safetensors
shards, memory-mapped), quantizes each decoder block against the calibration activations that reach it (GPTQ, AWQ
with its scales folded inside the block, or RTN/HQQ) and writes an ordinary lowbit checkpoint. See
`lowbit/sequential/pipeline.py` for the order of work.
"""

from __future__ import annotations

from .activations import ActivationStore
from .pipeline import SequentialSummary, fits_per_weight, quantize_decoder
from .skeleton import is_decoder_folder

__all__ = ["ActivationStore", "SequentialSummary", "fits_per_weight", "is_decoder_folder", "quantize_decoder"]
