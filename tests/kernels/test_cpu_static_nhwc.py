"""The static W8A8 convs on channels-last images (lowbit.kernels.cpu_static_nhwc) against a float64 conv of the same
integer codes: depthwise (odd channel counts, stride, padding, dilation, every act) and the GEMM convs (1x1 on the
whole batch, kxk through the channels-last im2col), NaN images, channels-last outputs."""

import pytest
import torch
import torch.nn.functional as F

from lowbit.kernels import cpu_native
from lowbit.kernels import cpu_static_int8 as S
from lowbit.kernels import cpu_static_nhwc as N

ACTS = {None: lambda t: t, "relu": F.relu, "relu6": F.relu6, "hardswish": F.hardswish}


@pytest.fixture
def native():
    if S.native_static_library() is None:
        pytest.skip(f"native kernels unavailable: {cpu_native.native_unavailable_reason()}")


def _reference(x, w, s, bias, a, clamp, stride, padding, dilation, groups, act):
    """float64: the codes of x, conv with the codes of w, times a * s, plus bias, then act."""
    codes = torch.div(x, a).round().clamp(-clamp, clamp).double()
    acc = F.conv2d(codes, w.double(), None, stride, padding, dilation, groups)
    y = acc * (a * s.double()).view(1, -1, 1, 1) + (0 if bias is None else bias.double().view(1, -1, 1, 1))
    return ACTS[act](y)


def _close(y, ref):
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-6 * float(ref.abs().max()))


@pytest.mark.parametrize("c,k,stride,padding,dilation,act", [
    (24, 3, 1, 1, 1, "relu6"), (35, 3, 2, 1, 1, "hardswish"), (16, 5, 2, 2, 1, None), (40, 5, 1, 2, 1, "relu"),
    (7, 3, 1, 2, 2, None), (96, 3, 2, 0, 1, "relu6")])
def test_depthwise_matches_float64(native, c, k, stride, padding, dilation, act):
    g = torch.Generator().manual_seed(c * k + stride)
    w = torch.randint(-127, 128, (c, 1, k, k), dtype=torch.int8, generator=g)
    s, bias = torch.rand(c, generator=g) + 0.1, torch.randn(c, generator=g)
    x, a, clamp = torch.randn(2, c, 13, 11, generator=g) * 3, 0.05, 100  # the clamp is exercised
    nw = N.pack_dw_nhwc(w.reshape(c, -1), s, k, k)
    y = N.conv_dw_nhwc(x.contiguous(memory_format=torch.channels_last), nw, N.dw_epilogue(nw, a, bias),
                       (stride, stride), (padding, padding), (dilation, dilation), a, clamp, act, num_threads=2)
    assert y.is_contiguous(memory_format=torch.channels_last)
    _close(y, _reference(x, w, s, bias, a, clamp, stride, padding, dilation, c, act))
    y1 = N.conv_dw_nhwc(x, nw, N.dw_epilogue(nw, a, None), (stride, stride), (padding, padding),
                        (dilation, dilation), a, clamp, act, num_threads=1)  # an NCHW input is converted
    _close(y1, _reference(x, w, s, None, a, clamp, stride, padding, dilation, c, act))


@pytest.mark.parametrize("c,o,k,stride,padding,act", [
    (24, 144, 1, 1, 0, "relu6"), (5, 9, 1, 1, 0, None), (30, 70, 3, 1, 1, "relu"), (16, 40, 3, 2, 1, "hardswish"),
    (64, 128, 1, 2, 0, None)])
def test_gemm_conv_matches_float64(native, c, o, k, stride, padding, act):
    g = torch.Generator().manual_seed(c + o + k)
    w = torch.randint(-127, 128, (o, c, k, k), dtype=torch.int8, generator=g)
    s, bias = torch.rand(o, generator=g) + 0.1, torch.randn(o, generator=g)
    x, a, clamp = torch.randn(2, c, 9, 10, generator=g) * 3, 0.05, 100
    nw = S.pack_static_native(S.conv_weight_codes(w.reshape(o, -1), (o, c, k, k)), s)
    y = N.conv_gemm_nhwc(x.contiguous(memory_format=torch.channels_last), nw, (k, k), (stride, stride),
                         (padding, padding), (1, 1), a, clamp, S.native_epilogue(nw, a, bias), act, num_threads=2)
    assert y.is_contiguous(memory_format=torch.channels_last)
    _close(y, _reference(x, w, s, bias, a, clamp, stride, padding, 1, 1, act))


def test_nan_images_and_bad_arguments(native):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 8, 6, 6, generator=g).contiguous(memory_format=torch.channels_last)
    x[1, 2, 3, 4] = float("inf")
    w = torch.randint(-127, 128, (8, 9), dtype=torch.int8, generator=g)
    nw = N.pack_dw_nhwc(w, torch.ones(8), 3, 3)
    y = N.conv_dw_nhwc(x, nw, N.dw_epilogue(nw, 0.1, None), (1, 1), (1, 1), (1, 1), 0.1, 127)
    assert torch.isnan(y[1]).all() and torch.isfinite(y[0]).all() and torch.isfinite(y[2]).all()
    pw = S.pack_static_native(w[:, :8].contiguous(), torch.ones(8))
    y = N.conv_gemm_nhwc(x, pw, (1, 1), (1, 1), (0, 0), (1, 1), 0.1, 127, S.native_epilogue(pw, 0.1, None))
    assert torch.isnan(y[1]).all() and torch.isfinite(y[0]).all()
    with pytest.raises(ValueError, match="act"):
        N.conv_dw_nhwc(x, nw, N.dw_epilogue(nw, 0.1, None), (1, 1), (1, 1), (1, 1), 0.1, 127, act="gelu")
    with pytest.raises(ValueError, match="int8"):
        N.pack_dw_nhwc(w.float(), torch.ones(8), 3, 3)
    with pytest.raises(ValueError, match="K = "):
        N.conv_gemm_nhwc(x, pw, (3, 3), (1, 1), (1, 1), (1, 1), 0.1, 127, S.native_epilogue(pw, 0.1, None))


def test_bound_callers_equal_the_functions(native):
    g = torch.Generator().manual_seed(5)
    x = (torch.randn(2, 24, 10, 9, generator=g) * 2).contiguous(memory_format=torch.channels_last)
    dw = N.pack_dw_nhwc(torch.randint(-127, 128, (24, 9), dtype=torch.int8, generator=g), torch.rand(24) + 0.1, 3, 3)
    epi = N.dw_epilogue(dw, 0.04, torch.randn(24, generator=g))
    call = N.dw_caller(dw, epi, (2, 2), (1, 1), (1, 1), 0.04, 120, "hardswish", tuple(x.shape))
    assert torch.equal(call(x), N.conv_dw_nhwc(x, dw, epi, (2, 2), (1, 1), (1, 1), 0.04, 120, "hardswish"))
    assert torch.equal(call(x.contiguous()), call(x))  # an NCHW input is converted
    for k, stride, padding in ((1, 1, 0), (3, 1, 1), (3, 2, 1)):
        w = torch.randint(-127, 128, (40, 24 * k * k), dtype=torch.int8, generator=g)
        nw = S.pack_static_native(S.conv_weight_codes(w, (40, 24, k, k)), torch.rand(40) + 0.1)
        epi = S.native_epilogue(nw, 0.04, torch.randn(40, generator=g))
        geo = ((stride, stride), (padding, padding), (1, 1))
        call = N.gemm_caller(nw, epi, (k, k), *geo, 0.04, 120, "relu6", tuple(x.shape))
        assert torch.equal(call(x), N.conv_gemm_nhwc(x, nw, (k, k), *geo, 0.04, 120, epi, "relu6"))
