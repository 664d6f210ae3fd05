"""capabilities(): probed on call, plain values, a printable table."""

import subprocess
import sys

import torch

from lowbit.runtime import Capabilities, capabilities
from lowbit.runtime.capabilities import cpu_features


def test_capabilities_are_consistent_with_torch():
    caps = capabilities()
    assert isinstance(caps, Capabilities)
    assert caps.gpu == torch.cuda.is_available()
    assert len(caps.gpu_names) == (torch.cuda.device_count() if caps.gpu else 0)
    assert caps.quantized_engines == tuple(torch.backends.quantized.supported_engines)
    # an op counts as available only when present *and* not refused whole by the numeric probe
    for flag, op in [("torch_int4pack", "int4pack"), ("cpu_int8_weight", "int8pack"),
                     ("cpu_int8_dynamic", "int8_dynamic")]:
        whole = any(o == op and cls == "*" for o, cls, _ in caps.torch_op_refusals)
        assert getattr(caps, flag) == (op in caps.torch_ops_probed and not whole)
    assert caps.torch_cpu_capability == str(torch.backends.cpu.get_cpu_capability())
    assert not caps.triton_gpu or caps.gpu
    hash(caps)  # dispatch caches on it


def test_rows_cover_every_field():
    rows = capabilities().rows()
    names = [r[0] for r in rows if not r[0].startswith("refused: ")]
    assert names == [f for f in Capabilities.__dataclass_fields__ if f != "torch_op_refusals"]
    assert all(isinstance(v, str) and v for _, v in rows)
    refused = Capabilities(torch_op_refusals=(("int8pack", "M=1, N%16=0, K%16!=0", "crashes (signal 11)"),))
    assert ("refused: int8pack [M=1, N%16=0, K%16!=0]", "crashes (signal 11)") in refused.rows()
    assert dict(Capabilities(gpu=True, cpu_features=("avx2", "fma")).rows())["cpu_features"] == "avx2, fma"
    assert dict(Capabilities().rows())["gpu"] == "no"


def test_cpu_features_parsing_x86_and_arm():
    x86 = "processor: 0\nflags\t\t: fpu sse avx2 fma f16c avx512f avx512_bf16 amx_int8\n"
    assert cpu_features(x86) == ("amx_int8", "avx2", "avx512", "avx512_bf16", "f16c", "fma")
    arm = "processor: 0\nFeatures\t: fp asimd asimddp i8mm bf16 fphp\n"
    assert cpu_features(arm) == ("bf16", "fp16", "i8mm", "neon", "neon_dotprod")
    assert cpu_features("processor: 0\n") == ()


def test_import_does_not_probe():
    code = ("import sys, lowbit.runtime, lowbit.nn; "
            "print('triton' in sys.modules, 'lowbit.kernels.cpu_int4' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
