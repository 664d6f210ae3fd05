"""lowbit.runtime.probes: torch's CPU ops are trusted per shape class only after their numbers were checked here."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lowbit.kernels import torch_ops
from lowbit.runtime import BackendConfig, Capabilities, Kernel, WeightFormat, probes, select_kernel
from lowbit.runtime.capabilities import cpu_features, cpu_identity

TESTS = Path(__file__).resolve().parents[1]  # fake_torch_ops.py lives at the top of tests/


@pytest.fixture
def fake_runner(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    return "fake_torch_ops"


def test_classes_are_refused_for_wrong_numbers_crashes_and_corruption(fake_runner, tmp_path):
    report = probes.probe_torch_ops("test cpu", runner=fake_runner, cache=tmp_path)
    assert report.ops == ("good", "wrong_m1", "crash_odd_k", "corrupt")  # "absent" is not probed
    by_op = {op: report.refused_classes(op) for op in report.ops}
    assert by_op["good"] == ()
    assert {cls for cls, _ in by_op["wrong_m1"]} == {"M=1, N%16=0, K%16=0", "M=1, N%16=0, K%16!=0",
                                                     "M=1, N%16!=0, K%16=0", "M=1, N%16!=0, K%16!=0"}
    assert all("wrong results on this CPU: 3.0 dB" in why for _, why in by_op["wrong_m1"])
    crash = dict(by_op["crash_odd_k"])
    assert set(crash) == {"M>=16, N%16=0, K%16!=0", "M>=16, N%16!=0, K%16!=0"}
    assert all("crashes on this CPU (signal 11)" in why for why in crash.values())
    assert [cls for cls, _ in by_op["corrupt"]] == ["*"]
    assert "corrupts memory" in by_op["corrupt"][0][1]
    assert report.refusal("wrong_m1", 1, 128, 256) and report.refusal("wrong_m1", 2, 128, 256) is None
    assert report.refusal("crash_odd_k", 40, 32, 136) and report.refusal("crash_odd_k", 40, 32, 128) is None
    assert report.refusal("crash_odd_k", 15, 32, 136) is None
    assert report.refusal("corrupt", 3, 16, 64)


def test_report_is_cached_per_machine(fake_runner, tmp_path, monkeypatch):
    first = probes.probe_torch_ops("cpu A", runner=fake_runner, cache=tmp_path, ops=("good", "wrong_m1"))
    class ChildStarted(Exception):
        pass

    def no_child(*args):
        raise ChildStarted

    monkeypatch.setattr(probes, "_run_child", no_child)
    assert probes.probe_torch_ops("cpu A", runner=fake_runner, cache=tmp_path, ops=("good", "wrong_m1")) == first
    assert len(list(tmp_path.glob("probes-*.json"))) == 1
    with pytest.raises(ChildStarted):  # another CPU is another key: it probes again
        probes.probe_torch_ops("cpu B", runner=fake_runner, cache=tmp_path, ops=("good",))


def test_a_corrupt_cache_file_is_probed_again(fake_runner, tmp_path):
    first = probes.probe_torch_ops("cpu A", runner=fake_runner, cache=tmp_path, ops=("good",))
    (cache_file,) = tmp_path.glob("probes-*.json")
    cache_file.write_text("{not json")
    assert probes.probe_torch_ops("cpu A", runner=fake_runner, cache=tmp_path, ops=("good",)).ops == first.ops


def test_a_probe_that_cannot_run_trusts_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the child cannot import the runner
    sys.path.insert(0, str(TESTS))
    try:
        report = probes.probe_torch_ops("cpu", runner="fake_torch_ops", cache=tmp_path, ops=("good",))
    finally:
        sys.path.remove(str(TESTS))
    assert report.refused_classes("good")[0][0] == "*"
    assert "could not run" in report.refused_classes("good")[0][1]


def test_this_machine_every_trusted_class_is_right():
    # run, in this process, one case of each class the probe trusted: its numbers must clear the floor
    report = probes.torch_op_report(cpu_identity())
    assert report.torch_cpu_capability == probes.torch_cpu_capability()
    for op in report.ops:
        seen = set()
        for m, n, k in torch_ops.probe_cases(op):
            cls = torch_ops.shape_class(m, n, k)
            if cls in seen or report.refusal(op, m, n, k):
                continue
            seen.add(cls)
            assert torch_ops.run_case(op, m, n, k, seed=7) >= torch_ops.SQNR_FLOOR_DB[op], (op, m, n, k)


def test_dispatch_skips_a_refused_class_per_m():
    caps = Capabilities(cpu_int8_dynamic=False, cpu_int8_weight=True, cpu_int4=True, torch_ops_probed=("int8pack",),
                        torch_op_refusals=(("int8pack", "M=1, N%16!=0, K%16!=0", "wrong results at M=1"),))
    w8 = WeightFormat(bits=8, group_size=136, symmetric=True, n=45, k=136)
    backend = BackendConfig("low", "low")
    assert select_kernel("cpu", 3, w8, caps, backend).kernel is Kernel.CPU_INT8_WEIGHT
    d = select_kernel("cpu", 1, w8, caps, backend)
    assert d.kernel is Kernel.CPU_INT4 and d.fallback_reason is None  # the next kernel in line serves it
    no_int4 = Capabilities(cpu_int8_weight=True, torch_op_refusals=caps.torch_op_refusals)
    d = select_kernel("cpu", 1, w8, no_int4, backend)
    assert d.kernel is Kernel.DENSE and "wrong results at M=1" in d.fallback_reason


def test_shape_class_boundaries():
    assert torch_ops.shape_class(1, 16, 64) == "M=1, N%16=0, K%16=0"
    assert torch_ops.shape_class(15, 17, 72) == "M=2..15, N%16!=0, K%16!=0"
    assert torch_ops.shape_class(16, 32, 8) == "M>=16, N%16=0, K%16!=0"
    with pytest.raises(ValueError, match="unknown op"):
        torch_ops.probe_cases("int3pack")


_LAYER_CHECK = """
import torch, lowbit
from lowbit.nn import QuantLinear
from lowbit.quant import quantize_weight
torch.manual_seed(0)
worst = 99.0
for n, k in [(45, 136), (48, 128), (17, 72)]:
    lin = torch.nn.Linear(k, n)
    for precision in ("low", "low_bf16"):
        qw = quantize_weight(lin.weight.detach(), lowbit.QuantConfig(bits=8, block_size=-1))
        q = QuantLinear.from_float(lin, qw, lowbit.BackendConfig("low", precision))
        w = q.quantized_weight("weight").dequantize(torch.float64)
        for m in (1, 3, 17):
            x = torch.randn(m, k)
            ref = x.double() @ w.T + lin.bias.double()
            y = q(x).double()
            worst = min(worst, float(20 * torch.log10(ref.norm() / (ref - y).norm())))
print(torch.backends.cpu.get_cpu_capability(), worst)
"""


@pytest.mark.parametrize("isa", ["default", "avx2"])
def test_int8_layers_are_right_at_every_isa(isa):
    # the int8 paths at memory Low, precision Low, on shapes torch's AVX-512 kernel gets wrong; "avx2" pins torch's
    # AVX2 kernels (ATEN_CPU_CAPABILITY), so both x86 variants are checked on an AVX-512 machine
    if isa == "avx2" and "avx2" not in cpu_features():
        pytest.skip("this CPU has no AVX2 (ARM): the default ISA run covers it")
    env = dict(os.environ)
    if isa == "avx2":
        env["ATEN_CPU_CAPABILITY"] = "avx2"
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", _LAYER_CHECK], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    capability, worst = out.stdout.split()
    assert isa == "default" or capability == "AVX2"
    assert float(worst) >= 30.0, out.stdout
