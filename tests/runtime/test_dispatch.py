"""select_kernel: every row of the dispatch table, fallbacks with reasons, the warn-once rule, compute dtypes."""

import warnings

import pytest
import torch

from lowbit.runtime import BackendConfig, Capabilities, Kernel, WeightFormat, select_kernel
from lowbit.runtime.dispatch import (
    A8W_MIN_M,
    GEMV_MAX_M,
    HIGH_DENSE_MIN_M,
    FallbackWarnings,
    compute_dtype,
    reset_fallback_warnings,
    warn_fallback,
)

GPU = Capabilities(triton=True, gpu=True, triton_gpu=True, gpu_names=("H100",))
CPU_ALL = Capabilities(cpu_int8_dynamic=True, cpu_int8_weight=True, cpu_int4=True)
CPU_INT4 = Capabilities(cpu_int4=True)
CPU_INT8 = Capabilities(cpu_int8_dynamic=True)
NONE = Capabilities()
W4 = WeightFormat(bits=4, group_size=64, symmetric=False, n=384, k=1536)
W2 = WeightFormat(bits=2, group_size=32, symmetric=True, n=384, k=384)
W8 = WeightFormat(bits=8, group_size=384, symmetric=True, n=384, k=384)
W6 = WeightFormat(bits=6, group_size=64, symmetric=False, n=96, k=320)
W16 = WeightFormat(bits=16, group_size=384, symmetric=True, n=384, k=384)
LOW, NORMAL, HIGH = BackendConfig("low"), BackendConfig("normal"), BackendConfig("high")
LOW_P = BackendConfig("low", "low")


def refuse(fmt, *pairs):
    return WeightFormat(fmt.bits, fmt.group_size, fmt.symmetric, fmt.n, fmt.k, tuple(pairs))


# (device, M, format, capabilities, backend, expected kernel, is a fallback)
ROWS = [
    # bits=16 (float16 storage): dense unless memory Low, which keeps fp16 and converts per call
    ("cpu", 1, W16, CPU_ALL, NORMAL, Kernel.DENSE, False),
    ("cuda", 1, W16, GPU, HIGH, Kernel.DENSE, False),
    ("cuda", 1, W16, GPU, LOW, Kernel.EMULATED, False),
    # memory Normal: always the dequantized weight
    ("cpu", 1, W4, CPU_ALL, NORMAL, Kernel.DENSE, False),
    ("cuda", 4096, W2, GPU, NORMAL, Kernel.DENSE, False),
    ("cpu", 1, W8, NONE, BackendConfig("normal", "low"), Kernel.DENSE, False),
    # memory High: dense from HIGH_DENSE_MIN_M, packed below it
    ("cpu", HIGH_DENSE_MIN_M, W4, CPU_ALL, HIGH, Kernel.DENSE, False),
    ("cpu", HIGH_DENSE_MIN_M - 1, W4, CPU_ALL, HIGH, Kernel.CPU_INT4, False),
    ("cuda", 1, W4, GPU, HIGH, Kernel.TRITON_GEMV, False),
    ("cuda", HIGH_DENSE_MIN_M, W4, GPU, HIGH, Kernel.DENSE, False),
    ("cpu", 1, W4, NONE, HIGH, Kernel.DENSE, True),
    # memory Low on CUDA
    ("cuda", 1, W4, GPU, LOW, Kernel.TRITON_GEMV, False),
    ("cuda", GEMV_MAX_M, W2, GPU, LOW, Kernel.TRITON_GEMV, False),
    ("cuda", GEMV_MAX_M + 1, W4, GPU, LOW, Kernel.TRITON_GEMM, False),
    ("cuda", A8W_MIN_M, W8, GPU, LOW, Kernel.TRITON_GEMM, False),  # precision Normal: no int8 activations
    ("cuda", A8W_MIN_M, W8, GPU, LOW_P, Kernel.TRITON_A8W, False),
    ("cuda", A8W_MIN_M - 1, W4, GPU, LOW_P, Kernel.TRITON_GEMM, False),
    ("cuda", A8W_MIN_M, W4, GPU, BackendConfig("low", "low_bf16"), Kernel.TRITON_GEMM, False),
    ("cuda", 1, W4, NONE, LOW, Kernel.DENSE, True),  # no Triton
    ("cuda", 1, refuse(W4, (Kernel.TRITON_GEMV, "split")), GPU, LOW, Kernel.TRITON_GEMM, False),
    ("cuda", A8W_MIN_M, refuse(W4, (Kernel.TRITON_A8W, "no int8")), GPU, LOW_P, Kernel.TRITON_GEMM, False),
    ("cuda", 1, refuse(W4, (Kernel.TRITON_GEMV, "a"), (Kernel.TRITON_GEMM, "b")), GPU, LOW, Kernel.DENSE, True),
    # memory Low on CPU
    ("cpu", 1, W4, CPU_ALL, LOW, Kernel.CPU_INT4, False),
    ("cpu", 512, W2, CPU_ALL, LOW, Kernel.CPU_INT4, False),
    ("cpu", 1, W8, CPU_ALL, LOW_P, Kernel.CPU_INT8_DYNAMIC, False),
    ("cpu", 1, W6, CPU_ALL, LOW_P, Kernel.CPU_INT8_DYNAMIC, False),
    ("cpu", 1, W8, CPU_INT8, LOW, Kernel.DENSE, True),  # int8 activations need precision Low
    ("cpu", 1, W8, CPU_ALL, LOW, Kernel.CPU_INT4, False),  # precision Normal: the native 8-bit container
    ("cpu", 128, W6, CPU_ALL, LOW, Kernel.CPU_INT4, False),
    ("cpu", 1, refuse(W6, (Kernel.CPU_INT8_DYNAMIC, "blocked"), (Kernel.CPU_INT8_WEIGHT, "blocked")), CPU_ALL, LOW_P,
     Kernel.CPU_INT4, False),  # blocked 5..8 bits: torch's int8 ops are per channel only
    ("cpu", 1, refuse(W8, (Kernel.CPU_INT4, "no native kernel")), CPU_ALL, LOW, Kernel.DENSE, True),
    ("cpu", 1, W8, CPU_ALL, BackendConfig("low", "low_bf16"), Kernel.CPU_INT8_WEIGHT, False),
    ("cpu", 128, W6, CPU_ALL, BackendConfig("low", "low_bf16"), Kernel.CPU_INT8_WEIGHT, False),
    ("cpu", 1, W4, CPU_INT8, LOW_P, Kernel.CPU_INT8_DYNAMIC, False),
    ("cpu", 1, W4, CPU_INT8, LOW, Kernel.DENSE, True),
    ("cpu", 1, W8, CPU_INT4, LOW, Kernel.CPU_INT4, False),
    ("cpu", 1, refuse(W8, (Kernel.CPU_INT8_DYNAMIC, "blocked")), CPU_ALL, LOW_P, Kernel.CPU_INT8_WEIGHT, False),
    ("cpu", 1, refuse(W8, (Kernel.CPU_INT8_DYNAMIC, "blocked"), (Kernel.CPU_INT8_WEIGHT, "blocked")), CPU_ALL, LOW_P,
     Kernel.CPU_INT4, False),
    ("cpu", 1, refuse(W4, (Kernel.CPU_INT4, "odd K")), CPU_ALL, LOW_P, Kernel.CPU_INT8_DYNAMIC, False),
    ("cpu", 1, refuse(W8, (Kernel.CPU_INT4, "8 bits"), (Kernel.CPU_INT8_WEIGHT, "K % 8")), CPU_ALL, LOW,
     Kernel.DENSE, True),
    ("cpu", 1, refuse(W8, (Kernel.CPU_INT4, "8 bits")), CPU_INT4, LOW, Kernel.DENSE, True),
    ("cpu", 1, W4, NONE, LOW, Kernel.DENSE, True),
    ("cpu", 1, W4, GPU, LOW, Kernel.DENSE, True),  # Triton is never used for CPU tensors
    # other devices
    ("mps", 1, W4, CPU_ALL, LOW, Kernel.DENSE, True),
    ("mps", 1, W4, CPU_ALL, NORMAL, Kernel.DENSE, False),
]


@pytest.mark.parametrize("device,m,fmt,caps,backend,kernel,fallback", ROWS)
def test_dispatch_table(device, m, fmt, caps, backend, kernel, fallback):
    d = select_kernel(device, m, fmt, caps, backend)
    assert d.kernel is kernel
    assert (d.fallback_reason is not None) == fallback
    if fallback:  # the reason names what was asked and what runs instead
        assert f"memory={backend.memory.value}" in d.fallback_reason
        assert f"{fmt.bits}-bit" in d.fallback_reason and "running dense" in d.fallback_reason


VNNI = Capabilities(cpu_int8_dynamic=True, cpu_int8_weight=True, cpu_int4=True, native_variant="avx512vnni",
                    cpu_bf16=True, native_extension=True, cpu_int4_impl="native")
HIGH_P = BackendConfig("high", "low")
W4_G32 = WeightFormat(bits=4, group_size=32, symmetric=False, n=4096, k=4096)
W4_G128 = WeightFormat(bits=4, group_size=128, symmetric=False, n=4096, k=4096)
W8_PC = WeightFormat(bits=8, group_size=4096, symmetric=True, n=4096, k=4096)
W8_G32 = WeightFormat(bits=8, group_size=32, symmetric=False, n=384, k=1536)


@pytest.mark.parametrize("fmt,backend,min_m,kernel_below", [
    (W4, HIGH, None, Kernel.CPU_INT4),  # fp32 copy: the VNNI kernel is faster at every M measured
    (W4_G128, HIGH, None, Kernel.CPU_INT4),
    (W4_G32, HIGH_P, 32, Kernel.CPU_INT4),  # bf16 copy (precision Low)
    (W4_G128, HIGH_P, 32, Kernel.CPU_INT4),
    (W8_PC, HIGH_P, 32, Kernel.CPU_INT4),  # the native kernel (int8 per row), not torch's per-tensor int8
    (W4, BackendConfig("high", "high"), 16, Kernel.CPU_INT4),  # fp32 activations: tiles + GEMM from M 16
    (W8_G32, HIGH, 32, Kernel.CPU_INT4),  # 8-bit blocks of 32: the fp32 copy wins at MiniLM's 384x1536
])
def test_memory_high_takes_the_float_copy_from_the_measured_crossover(fmt, backend, min_m, kernel_below):
    from lowbit.runtime.dispatch import high_dense_min_m

    assert high_dense_min_m("cpu", fmt, VNNI, backend) == min_m
    for m in (1, 31, 32, 127, 128, 511, 512, 4096):
        d = select_kernel("cpu", m, fmt, VNNI, backend)
        if min_m is not None and m >= min_m:
            assert d.kernel is Kernel.DENSE and d.fallback_reason is None
            dtype = "bfloat16" if backend.precision.value == "low" else "float32"  # (VNNI has native bf16)
            assert d.note.startswith(f"memory=high: M >= {min_m}") and f"{dtype} float copy" in d.note
        else:
            assert d.kernel is kernel_below and d.note is None


def test_memory_high_without_a_measured_table_keeps_the_default_crossover():
    from lowbit.runtime.dispatch import high_dense_min_m

    assert high_dense_min_m("cpu", W4, CPU_ALL, HIGH) == HIGH_DENSE_MIN_M  # no native variant named
    assert high_dense_min_m("cuda", W4, GPU, HIGH) == HIGH_DENSE_MIN_M
    avx2 = Capabilities(cpu_int4=True, native_variant="avx2")
    assert high_dense_min_m("cpu", W4, avx2, HIGH) == HIGH_DENSE_MIN_M
    assert "float32 float copy" in select_kernel("cpu", 64, W4, avx2, HIGH).note


NATIVE = Capabilities(cpu_int8_dynamic=True, cpu_int8_weight=True, cpu_int4=True, native_extension=True,
                      native_variant="avx2", cpu_int4_impl="native")
INT4PACK = Capabilities(cpu_int8_dynamic=True, cpu_int4=True, cpu_int4_impl="int4pack")


@pytest.mark.parametrize("precision,scheme", [("high", "fp32"), ("normal", "int8/32"), ("low", "int8/row"),
                                              ("low_bf16", "int8/row")])
@pytest.mark.parametrize("fmt", [W4, W2, W8, W6])
def test_native_kernel_runs_the_precisions_activation_scheme(precision, scheme, fmt):
    for memory, m in (("low", 1), ("low", 512), ("high", 1)):
        d = select_kernel("cpu", m, fmt, NATIVE, BackendConfig(memory, precision))
        assert d.kernel is Kernel.CPU_INT4 and d.activations == scheme and d.fallback_reason is None


def test_activation_scheme_of_the_other_kernels():
    assert select_kernel("cpu", 1, W8, CPU_ALL, LOW_P).activations == "int8/tensor"  # no native kernel here
    assert select_kernel("cpu", 1, W8, CPU_ALL, BackendConfig("low", "low_bf16")).activations == "bf16"
    assert select_kernel("cuda", A8W_MIN_M, W8, GPU, LOW_P).activations == "int8/row"
    for d in (select_kernel("cuda", 1, W4, GPU, LOW), select_kernel("cpu", 1, W4, NATIVE, NORMAL)):
        assert d.activations is None  # the compute dtype as it is


def test_8bit_weights_prefer_the_native_kernel_over_per_tensor_int8():
    # torch's dynamic int8 (one scale per tensor) took MiniLM int8 per channel to a lowest cosine of -0.05
    for fmt in (W8, W6, W8_PC):
        d = select_kernel("cpu", 128, fmt, NATIVE, LOW_P)
        assert d.kernel is Kernel.CPU_INT4 and d.activations == "int8/row"
    d = select_kernel("cpu", 128, refuse(W8, (Kernel.CPU_INT4, "odd block")), NATIVE, LOW_P)
    assert d.kernel is Kernel.CPU_INT8_DYNAMIC


@pytest.mark.parametrize("precision", ["normal", "high"])
def test_torch_int4_ops_are_refused_where_they_would_round_activations(precision):
    d = select_kernel("cpu", 1, W4, INT4PACK, BackendConfig("low", precision))
    assert d.kernel is Kernel.DENSE and f"precision={precision} needs" in d.fallback_reason
    assert "int4pack rounds them" in d.fallback_reason
    assert select_kernel("cpu", 1, W4, INT4PACK, LOW_P).kernel is Kernel.CPU_INT4  # precision Low allows it


def test_refusal_reasons_are_quoted():
    fmt = refuse(W8, (Kernel.CPU_INT4, "bits=8 does not fit"), (Kernel.CPU_INT8_WEIGHT, "K=9 is not a multiple"))
    d = select_kernel("cpu", 1, fmt, CPU_ALL, BackendConfig("low", "low_bf16"))
    assert "cpu_int8_weight: K=9 is not a multiple" in d.fallback_reason
    assert "cpu_int4: bits=8 does not fit" in d.fallback_reason


@pytest.mark.parametrize("bits,block,precision", [(5, 64, "normal"), (6, -1, "normal"), (8, -1, "normal"),
                                                  (8, 128, "normal"), (7, 32, "low"), (8, 128, "low")])
def test_cpu_memory_low_serves_every_bit_width_packed(rng, bits, block, precision):
    # with the native kernel built, memory Low never falls back to a dense float copy on the CPU (5..8 bits included)
    from lowbit.kernels.reference import linear_reference
    from lowbit.quant import QuantConfig, quantize_weight
    from lowbit.runtime import executor
    from lowbit.runtime.capabilities import capabilities

    qw = quantize_weight(torch.randn(40, 192, generator=rng), QuantConfig(bits=bits, block_size=block))
    refused = executor.refusals(qw)
    assert Kernel.CPU_INT4 not in dict(refused)
    backend = BackendConfig("low", precision)
    d = select_kernel("cpu", 3, WeightFormat.of(qw, refused), capabilities(), backend)
    assert d.fallback_reason is None and d.kernel is not Kernel.DENSE
    x = torch.randn(3, 192, generator=rng)
    y = executor.run(d.kernel, executor.prepare(d.kernel, qw), x)
    ref = linear_reference(x.double(), qw.compute_layout(), None, torch.float64)
    assert float(20 * torch.log10(ref.norm() / (y.double() - ref).norm())) > 28  # int8 activations: ~33-45 dB


def test_select_is_pure():
    args = ("cpu", 3, W4, NONE, LOW)
    assert select_kernel(*args) == select_kernel(*args)


def test_weight_format_of_quantized_weight():
    from lowbit.quant import QuantConfig, quantize_weight

    qw = quantize_weight(torch.randn(20, 100), QuantConfig(bits=3, block_size=32, symmetric=True))
    assert WeightFormat.of(qw) == WeightFormat(3, 32, True, 20, 100)


def test_warn_once_per_reason():
    reset_fallback_warnings()
    a = select_kernel("cpu", 1, W4, NONE, LOW)
    b = select_kernel("cpu", 1, W8, NONE, LOW)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert warn_fallback(a) and not warn_fallback(a) and warn_fallback(b) and not warn_fallback(b)
        assert not warn_fallback(select_kernel("cpu", 1, W4, CPU_ALL, LOW))  # not a fallback
    assert len(caught) == 2 and all(issubclass(w.category, RuntimeWarning) for w in caught)
    assert "4-bit" in str(caught[0].message)
    reset_fallback_warnings()
    with pytest.warns(RuntimeWarning, match="running dense"):
        warn_fallback(a)
    local = FallbackWarnings()
    with pytest.warns(RuntimeWarning):
        assert local.warn(a)
    reset_fallback_warnings()


@pytest.mark.parametrize("device,caps,precision,dtype", [
    ("cpu", NONE, "normal", torch.float32), ("cpu", NONE, "high", torch.float32), ("cuda", GPU, "high", torch.float32),
    ("cpu", NONE, "low", torch.float32), ("cpu", Capabilities(cpu_bf16=True), "low", torch.bfloat16),
    ("cuda", GPU, "low", torch.float16), ("cpu", NONE, "low_bf16", torch.bfloat16),
    ("cuda", GPU, "low_bf16", torch.bfloat16),
])
def test_compute_dtype(device, caps, precision, dtype):
    assert compute_dtype(device, caps, BackendConfig("low", precision)) == dtype
