"""lowbit.nn.weight_cache: decisions per M bucket (bounded, and exactly what dispatch decides per M)."""

import itertools

import pytest
import torch
from torch import nn

import lowbit
from lowbit import QuantConfig
from lowbit.nn import QuantLinear, set_backend
from lowbit.nn.weight_cache import M_BOUNDARIES, cached, compute_view, m_bucket
from lowbit.quant import quantize_weight
from lowbit.runtime import BackendConfig, Capabilities, WeightFormat, select_kernel

CAPS = [Capabilities(), Capabilities(cpu_int4=True, cpu_int8_dynamic=True, cpu_int8_weight=True),
        Capabilities(triton=True, gpu=True, triton_gpu=True),
        Capabilities(cpu_int8_weight=True, cpu_int4=True,
                     torch_op_refusals=(("int8pack", "M=2..15, N%16!=0, K%16!=0", "crashes"),)),
        Capabilities(cpu_int4=True, cpu_int8_dynamic=True, native_variant="avx512vnni", cpu_bf16=True)]
FORMATS = [WeightFormat(4, 64, False, 384, 1536), WeightFormat(8, 136, True, 45, 136),
           WeightFormat(3, 32, True, 40, 200), WeightFormat(16, 64, True, 64, 64)]
BACKENDS = [BackendConfig(m, p) for m in ("normal", "low", "high") for p in ("normal", "low", "low_bf16")]


def test_dispatch_decides_alike_within_each_m_bucket():
    for caps, fmt, backend, device in itertools.product(CAPS, FORMATS, BACKENDS, ("cpu", "cuda")):
        for m in (*range(1, 40), 100, 127, 128, 129, 200, 1000):  # every boundary and its sides
            assert select_kernel(device, m, fmt, caps, backend) == \
                select_kernel(device, m_bucket(m), fmt, caps, backend), (m, fmt, backend, device)


def test_buckets_are_few_and_cover_every_m():
    assert M_BOUNDARIES[0] == 1 and len(M_BOUNDARIES) <= 8
    assert [m_bucket(m) for m in (1, 2, 15, 16, 17, 31, 32, 127, 128, 10**6)] == \
        [1, 2, 2, 16, 17, 17, 32, 32, 128, 128]


def test_a_layer_fed_many_lengths_keeps_one_plan_per_bucket(rng):
    lin = torch.nn.Linear(64, 32)
    q = QuantLinear.from_float(lin, quantize_weight(lin.weight.detach(), QuantConfig(bits=4, block_size=32)),
                               BackendConfig("low"))
    with torch.inference_mode():
        for m in range(1, 200):
            q(torch.randn(m, 64, generator=rng))
    entry = cached(q._buffers["weight_packed"])
    assert len(entry.plans) == len({m_bucket(m) for m in range(1, 200)}) == 6


def test_compute_view_keeps_the_storage_dtype_and_no_invented_method(rng):
    qw = quantize_weight(torch.randn(8, 32, generator=rng), QuantConfig(bits=4, block_size=16, method="hqq"))
    view = compute_view(qw.packed, qw.scale, qw.zero, list(qw.shape), qw.bits, qw.block_size)
    assert view.dtype == qw.scale.dtype and view.method == ""
    torch.testing.assert_close(view.dequantize(torch.float32), qw.dequantize(torch.float32))


def test_identity_stamp_never_matches_a_dead_object():
    from lowbit.nn.identity import Same

    a, b = torch.zeros(3), torch.zeros(3)
    sa = Same(a)
    assert sa == Same(a) and hash(sa) == hash(Same(a)) and sa != Same(b)
    del a
    assert sa != Same(b) and not sa == sa  # dead: equal to nothing, itself included, so a cache rebuilds


@pytest.mark.parametrize("memory", ["low", "high"])
def test_a_scale_replaced_twice_between_calls_is_used(memory):
    """The cache stamp held id(scale): the third scale often lands at the first one's address, and the kernel then
    ran the first scale's prepared weight (2x instead of 5x here at memory Low)."""
    torch.manual_seed(0)
    model = lowbit.quantize(nn.Sequential(nn.Linear(64, 64, bias=False)), lowbit.QuantConfig(bits=4, block_size=32),
                            progress=False)
    layer = set_backend(model, BackendConfig(memory=memory))[0]
    x = torch.randn(3, 64)
    with torch.no_grad():
        y0 = layer(x)
        base = layer.weight_scale
        for factor in (2.0, 3.0, 5.0):
            layer.weight_scale = base * factor
            if factor == 2.0:
                layer(x)  # builds the cache with this scale
        got = layer(x)
        fresh = set_backend(model, BackendConfig(memory=memory))[0](x)  # every cache dropped: the scale now held
    assert torch.equal(got, fresh)
    # 5x up to the fp16 rounding of the scales (a stale 2x is 0.6 off)
    assert float((got - 5 * y0).norm() / (5 * y0).norm()) < 1e-3
