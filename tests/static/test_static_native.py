"""Static W8A8 on lowbit's native kernel (every ISA variant this CPU runs) against float64, Conv + ReLU fusion,
rollback of a failed quantize_static, `lowbit info`'s static table, and the Triton static path (interpreter)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lowbit
from lowbit.calib import CalibrationError
from lowbit.kernels import cpu_native
from lowbit.kernels import cpu_static_int8 as K
from lowbit.kernels.cpu_native.build import cpu_runs
from lowbit.static import StaticConfig, quantize_static

VARIANTS = [v for v in ("avx512vnni", "avx2", "portable") if cpu_runs(v)]


@pytest.fixture(params=VARIANTS)
def variant(request, monkeypatch):
    monkeypatch.setenv("LOWBIT_NATIVE_VARIANT", request.param)
    cpu_native.reset_native()
    if K.native_static_library() is None:
        pytest.fail(f"native kernels did not build: {cpu_native.native_unavailable_reason()}")
    yield request.param
    monkeypatch.delenv("LOWBIT_NATIVE_VARIANT")
    cpu_native.reset_native()


def _ref_linear(x, w, s, a, clamp, bias, relu):
    xq = torch.div(x, a).round().clamp(-clamp, clamp).double()
    y = xq @ w.double().t() * (s.double() * torch.tensor(a, dtype=torch.float32).double()) + bias.double()
    return y.clamp(min=0) if relu else y


@pytest.mark.parametrize("m,n,k", [(1, 5, 3), (7, 17, 33), (13, 40, 130), (30, 64, 257), (1100, 20, 24)])
@pytest.mark.parametrize("relu", [False, True])
def test_native_linear_matches_float64(variant, m, n, k, relu):
    g = torch.Generator().manual_seed(m * n + k)
    w = torch.randint(-127, 128, (n, k), dtype=torch.int8, generator=g)
    s, bias = torch.rand(n, generator=g) + 0.1, torch.randn(n, generator=g)
    x = torch.randn(m, k, generator=g) * 3
    a, clamp = 0.05, 100  # |x| / a reaches 200: the clamp is exercised
    nw = K.pack_static_native(w, s)
    y = K.native_linear_static(x, nw, a, clamp, K.native_epilogue(nw, a, bias), relu=relu, num_threads=2)
    ref = _ref_linear(x, w, s, a, clamp, bias, relu)
    assert y.shape == (m, n)
    torch.testing.assert_close(y.double(), ref, rtol=1e-6, atol=1e-6 * float(ref.abs().max()))


@pytest.mark.parametrize("shape", [(1, 3, 9, 7, 5, 3, 2, 1, 1), (2, 4, 8, 8, 20, 3, 1, 1, 2),
                                   (1, 6, 5, 5, 17, 1, 1, 0, 1)])
def test_native_conv_matches_float64(variant, shape):
    b, c, h, wd, o, kk, stride, pad, dil = shape
    g = torch.Generator().manual_seed(o)
    x = torch.randn(b, c, h, wd, generator=g)
    w = torch.randint(-127, 128, (o, c * kk * kk), dtype=torch.int8, generator=g)
    s, bias, a = torch.rand(o, generator=g) + 0.1, torch.randn(o, generator=g), 0.03
    nw = K.pack_static_native(K.conv_weight_codes(w, (o, c, kk, kk)), s)
    y = K.native_conv2d_static(x, nw, (kk, kk), (stride, stride), (pad, pad), (dil, dil), a, 127,
                               K.native_epilogue(nw, a, bias), relu=True)
    xq = torch.div(x, a).round().clamp(-127, 127).double()
    ref = F.conv2d(xq, w.double().reshape(o, c, kk, kk), None, stride, pad, dil)
    ref = (ref * (s * a).double().reshape(1, -1, 1, 1) + bias.double().reshape(1, -1, 1, 1)).clamp(min=0)
    torch.testing.assert_close(y.double(), ref, rtol=1e-6, atol=1e-6 * float(ref.abs().max()))


@pytest.mark.parametrize("b,c,h,wd,o", [(1, 3, 4, 7, 5), (2, 33, 9, 9, 17), (1, 24, 12, 12, 70)])
@pytest.mark.parametrize("act", [None, "relu", "relu6", "hardswish"])
def test_native_pointwise_conv_matches_float64(variant, b, c, h, wd, o, act):
    g = torch.Generator().manual_seed(o * c)
    x = torch.randn(b, c, h, wd, generator=g) * 3
    x[0, 0, 0, 0] = 10.0  # |x| / a = 200: the clamp is exercised
    w = torch.randint(-127, 128, (o, c), dtype=torch.int8, generator=g)
    s, bias, a, clamp = torch.rand(o, generator=g) + 0.1, torch.randn(o, generator=g), 0.05, 100
    pw = K.pack_static_pw(w, s)
    y = K.native_conv1x1_static(x, pw, a, clamp, K.pointwise_epilogue(pw, a, bias), act)
    xq = torch.div(x, a).round().clamp(-clamp, clamp).double()
    ref = F.conv2d(xq, w.double().reshape(o, c, 1, 1)) * (s * torch.tensor(a)).double().reshape(1, -1, 1, 1)
    ref = ref + bias.double().reshape(1, -1, 1, 1)
    ref = {None: ref, "relu": F.relu(ref), "relu6": F.relu6(ref), "hardswish": F.hardswish(ref)}[act]
    torch.testing.assert_close(y.double(), ref, rtol=1e-6, atol=1e-6 * float(ref.abs().max()))
    x[b - 1, c - 1, h - 1, 0] = float("nan")
    y = K.native_conv1x1_static(x, pw, a, clamp, K.pointwise_epilogue(pw, a, bias), act)
    assert bool(y[b - 1].isnan().all()) and (b == 1 or bool(torch.isfinite(y[0]).all()))


@pytest.mark.parametrize("c,h,wd,k,stride", [(8, 9, 7, 3, 1), (5, 12, 11, 3, 2), (6, 8, 8, 5, 2)])
@pytest.mark.parametrize("act", [None, "relu6", "hardswish"])
def test_native_static_depthwise_matches_float64(variant, c, h, wd, k, stride, act):
    """lb_dwconv rounding its input to the static codes (vectorized fill) and the fused act, every variant."""
    from lowbit.kernels import cpu_conv

    g = torch.Generator().manual_seed(c * h + k)
    x = torch.randn(2, c, h, wd, generator=g) * 3
    w = torch.randint(-127, 128, (c, k * k), dtype=torch.int8, generator=g)
    s, bias, a, clamp = torch.rand(c, generator=g) + 0.1, torch.randn(c, generator=g), 0.05, 100
    codes = (w.to(torch.int16) + 128).to(torch.uint8)
    scale = (s * a).reshape(-1, 1)
    dw = cpu_conv.DepthwiseWeight(codes, scale, torch.full_like(scale, 128.0), k * k)
    pad = k // 2
    y = cpu_conv.conv2d_depthwise(x, dw, (c, 1, k, k), bias, (stride, stride), (pad, pad), (1, 1), act,
                                  input_step=a, input_clamp=clamp)
    xq = torch.div(x, a).round().clamp(-clamp, clamp).double()
    ref = F.conv2d(xq, w.double().reshape(c, 1, k, k), None, stride, pad, 1, c) * scale.double().reshape(1, -1, 1, 1)
    ref = ref + bias.double().reshape(1, -1, 1, 1)
    ref = {None: ref, "relu6": F.relu6(ref), "hardswish": F.hardswish(ref)}[act]
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
    x[1, c - 1, h - 1, wd - 1] = float("inf")
    y = cpu_conv.conv2d_depthwise(x, dw, (c, 1, k, k), bias, (stride, stride), (pad, pad), (1, 1), act,
                                  input_step=a, input_clamp=clamp)
    assert bool(y[1].isnan().all()) and bool(torch.isfinite(y[0]).all())


@pytest.mark.parametrize("stride,wd", [(1, 40), (2, 50), (2, 30), (1, 9)])  # by row (W >= 24; 48 at stride 2)
def test_native_static_depthwise_rounds_ties_as_torch_div(variant, stride, wd):
    """Inputs at (k + 1/2) * step, where x * (1 / step) and x / step can round apart: the codes are torch.div's."""
    from lowbit.kernels import cpu_conv

    c, h, a = 3, 6, 0.03
    k = torch.arange(c * h * wd, dtype=torch.float32).reshape(1, c, h, wd) % 250 - 125
    x = (k + 0.5) * torch.tensor(a)  # ties of x / a, and the floats either side of them: channel 0, 1, 2
    x[:, 1], x[:, 2] = torch.nextafter(x[:, 1], x[:, 1] + 1), torch.nextafter(x[:, 2], x[:, 2] - 1)
    assert not torch.equal(torch.div(x, a).round(), (x * (1 / torch.tensor(a))).round())  # the case is real
    ones = torch.zeros(c, 1, dtype=torch.uint8) + 129  # the single tap's code 1: y = the input code
    dw = cpu_conv.DepthwiseWeight(ones, torch.ones(c, 1), torch.full((c, 1), 128.0), 1)
    y = cpu_conv.conv2d_depthwise(x, dw, (c, 1, 1, 1), None, (stride, stride), (0, 0), (1, 1), None,
                                  input_step=a, input_clamp=127)
    ref = torch.div(x, a).round().clamp(-127, 127)[:, :, ::stride, ::stride]
    assert torch.equal(y, ref)


def test_static_conv_runs_a_float_copy_where_torch_is_faster():
    """A 3-channel 3x3 stem runs F.conv2d on the dequantized weight (input not rounded) with the fused act, and the
    summary says so; its output comes channels-last, and the depthwise conv after it on a 7x7 output runs the
    channels-last int8 kernel (faster than torch's conv at every plane size), against float64."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.Hardswish(), nn.Conv2d(16, 16, 3, 2, 1, groups=16),
                          nn.ReLU6()).eval()
    x = torch.randn(2, 3, 14, 14)
    q = quantize_static(model, [x], StaticConfig(activation_method="minmax"), progress=False)
    summary = str(q.lowbit_summary)
    assert "at 14x14 outputs a float copy (27 input values per output" in summary
    assert "at 7x7 outputs a float copy" not in summary
    w0 = q[0].quantized_weight("weight").dequantize(torch.float32)
    dw = q[2]
    wq, s = dw.prepared().wt.t().reshape(16, 1, 3, 3).double(), dw.prepared().scale.double()
    with torch.no_grad():
        for _ in range(2):  # the first call, then the bound call
            h = q[1](q[0](x))
            assert h.is_contiguous(memory_format=torch.channels_last)
            torch.testing.assert_close(h, F.hardswish(F.conv2d(x, w0, q[0].bias, 1, 1)), rtol=1e-6, atol=1e-6)
            codes = torch.div(h, dw.input_scale).round().clamp(-127, 127).double()
            ref = F.relu6(F.conv2d(codes, wq, None, 2, 1, 1, 16) * (s * dw.input_scale).view(1, -1, 1, 1)
                          + dw.bias.double().view(1, -1, 1, 1))
            y = q(x)
            assert y.is_contiguous(memory_format=torch.channels_last) and torch.equal(y, dw(h))
            torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-6 * float(ref.abs().max()))
    big = torch.randn(1, 16, 56, 56)
    assert dw._direct_kernel(big, (2, 2), (1, 1), [(1, 1), (1, 1)], [16, 1, 3, 3]) == "nhwc_depthwise"
    assert dw._direct_kernel(big.double(), (2, 2), (1, 1), [(1, 1), (1, 1)], [16, 1, 3, 3]) == "depthwise"  # NCHW


def test_static_pointwise_layer_runs_the_channels_last_gemm():
    conv = nn.Conv2d(40, 24, 1)
    x = torch.randn(2, 40, 6, 5)
    model = quantize_static(nn.Sequential(conv).eval(), [x], StaticConfig(activation_method="minmax"),
                            progress=False)
    layer = model[0]
    assert layer._direct_kernel(x, (1, 1), (1, 1), [(0, 0), (0, 0)], [24, 40, 1, 1]) == "nhwc_gemm"
    w = layer.prepared()
    xq = torch.div(x, layer.input_scale).round().clamp(-127, 127).double()
    ref = F.conv2d(xq, w.wt.t().double().reshape(24, 40, 1, 1)) * (w.scale.double() * layer.input_scale)[:, None, None]
    ref = ref + conv.bias.detach().double()[:, None, None]
    with torch.no_grad():
        first = model(x)  # the usual path, which binds the call
        assert first.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(first.double(), ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
        assert layer._bound_call(x)[1] is not None and torch.equal(model(x), first)  # the bound call, bit for bit
        x[1, 7, 2, 2] = float("nan")
        y = model(x)
    assert bool(y[1].isnan().all()) and torch.equal(y[0], first[0])


class ConvNet(nn.Module):
    def __init__(self, residual=False):
        super().__init__()
        self.residual = residual
        self.c1, self.bn1, self.r1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU()
        self.c2, self.r2 = nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        h = self.r1(self.bn1(self.c1(x)))
        y = self.c2(h)
        z = self.r2(y)
        if self.residual:
            z = z + y  # c2's output has a second consumer: fusing r2 would change it
        return self.fc(z.mean((2, 3)))


def _net(residual=False):
    torch.manual_seed(0)
    net = ConvNet(residual).eval()
    net.bn1.running_var.uniform_(0.5, 2.0)
    net.bn1.running_mean.uniform_(-0.2, 0.2)
    return net


def test_conv_relu_fusion_exact_and_round_trips(tmp_path, capsys):
    cal = [torch.randn(2, 3, 10, 10) for _ in range(2)]
    fused = quantize_static(_net(), cal, StaticConfig(activation_method="minmax"), progress=False)
    plain = quantize_static(_net(), cal, StaticConfig(activation_method="minmax", fuse_relu=False), progress=False)
    assert fused.lowbit_summary.fused_relu == [("c1", "r1"), ("c2", "r2")]
    assert isinstance(fused.r1, nn.Identity) and isinstance(fused.r2, nn.Identity) and fused.c2.fused_relu
    assert isinstance(plain.r1, nn.ReLU) and not plain.c1.fused_relu and plain.lowbit_summary.fused_relu == []
    assert "ReLU 'r1' fused" in str(fused.lowbit_summary)
    x = torch.randn(3, 3, 10, 10)
    torch.testing.assert_close(fused(x), plain(x), rtol=0, atol=1e-6)
    lowbit.save(fused, tmp_path / "f.safetensors")
    loaded = lowbit.load(ConvNet().eval(), tmp_path / "f.safetensors")
    assert isinstance(loaded.r2, nn.Identity) and loaded.c2.fused_relu
    assert torch.equal(loaded(x), fused(x))
    from lowbit.cli.info import checkpoint_rows

    static = checkpoint_rows(tmp_path / "f.safetensors")[1]["static"]
    assert [r["layer"] for r in static] == ["c1", "c2", "fc"]
    assert [r["relu"] for r in static] == [True, True, False]
    assert static[0]["input_scale"] == fused.c1.input_scale and static[0]["input_clamp"] == 127
    from lowbit.cli import main

    assert main(["info", str(tmp_path / "f.safetensors")]) == 0
    text = capsys.readouterr().out
    assert "activation step" in text and f"{fused.c2.input_scale:.6g}" in text and "StaticQuantConv2d" in text


class Block(nn.Module):
    """mobilenet's inverted residual: 1x1 + ReLU6, depthwise 3x3 + Hardswish, 1x1 + Hardswish, Linear + Hardswish."""

    def __init__(self):
        super().__init__()
        self.pw1, self.a1 = nn.Conv2d(24, 48, 1), nn.ReLU6()
        self.dw, self.a2 = nn.Conv2d(48, 48, 3, padding=1, groups=48), nn.Hardswish()
        self.pw2, self.a3 = nn.Conv2d(48, 24, 1), nn.Hardswish()
        self.fc, self.a4 = nn.Linear(24, 8), nn.Hardswish()

    def forward(self, x):
        y = self.a3(self.pw2(self.a2(self.dw(self.a1(self.pw1(x))))))
        return self.a4(self.fc(y.mean((2, 3))))


def test_relu6_hardswish_fusion_matches_unfused_and_round_trips(tmp_path):
    torch.manual_seed(0)
    cal = [torch.randn(2, 24, 9, 9) * 2 for _ in range(2)]
    torch.manual_seed(1)
    fused = quantize_static(Block().eval(), cal, StaticConfig(activation_method="minmax"), progress=False)
    torch.manual_seed(1)
    plain = quantize_static(Block().eval(), cal, StaticConfig(activation_method="minmax", fuse_relu=False),
                            progress=False)
    assert fused.lowbit_summary.fused_relu == [("dw", "a2"), ("pw1", "a1"), ("pw2", "a3")]  # not the Linear's
    assert (fused.pw1.fused_act, fused.dw.fused_act, fused.pw2.fused_act) == ("relu6", "hardswish", "hardswish")
    assert isinstance(fused.a1, nn.Identity) and isinstance(fused.a4, nn.Hardswish)
    x = torch.randn(3, 24, 9, 9) * 2
    for _ in range(2):  # the first call, then the bound kernel calls
        torch.testing.assert_close(fused(x), plain(x), rtol=1e-5, atol=1e-5)
    lowbit.save(fused, tmp_path / "b.safetensors")
    loaded = lowbit.load(Block().eval(), tmp_path / "b.safetensors")
    assert isinstance(loaded.a2, nn.Identity) and loaded.dw.fused_act == "hardswish" and not loaded.dw.fused_relu
    assert torch.equal(loaded(x), fused(x))
    from lowbit.cli.info import checkpoint_rows

    static = checkpoint_rows(tmp_path / "b.safetensors")[1]["static"]
    assert [(r["layer"], r["relu"], r["fused_act"]) for r in static] == [
        ("dw", False, "hardswish"), ("fc", False, None), ("pw1", False, "relu6"), ("pw2", False, "hardswish")]


def test_no_fusion_when_the_conv_output_has_another_consumer():
    model = quantize_static(_net(residual=True), [torch.randn(2, 3, 10, 10)], progress=False)
    assert model.lowbit_summary.fused_relu == [("c1", "r1")]
    assert isinstance(model.r2, nn.ReLU) and not model.c2.fused_relu


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, [type(m) for m in model.modules()]


@pytest.mark.parametrize("train", [False, True])
def test_failed_call_leaves_the_model_unchanged(train):
    model = _net().train(train)
    state, types = _snapshot(model)
    bad = [torch.randn(2, 3, 10, 10), torch.randn(2, 5, 10, 10)]  # item 1 fails after BatchNorm folding
    with pytest.warns(UserWarning, match="training mode") if train else _no_warning():
        with pytest.raises(CalibrationError, match="item 1"):
            quantize_static(model, bad, progress=False)
    after, after_types = _snapshot(model)
    assert after_types == types and isinstance(model.bn1, nn.BatchNorm2d) and model.c1.bias is None
    assert after.keys() == state.keys() and all(torch.equal(after[k], state[k]) for k in state)
    assert all(m.training == train for m in model.modules())
    assert not hasattr(model, "lowbit_static") and not hasattr(model, "lowbit_summary")


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_dispatch_prefers_native_then_int_mm():
    from lowbit.runtime import Capabilities, Decision, StaticKernel, WeightFormat
    from lowbit.runtime.static_dispatch import select_static

    def fmt(k, refused=()):
        return WeightFormat(8, k, True, 64, k, refused)

    native = Capabilities(native_extension=True, torch_ops_probed=("int_mm",))
    too_wide = fmt(K.NATIVE_MAX_K + 1, ((StaticKernel.NATIVE, "K too large"),))
    assert select_static("cpu", 16, fmt(64), native) == Decision(StaticKernel.NATIVE)
    assert select_static("cpu", 16, too_wide, native) == Decision(StaticKernel.INT_MM)
    assert select_static("cpu", 16, fmt(64), Capabilities()).kernel is StaticKernel.EMULATED
    assert select_static("cuda", 16, fmt(64), Capabilities(triton_gpu=True)) == Decision(StaticKernel.TRITON)
    assert select_static("cpu", 16, fmt(64), native, fused=False) == Decision(StaticKernel.INT_MM)


@pytest.mark.parametrize("groups,ig,taps,plane,pointwise,native,expect", [
    (96, 1, 9, 56 * 56, False, True, "depthwise"),  # a depthwise conv on a big plane: the direct kernel
    (96, 1, 9, 27 * 28, False, True, "float_conv"),  # under 28x28 outputs: torch's fp32 conv is faster
    (96, 1, 9, 27 * 28, False, False, "float_conv"),  # the float copy needs no native library
    (96, 1, 81, 56 * 56, False, True, None),  # 9x9 taps: beyond lb_dwconv, im2col
    (1, 3, 9, 112 * 112, False, True, "float_conv"),  # the 3-channel 3x3 stem (27 values per output)
    (1, 4, 9, 112 * 112, False, True, None),  # 36 values per output: the fused native conv (im2col)
    (1, 24, 1, 56 * 56, True, True, "pointwise"),
    (1, 24, 1, 56 * 56, True, False, None),  # no native library: im2col + the int8 matmul
    (1, 24, 1, 56 * 56, False, True, None),  # a strided or padded 1x1: im2col
    (1, 96, 1, 1, True, True, "float_conv"),  # squeeze-excite's 1x1 on one pixel
    (1, 96, 1, 0, True, True, "pointwise"),  # plane unknown: never the float copy
])
def test_select_static_conv(groups, ig, taps, plane, pointwise, native, expect):
    from lowbit.runtime import Capabilities
    from lowbit.runtime.static_dispatch import select_static_conv

    caps = Capabilities(native_extension=native)
    assert select_static_conv("cpu", groups, ig, taps, True, caps, pointwise, plane) == expect
    assert select_static_conv("cuda", groups, ig, taps, True, caps, pointwise, plane) is None


@pytest.mark.parametrize("groups,ig,taps,plane,zero_pad,native,expect", [
    (96, 1, 9, 7 * 7, True, True, "nhwc_depthwise"),  # channels-last: the int8 kernel at every plane size
    (96, 1, 9, 7 * 7, False, True, "float_conv"),  # not zero-padded: the NCHW rules
    (96, 1, 81, 56 * 56, True, True, None),  # 9x9 taps: beyond the kernel
    (1, 3, 9, 112 * 112, True, True, "float_conv"),  # the 3-channel stem stays a float copy
    (1, 16, 1, 112 * 112, True, True, "nhwc_gemm"),  # 1x1 and kxk alike
    (1, 24, 9, 28 * 28, True, True, "nhwc_gemm"),
    (1, 96, 1, 1, True, True, "float_conv"),  # squeeze-excite's 1x1 on one pixel
    (1, 24, 9, 28 * 28, True, False, None),  # no native library
])
def test_select_static_conv_channels_last(groups, ig, taps, plane, zero_pad, native, expect):
    from lowbit.runtime import Capabilities
    from lowbit.runtime.static_dispatch import select_static_conv

    caps = Capabilities(native_extension=native)
    assert select_static_conv("cpu", groups, ig, taps, zero_pad, caps, False, plane, nhwc=True) == expect


def test_triton_static_matches_cpu(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    from lowbit.kernels.triton_int8 import gemm_a8w_static, quantize_static_int8
    from lowbit.quant.static_int8 import quantize_symmetric

    torch.manual_seed(1)
    model = quantize_static(nn.Sequential(nn.Linear(64, 24)).eval(), [torch.randn(8, 64)], progress=False)
    layer = model[0]
    x = torch.randn(5, 64) * 1.5
    x[0, :3] = torch.tensor([2.5, -3.5, 0.5]) * layer.input_scale  # exact ties: round half to even
    xq, sums = quantize_static_int8(x, layer.input_scale, 127)
    ref_q = quantize_symmetric(x, layer.input_scale, 127)
    assert torch.equal(xq, ref_q) and torch.equal(sums[:, 0], ref_q.int().sum(1))
    y = gemm_a8w_static(x, layer.quantized_weight("weight").compute_layout(), layer.input_scale, 127, layer.bias)
    torch.testing.assert_close(y, layer(x), rtol=1e-5, atol=1e-5)
    from lowbit.runtime import StaticKernel, executor

    relu = layer.fuse_relu()  # the static Triton row of the kernel table, with the fused ReLU
    cw = executor.prepare(StaticKernel.TRITON, relu.quantized_weight("weight"), None, "static")
    y = executor.run(StaticKernel.TRITON, cw, x, relu.bias, None, "static", step=relu.input_scale, clamp=127, relu=True)
    torch.testing.assert_close(y, layer(x), rtol=1e-5, atol=1e-5)


def test_static_conv_bound_call_is_bit_identical():
    """A static conv keeps one bound kernel call per input shape (depthwise, fused native conv): the same output bit
    for bit as the usual path, which it takes again after set_static changes the step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 24, 1), nn.ReLU(), nn.Conv2d(24, 24, 3, padding=1, groups=24),
                          nn.Conv2d(24, 8, 3, padding=1)).eval()
    x = torch.randn(1, 8, 28, 28)  # 28x28 planes: the depthwise conv runs int8 (smaller ones run a float copy)
    q = quantize_static(model, [torch.randn(1, 8, 28, 28) for _ in range(4)], StaticConfig(), progress=False)
    with torch.no_grad():
        first = q(x)
        assert torch.equal(q(x), first)
        for layer in (q[2], q[3]):  # the direct depthwise kernel; the fused native conv
            inp = torch.randn(1, 24, 28, 28)
            y0 = layer(inp)
            assert layer._bound_call(inp)[1] is not None and torch.equal(layer(inp), y0)
            layer.set_static(layer.input_scale * 2, layer.input_clamp)
            assert layer._bound_call(inp) == (False, None)
            y1 = layer(inp)
            assert not torch.equal(y1, y0) and layer._bound_call(inp)[1] is not None
            layer.fused_act = "relu6"  # a plain attribute write drops the bound call too
            assert layer._bound_call(inp) == (False, None)
            assert torch.equal(layer(inp), F.relu6(y1))
