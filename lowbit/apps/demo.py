"""`lowbit demo`: the bundled MiniLM compressed nine ways, in one table.

Rows: fp32, fp16, int8 per-channel, int4 block 64 RTN, int4 block 64 HQQ, int4 block 64 GPTQ and recon (data-aware:
calibrated on the bundled MiniLM calibration sentences, `lowbit.calib.minilm`; recon with DEMO_RECON_STEPS steps
per block instead of its default, so the demo stays quick), int3 block 64 HQQ, int2 block 32 HQQ (Linear layers;
embeddings and norms stay float32, as `lowbit.quantize` leaves them). Columns: checkpoint size
(MB, ratio to fp32), cosine of the sentence embeddings to fp32 over `lowbit.models.SENTENCES` (mean and min at
memory Normal, min at memory Low, precision Normal: the packed kernels round activations differently),
retrieval agreement (fraction of sentences whose nearest neighbour is the one fp32 finds), latency of encoding one
sentence at memory Normal and Low (median ms), the resident weight bytes at Normal and Low (`resident_bytes`), and
the peak resident memory of load + one forward at memory Low, measured in a separate process (see
`lowbit.apps.validate.measure_peak`).
"""

from __future__ import annotations

import copy
import sys
import tempfile
import time
from pathlib import Path

import torch

from ..models.minilm import embedding_scores, nearest_neighbours  # noqa: F401  (nearest_neighbours: re-exported)
from ..quant import QuantConfig

# recon's short setting for the demo (the default is QuantConfig().recon_steps steps per block): the same signed-step
# budget (lr · steps ≈ 1 code step) in a quarter of the steps
DEMO_RECON_STEPS, DEMO_RECON_LR = 50, 0.02
DEMO_CALIBRATION = 128  # bundled calibration sentences for the data-aware rows (lowbit.calib.minilm.pick_sentences)
SETTINGS = [
    ("fp32", None),
    ("fp16", QuantConfig(bits=16)),
    ("int8 per-channel", QuantConfig(bits=8, block_size=-1)),
    ("int4 b64 RTN", QuantConfig(bits=4, block_size=64)),
    ("int4 b64 HQQ", QuantConfig(bits=4, block_size=64, method="hqq")),
    ("int4 b64 GPTQ (data)", QuantConfig(bits=4, block_size=64, method="gptq")),
    (f"int4 b64 recon {DEMO_RECON_STEPS} steps (data)",
     QuantConfig(bits=4, block_size=64, method="recon", recon_steps=DEMO_RECON_STEPS, recon_lr=DEMO_RECON_LR)),
    ("int3 b64 HQQ", QuantConfig(bits=3, block_size=64, method="hqq")),
    ("int2 b32 HQQ", QuantConfig(bits=2, block_size=32, method="hqq")),
]
QUICK = ("fp32", "int8 per-channel", "int4 b64 RTN")


def _latency_ms(model, sentence: str, quick: bool) -> float:
    from ..models import embed
    from .timing import time_fn

    fn = lambda: embed(model, [sentence])  # noqa: E731
    t0 = time.perf_counter()
    fn()  # warm-up, and a probe: slow fallback paths get 3 repetitions, fast ones enough to fill ~0.5 s
    reps = 3 if quick else int(min(30, max(3, 0.5 / max(time.perf_counter() - t0, 1e-3))))
    return time_fn(fn, warmup=0, reps=reps).median_ms


def linear_weight_mb(model) -> float:
    """MB of the Linear layers' weights as stored: packed codes + scales/zeros, or the float tensor."""

    from ..nn import quantized_weights

    packed = sum(qw.nbytes for qw in quantized_weights(model).values())
    dense = sum(m.weight.numel() * m.weight.element_size() for m in model.modules() if type(m) is torch.nn.Linear)
    return (packed + dense) / 1e6


def resident_mb(model) -> float:
    """MB the model's weights hold now, prepared copies included (`lowbit.nn.resident_bytes`)."""
    from ..nn import resident_bytes

    return resident_bytes(model) / 1e6


def _row(label, cfg, base, ref, tmp: Path, quick: bool) -> tuple[dict, Path]:
    from .. import quantize, save
    from ..calib.minilm import minilm_calibration
    from ..models import SENTENCES, embed
    from ..nn import set_backend
    from ..runtime import BackendConfig

    t0 = time.perf_counter()
    calibration = minilm_calibration(base, DEMO_CALIBRATION) if cfg is not None and cfg.data_aware else None
    model = base if cfg is None else quantize(copy.deepcopy(base), cfg, backend=BackendConfig(memory="normal"),
                                              calibration=calibration, progress=False)
    row = {"setting": label, "quantize_s": time.perf_counter() - t0, **embedding_scores(ref, embed(model)),
           "latency_normal_ms": _latency_ms(model, SENTENCES[0], quick), "resident_normal_mb": resident_mb(model)}
    if cfg is not None:
        set_backend(model, BackendConfig(memory="low"))
    low = embedding_scores(ref, embed(model))  # memory Low computes on the packed codes: its own accuracy
    row["cos_mean_low"], row["cos_min_low"] = low["cos_mean"], low["cos_min"]
    row["latency_low_ms"] = _latency_ms(model, SENTENCES[0], quick)
    row["resident_low_mb"] = resident_mb(model)
    path = save(model if cfg is not None else dict(model.state_dict()), tmp / f"{len(list(tmp.iterdir()))}.lbt")
    row["size_mb"] = path.stat().st_size / 1e6
    row["linear_mb"] = linear_weight_mb(model)
    return row, path


def run_demo(quick: bool = False, progress: bool = True) -> list[dict]:
    """Compress the bundled MiniLM at every setting (QUICK ones only when quick) and return one dict per row."""
    from tqdm import tqdm

    from ..models import embed, load_minilm
    from .validate import PeakMeter

    settings = [s for s in SETTINGS if not quick or s[0] in QUICK]
    bar = tqdm(total=len(settings) + 2, desc="demo", file=sys.stderr, disable=not progress, leave=False)
    bar.set_postfix_str("loading MiniLM")
    meter = None if quick else PeakMeter("minilm")  # starts now: its start-up overlaps the quantization below
    try:
        base = load_minilm()
        ref = embed(base)
        if meter is not None:
            meter.wait_ready()  # from here on the child is idle until the jobs below: it cannot disturb timings
        bar.update()
        rows = []
        with tempfile.TemporaryDirectory(prefix="lowbit-demo-") as tmp:
            paths = []
            for label, cfg in settings:
                bar.set_postfix_str(label)
                row, path = _row(label, cfg, base, ref, Path(tmp), quick)
                rows.append(row)
                paths.append(path)
                bar.update()
            if meter is not None:
                bar.set_postfix_str("peak memory (subprocess)")
                for path in paths:
                    meter.submit({"checkpoint": str(path), "memory": "low"})
                for row, peak in zip(rows, meter.results(), strict=True):
                    row["peak_mb"] = peak["peak_mb"]
            bar.update()
    finally:
        if meter is not None:
            meter.close()
        bar.close()
    for row in rows:
        row["ratio"] = rows[0]["size_mb"] / row["size_mb"]
        row["linear_ratio"] = rows[0]["linear_mb"] / row["linear_mb"]
    return rows


_COLUMNS = [("setting", "setting", "{}"), ("size_mb", "file MB", "{:.1f}"), ("ratio", "ratio", "{:.2f}x"),
            ("linear_mb", "Linear MB", "{:.1f}"), ("linear_ratio", "Linear ratio", "{:.2f}x"),
            ("cos_mean", "cos mean", "{:.4f}"), ("cos_min", "cos min", "{:.4f}"),
            ("cos_min_low", "cos min Low", "{:.4f}"),
            ("retrieval", "same NN", "{:.0%}"), ("latency_normal_ms", "ms Normal", "{:.1f}"),
            ("latency_low_ms", "ms Low", "{:.1f}"), ("resident_normal_mb", "resident MB Normal", "{:.1f}"),
            ("resident_low_mb", "resident MB Low", "{:.1f}"), ("peak_mb", "peak MB (Low)", "{:.1f}"),
            ("quantize_s", "quantize s", "{:.1f}")]


def format_demo(rows: list[dict]) -> str:
    """The demo rows as one github-style table with a one-line legend."""
    from tabulate import tabulate

    table = [[fmt.format(r[key]) if key in r else "-" for key, _, fmt in _COLUMNS] for r in rows]
    from ..models import SENTENCES

    legend = ("MiniLM-L6 (all-MiniLM-L6-v2), Linear layers compressed (the 47 MB word embedding stays fp32, so the "
              "file shrinks less than the Linear weights); cosine and same-NN against fp32 over "
              f"{len(SENTENCES)} sentences (cos min Low: at memory Low, precision Normal, where the CPU kernel rounds "
              "activations to int8 per 32 channels); latency: encode one sentence; resident: the model's weights "
              "and prepared "
              "copies after the timed calls (memory Normal holds one float copy, the codes released); peak: load + "
              "forward at memory Low, "
              f"separate process. (data): calibrated on {DEMO_CALIBRATION} of the bundled MiniLM calibration "
              f"sentences (lowbit.calib.minilm; none of the scored ones); recon here runs {DEMO_RECON_STEPS} steps per "
              f"block (lr {DEMO_RECON_LR}), a short setting for the demo: its default is "
              f"{QuantConfig().recon_steps} (benchmarks/results/xdomain_minilm*.md).")
    return tabulate(table, headers=[h for _, h, _ in _COLUMNS], tablefmt="github", disable_numparse=True) + \
        "\n" + legend
