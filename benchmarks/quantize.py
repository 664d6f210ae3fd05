"""Quantizer benchmark on MiniLM's Linear weights: time to quantize, and RTN vs HQQ reconstruction error."""

from __future__ import annotations

import argparse
import time

import torch

from lowbit.quant import QuantConfig, quantize_weight

from .harness import Row, describe_environment, report


def minilm_linear_weights() -> dict[str, torch.Tensor]:
    """Every Linear weight of the bundled MiniLM (37 matrices, 10.8M parameters)."""
    from safetensors.torch import load_file

    from lowbit.models import minilm_path

    state = load_file(str(minilm_path() / "model.safetensors"))
    return {k: v for k, v in state.items() if k.endswith(".weight") and v.dim() == 2 and "embeddings" not in k}


def _quantize_all(weights: dict[str, torch.Tensor], cfg: QuantConfig):
    t0 = time.perf_counter()
    packed = {name: quantize_weight(w, cfg) for name, w in weights.items()}
    return packed, time.perf_counter() - t0


def _mean_rel_error(weights, packed) -> float:
    errs = [((w - packed[n].dequantize()).norm() / w.norm()).item() for n, w in weights.items()]
    return sum(errs) / len(errs)


def run(bits_list=(2, 3, 4, 8), block: int = 64, out_dir="benchmarks/results") -> list[Row]:
    weights = minilm_linear_weights()
    rows = []
    for bits in bits_list:
        row = {"bits": bits, "block": block}
        for method in ("rtn", "hqq"):
            packed, seconds = _quantize_all(weights, QuantConfig(bits=bits, block_size=block, method=method))
            row[f"{method} rel. Frobenius error"] = _mean_rel_error(weights, packed)
            row[f"{method} time (s)"] = seconds
        row["hqq / rtn error"] = row["hqq rel. Frobenius error"] / row["rtn rel. Frobenius error"]
        rows.append(Row(row))
    n_params = sum(w.numel() for w in weights.values())
    notes = (f"All {len(weights)} Linear weights of MiniLM-L6 ({n_params / 1e6:.1f}M parameters), asymmetric, "
             f"float16 scales/zeros; error = mean over matrices of ||W - deq(Q(W))||_F / ||W||_F; "
             f"time = quantizing all of them on {torch.get_num_threads()} threads.")
    report("quantize_minilm", rows, describe_environment(), out_dir=out_dir, title="RTN vs HQQ on MiniLM", notes=notes,
           floatfmt=".4f")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="benchmarks/results", help="results folder ('' to skip saving)")
    args = p.parse_args(argv)
    run(out_dir=args.out or None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
