"""The native static W8A8 linear's two public halves (activation codes, then the GEMM) against float64 and against
the whole `native_linear_static`, bit for bit."""

import pytest
import torch

from lowbit.kernels import cpu_native
from lowbit.kernels import cpu_static_int8 as K


@pytest.fixture
def native():
    if K.native_static_library() is None:
        pytest.skip(f"native kernels unavailable: {cpu_native.native_unavailable_reason()}")


@pytest.mark.parametrize("m,n,k", [(1, 5, 3), (13, 40, 130)])
def test_halves_equal_the_whole_and_float64(native, m, n, k):
    g = torch.Generator().manual_seed(m + n + k)
    w = torch.randint(-127, 128, (n, k), dtype=torch.int8, generator=g)
    s, bias = torch.rand(n, generator=g) + 0.1, torch.randn(n, generator=g)
    x, a, clamp = torch.randn(m, k, generator=g) * 3, 0.05, 100  # |x| / a reaches 200: the clamp is exercised
    nw = K.pack_static_native(w, s)
    epi = K.native_epilogue(nw, a, bias)
    xq, bad = K.native_quantize_activations(x, nw.kp, a, clamp, num_threads=1)
    out = torch.full((m, n), float("nan"))
    y = K.native_gemm_static(xq, m, nw, epi, relu=True, out=out, num_threads=2)
    assert bad == 0 and y is out
    assert torch.equal(y, K.native_linear_static(x, nw, a, clamp, epi, relu=True, num_threads=2))
    codes = torch.div(x, a).round().clamp(-clamp, clamp).double()
    ref = (codes @ w.double().t() * (s.double() * a) + bias.double()).clamp(min=0)
    torch.testing.assert_close(y.double(), ref, rtol=1e-6, atol=1e-6 * float(ref.abs().max()))


def test_activation_codes_count_nan_and_reject_bad_input(native):
    nw = K.pack_static_native(torch.ones(4, 8, dtype=torch.int8), torch.ones(4))
    x = torch.randn(3, 8)
    x[1, 2] = float("nan")
    assert K.native_quantize_activations(x, nw.kp, 0.1, 127)[1] == 1
    with pytest.raises(ValueError, match="float32 contiguous"):
        K.native_quantize_activations(torch.randn(3, nw.kp + 1), nw.kp, 0.1, 127)
    with pytest.raises(ValueError, match="float32 contiguous"):
        K.native_quantize_activations(x.double(), nw.kp, 0.1, 127)
