"""`lowbit convert HF_DECODER_FOLDER OUT --calib DATA --method gptq|awq`: a causal LM quantized block by block
(`lowbit.sequential`), with one block's float weights in memory at a time. Any data-aware method with a per-weight
fit (`MethodSpec.fit_weight`) goes this way; recon, which trains whole blocks, takes the whole-model path."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("decoder LLM folders (block by block; --method gptq or awq, --awq; --seq-len and "
                             "--samples as for text calibration)")
    g.add_argument("--act-budget-gb", type=float, default=2.0,
                   help="calibration activations kept in memory (bf16) before spilling to disk (default 2 GB)")
    g.add_argument("--compute-dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                   help="dtype the blocks run in while calibrating (default auto: bfloat16 for a bf16 checkpoint, "
                        "else float32)")


def applies(args: argparse.Namespace) -> bool:
    """A data-aware conversion of a Hugging Face causal-LM folder (config.json names a *ForCausalLM)."""
    from ..pipeline.registry import method_for
    from ..sequential import fits_per_weight, is_decoder_folder

    if args.method is None or args.input is None or not method_for(args.method).needs_calibration:
        return False
    return fits_per_weight(args.method) and is_decoder_folder(args.input)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..quant import QuantConfig
    from ..sequential import quantize_decoder
    from ..sequential.tokens import calibration_tokens

    if args.calib is None:
        raise ValueError(f"--method {args.method} needs calibration tokens: pass --calib "
                         "TEXT.txt|TEXT.jsonl|random|FOLDER")
    cfg = QuantConfig(bits=args.bits, block_size=args.block, symmetric=args.symmetric, method=args.method,
                      gptq_act_order=args.act_order, gptq_damp=args.damp, gptq_scales=args.gptq_scales,
                      awq=args.awq)
    limit = args.calib_limit if args.calib_limit is not None else args.samples
    items = calibration_tokens(args.calib, args.input, limit, args.seq_len, getattr(args, "tokenizer", None))
    summary = quantize_decoder(args.input, args.output, items, cfg, skip=args.skip,
                               act_budget=int(args.act_budget_gb * 2**30), progress=not args.quiet,
                               dtype=None if args.compute_dtype == "auto" else getattr(torch, args.compute_dtype))
    print(summary)
    return 0
