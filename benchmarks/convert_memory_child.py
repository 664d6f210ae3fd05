"""Child process of benchmarks.convert_memory: one step (convert or load), its peak resident memory as JSON.

Usage (by the suite): python -m benchmarks.convert_memory_child STEP SRC DST LAYERS N K
After its imports it records VmRSS, runs the step, and prints `RESULT {...}` with VmHWM minus that baseline.
"""

import json
import re
import sys
import time
from pathlib import Path

import safetensors.torch  # noqa: F401  (imported before the baseline)
import torch

import lowbit
import lowbit.nn  # noqa: F401
import lowbit.runtime
from lowbit.checkpoint import convert, load
from lowbit.quant import QuantConfig
from lowbit.runtime import BackendConfig


def kb(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def main(argv: list[str]) -> None:
    step, src, dst = argv[0], argv[1], argv[2]
    layers, n, k = map(int, argv[3:6])
    lowbit.runtime.capabilities()  # imports the kernel families (Triton: ~85 MB) before the baseline, not during load
    model = None
    if step.startswith("load"):  # the float model skeleton, on meta (no weights), is built before the baseline too
        with torch.device("meta"):
            model = torch.nn.Sequential(*[torch.nn.Linear(k, n, bias=False) for _ in range(layers)])
        model.emb = torch.nn.Embedding(1000, 256, device="meta")
    base = kb("VmRSS")
    t0 = time.perf_counter()
    if step.startswith("convert"):
        cfg = QuantConfig(bits=4, block_size=64, method="hqq" if "hqq" in step else "rtn")
        convert(src, dst, cfg, external_data="external" in step, progress=False)
    else:
        load(model, dst, BackendConfig(memory="low"))
        if step == "load+forward":
            with torch.inference_mode():
                x = torch.randn(1, k)
                for layer in list(model)[:layers]:
                    layer(x)
    print("RESULT " + json.dumps({"base_mb": base / 1024, "peak_mb": (kb("VmHWM") - base) / 1024,
                                  "seconds": time.perf_counter() - t0}))


if __name__ == "__main__":
    main(sys.argv[1:])
