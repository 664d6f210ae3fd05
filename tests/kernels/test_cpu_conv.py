"""lowbit's native conv kernels (lowbit.kernels.cpu_conv) against F.conv2d in float64 of the dequantized weight, on
every ISA variant this CPU runs, and the conv rows of dispatch (float copy + one warning where no kernel wins)."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from native_marks import needs_native
from torch import nn

from lowbit.kernels import cpu_conv
from lowbit.kernels.cpu_native.build import VARIANTS, build_native, runnable_variants
from lowbit.nn import QuantConv2d
from lowbit.quant import QuantConfig, quantize_weight
from lowbit.runtime import BackendConfig, Kernel
from lowbit.runtime.dispatch import Decision, WeightFormat, reset_fallback_warnings, select_conv

pytestmark = needs_native

GEMM_SQNR = 38.0  # int8 activations per output pixel (~40-45 dB measured)
DW_SQNR = 100.0  # the depthwise kernel computes in fp32 (~140 dB measured)
REFS = {None: lambda y: y, "relu": F.relu, "relu6": lambda y: y.clamp(0, 6), "hardswish": F.hardswish}
# (out, in/groups, kh, kw, groups, stride, padding, dilation, bits, block, act, B, H, W)
CASES = [
    (16, 1, 3, 3, 16, (1, 1), (1, 1), (1, 1), 4, 64, None, 2, 13, 11),  # depthwise
    (32, 1, 3, 3, 16, (2, 2), (1, 1), (1, 1), 2, 32, "relu6", 1, 9, 10),  # depthwise, channel multiplier 2
    (12, 1, 5, 5, 12, (2, 1), (2, 0), (2, 1), 8, -1, "hardswish", 2, 12, 7),  # depthwise, dilated
    (24, 1, 3, 3, 24, (2, 2), (1, 1), (1, 1), 4, 64, "relu", 1, 29, 31),  # depthwise s2, odd planes, > 32 outputs
    (8, 1, 5, 5, 8, (1, 2), (2, 2), (1, 1), 8, -1, None, 1, 7, 7),  # depthwise, column stride only, 7x7
    (6, 1, 3, 3, 6, (3, 3), (0, 1), (2, 1), 4, 32, "hardswish", 1, 19, 20),  # depthwise stride 3, dilated rows
    (24, 5, 3, 3, 1, (1, 1), (1, 1), (1, 1), 4, 32, None, 2, 7, 9),  # dense 3x3, K = 45
    (24, 5, 3, 2, 3, (2, 2), (0, 1), (1, 2), 3, -1, "relu", 1, 11, 8),  # grouped, odd kernel, dilation
    (40, 48, 1, 1, 1, (1, 1), (0, 0), (1, 1), 4, 32, None, 3, 5, 6),  # 1x1: the NHWC column path
    (36, 70, 1, 1, 1, (2, 2), (0, 0), (1, 1), 6, 64, "relu", 1, 7, 7),  # 1x1 strided, K not a multiple of 64
    (20, 3, 7, 7, 1, (2, 2), (3, 3), (1, 1), 5, 64, None, 1, 17, 15),  # stem-like, K = 147
    (16, 128, 3, 3, 2, (1, 1), (1, 1), (1, 1), 8, -1, "relu", 2, 20, 19),  # K = 1152: 3 pixel chunks per image
    (16, 8, 3, 3, 1, (1, 2), (2, 1), (2, 1), 4, 32, None, 1, 15, 16),  # padded planes with row dilation
    # the pixel-tile path (one group, column stride and dilation 1, output planes from 196 pixels without VNNI and
    # 2048 with): odd O, a 2-pixel tail tile, K < Kp; 8-bit (VNNI only) with row stride and dilation 2; K = 630
    (33, 16, 3, 3, 1, (1, 1), (1, 1), (1, 1), 4, 64, "relu", 2, 46, 50),
    (8, 12, 5, 5, 1, (2, 1), (2, 2), (2, 1), 8, -1, None, 1, 90, 60),
    (16, 70, 3, 3, 1, (1, 1), (0, 1), (1, 1), 4, 32, "hardswish", 1, 15, 17),
    (16, 3, 7, 7, 1, (2, 2), (3, 3), (1, 1), 4, 64, "relu", 1, 100, 98),  # stem-like, column stride 2, 1-pixel tail
]


@pytest.fixture(scope="module", params=runnable_variants())
def library(request):
    return build_native(flag_sets=VARIANTS[request.param])


def sqnr(ref, y):
    return (20 * torch.log10(ref.norm() / (ref - y).norm())).item()


# every case with the weight's own activation scheme; the GEMM-kind ones (not depthwise) with int8/32 too
SCHEMES = [(c, None) for c in CASES] + [(c, "int8/32") for c in CASES if not (c[1] == 1 and c[4] > 1)]


@pytest.mark.parametrize("case,scheme", SCHEMES,
                         ids=lambda c: c if isinstance(c, str) or c is None else
                         f"o{c[0]}i{c[1]}k{c[2]}x{c[3]}g{c[4]}b{c[8]}")
def test_native_conv_matches_float64(library, case, scheme, rng):
    """Both kernels on every variant; the GEMM kind with the weight's own activation scheme and with int8/32 (memory
    Low's at precision Normal)."""
    o, ig, kh, kw, groups, stride, padding, dilation, bits, block, act, b, h, w = case
    qw = quantize_weight(torch.randn(o, ig, kh, kw, generator=rng), QuantConfig(bits=bits, block_size=block))
    x, bias = torch.randn(b, ig * groups, h, w, generator=rng), torch.randn(o, generator=rng)
    prepared = cpu_conv.prepare_conv(qw, groups)
    depthwise = cpu_conv.conv_kind(qw.shape, groups) == "depthwise"
    assert isinstance(prepared.weight, cpu_conv.DepthwiseWeight) == depthwise
    y = cpu_conv.conv2d_native(x, prepared, bias, stride, padding, dilation, groups, act, library=library,
                               activations=scheme)
    ref = REFS[act](F.conv2d(x.double(), qw.dequantize(torch.float64), bias.double(), stride, padding, dilation,
                             groups))
    assert y.shape == ref.shape and y.is_contiguous()
    assert sqnr(ref, y.double()) >= (DW_SQNR if depthwise else GEMM_SQNR)


def test_native_conv_errors(rng):
    qw = quantize_weight(torch.randn(8, 4, 3, 3, generator=rng), QuantConfig(bits=4, block_size=32))
    w = cpu_conv.prepare_conv(qw, 1).weight
    x = torch.randn(1, 4, 6, 6, generator=rng)
    with pytest.raises(ValueError, match="does not fit"):
        cpu_conv.conv2d_gemm(torch.randn(1, 5, 6, 6), w, qw.shape, None, (1, 1), (0, 0), (1, 1), 1)
    with pytest.raises(ValueError, match="bias has shape"):
        cpu_conv.conv2d_gemm(x, w, qw.shape, torch.zeros(3), (1, 1), (0, 0), (1, 1), 1)
    with pytest.raises(ValueError, match="act='gelu'"):
        cpu_conv.conv2d_gemm(x, w, qw.shape, None, (1, 1), (0, 0), (1, 1), 1, act="gelu")
    q16 = quantize_weight(torch.randn(8, 4, 3, 3), QuantConfig(bits=4, block_size=16))
    assert "multiple of 32" in cpu_conv.native_conv_reason(q16, 1)
    assert cpu_conv.native_conv_reason(quantize_weight(torch.randn(8, 1, 3, 3), QuantConfig(bits=4, block_size=16)),
                                       8) is None  # the depthwise kernel takes any block


FMT = WeightFormat(bits=4, group_size=64, symmetric=False, n=256, k=576)
LOW = BackendConfig("low")


@pytest.mark.parametrize("fmt,depthwise,stride,plane,expect", [
    (WeightFormat(4, 64, False, 1, 9), True, 1, 196, Kernel.CPU_INT4),  # depthwise, stride 1, 14x14
    (WeightFormat(4, 64, False, 1, 9), True, 1, 49, Kernel.DENSE),  # depthwise 7x7 plane
    (WeightFormat(4, 64, False, 1, 9), True, 2, 784, Kernel.DENSE),  # depthwise stride 2
    (WeightFormat(4, 64, False, 1, 9), True, 1, None, Kernel.DENSE),  # plane unknown
    (WeightFormat(4, 64, False, 576, 96), False, 1, 49, Kernel.CPU_INT4),  # 1x1 N=576 K=96 on 7x7
    (WeightFormat(4, 64, False, 576, 144), False, 1, 1, Kernel.DENSE),  # squeeze-excite: one pixel
    (WeightFormat(4, 64, False, 384, 64), False, 1, 196, Kernel.DENSE),  # K=64
])
def test_select_conv_by_stride_and_plane(fmt, depthwise, stride, plane, expect):
    """The native kernels where they measured faster than torch's: depthwise at stride 1 on planes of 14x14 and up,
    the GEMM one at N, K >= 96 on planes of 7x7 and up."""
    d = select_conv(Decision(Kernel.CPU_INT8_DYNAMIC), "cpu", fmt, 96 if depthwise else 1, depthwise, None, LOW,
                    stride, plane)
    assert d.kernel is expect and (d.fallback_reason is not None) == (expect is Kernel.DENSE)


@pytest.mark.parametrize("bits,n,k,plane,expect", [
    (8, 256, 2304, 196, Kernel.CPU_INT4), (8, 256, 2304, 49, Kernel.CPU_INT4),  # 8-bit, >= 150k weights: 1.0-1.65x
    (8, 256, 2304, 784, Kernel.DENSE), (8, 96, 576, 49, Kernel.DENSE),  # 28x28: 0.9x; 55k weights: 0.92-1.04x
    (4, 256, 2304, 784, Kernel.CPU_INT4), (4, 256, 2304, 3136, Kernel.CPU_INT4),  # 4-bit K >= 576: 1.13-1.96x
    (4, 256, 2304, None, Kernel.DENSE),  # plane unknown
    (4, 576, 96, 196, Kernel.DENSE), (4, 576, 96, 49, Kernel.CPU_INT4),  # small K: 14x14 0.89x, 7x7 1.12x
])
def test_select_conv_avx2_rule(bits, n, k, plane, expect):
    """Without VNNI (the avx2 kernels) the GEMM conv where it measured faster (`dispatch.avx2_conv_max_plane`); the
    avx512vnni rule keeps it for every one of these."""
    fmt = WeightFormat(bits, 64, False, n, k)
    args = (Decision(Kernel.CPU_INT8_DYNAMIC), "cpu", fmt, 1, False, None, LOW, 1, plane)
    d = select_conv(*args, variant="avx2")
    assert d.kernel is expect and (d.fallback_reason is not None) == (expect is Kernel.DENSE)
    if plane is not None:
        assert select_conv(*args, variant="avx512vnni").kernel is Kernel.CPU_INT4


@pytest.mark.parametrize("bits,n,k,avx512,avx2", [
    (8, 64, 576, Kernel.CPU_INT4, Kernel.DENSE),  # resnet18's layer1: 1.05-1.13x with VNNI, 0.72-0.78x without
    (4, 64, 576, Kernel.CPU_INT4, Kernel.CPU_INT4),  # 4-bit without VNNI: the pixel-tile path, 1.26-1.41x
    (8, 64, 192, Kernel.DENSE, Kernel.DENSE), (4, 64, 147, Kernel.DENSE, Kernel.DENSE),  # 0.73-0.86x; the stem 0.6-0.7x
])
def test_select_conv_64_channels_by_k(bits, n, k, avx512, avx2):
    """N = 64 output channels run the GEMM conv from K = 384 with VNNI, and without it for 4-bit weights."""
    fmt = WeightFormat(bits, -1, False, n, k)
    args = (Decision(Kernel.CPU_INT8_DYNAMIC), "cpu", fmt, 1, False, None, LOW, 1, 3136)
    assert select_conv(*args, variant="avx512vnni").kernel is avx512
    assert select_conv(*args, variant="avx2").kernel is avx2


@pytest.mark.parametrize("bits,taps,stride,plane,avx512,avx2", [
    (4, 49, 2, 12544, Kernel.CPU_INT4, Kernel.CPU_INT4),  # resnet18's stem on the pixel tile: 1.28-1.42x
    (8, 49, 2, 12544, Kernel.CPU_INT4, Kernel.DENSE),  # 8-bit without VNNI: no tile
    (4, 49, 2, 784, Kernel.DENSE, Kernel.DENSE), (4, 49, 4, 12544, Kernel.DENSE, Kernel.DENSE),  # small plane; stride
    (4, 1, 1, 12544, Kernel.DENSE, Kernel.DENSE),  # a 1x1 (no tile: the pointwise gather)
])
def test_select_conv_pixel_tile(bits, taps, stride, plane, avx512, avx2):
    """A dense kxk conv with N = 64, K = 147 runs native on big planes (the pixel tile), below the N / K rule."""
    args = (Decision(Kernel.CPU_INT8_DYNAMIC), "cpu", WeightFormat(bits, 64, False, 64, 147), 1, False, None, LOW,
            stride, plane)
    assert select_conv(*args, variant="avx512vnni", taps=taps).kernel is avx512
    assert select_conv(*args, variant="avx2", taps=taps).kernel is avx2


@pytest.mark.parametrize("variant,bits,note,note64", [
    ("avx512vnni", 8, "", ""), ("avx512vnni", 4, "", ""),
    ("avx2", 8, " [memory Low on CPU (avx2 kernels): float copy over 14x14 outputs]", None),
    ("avx2", 4, "", ""),
    ("avx2", 16, "", None),  # float16 storage: no packed conv to copy from
])
def test_summary_marks_the_avx2_float_copies(variant, bits, note, note64):
    from lowbit.nn.conv import float_copy_note
    from lowbit.nn.weight_cache import override_capabilities
    from lowbit.runtime import Capabilities

    override_capabilities(Capabilities(cpu_int4=True, native_variant=variant))
    try:
        assert float_copy_note(nn.Conv2d(256, 256, 3, padding=1), bits) == note
        assert float_copy_note(nn.Conv2d(64, 64, 3), bits) == (
            " [memory Low on CPU: float copy, N=64, K=576]" if note64 is None else note64)
        assert float_copy_note(nn.Conv2d(64, 96, 3), 8) == (  # 55k weights: no plane
            " [memory Low on CPU (avx2 kernels): float copy, 8-bit]" if variant == "avx2" else "")
        assert float_copy_note(nn.Conv2d(32, 96, 3), 4) == (  # 4-bit, K = 288: 7x7 outputs, the tile from 2048
            " [memory Low on CPU (avx2 kernels): float copy over 7x7 outputs up to 2047 pixels]" if variant == "avx2"
            else "")
        assert float_copy_note(nn.Conv2d(64, 64, 1), bits) == " [memory Low on CPU: float copy, N=64, K=64]"
        tiled = bits in (4, 8) and (variant != "avx2" or bits == 4)  # the stem: native from 2048 output pixels
        assert float_copy_note(nn.Conv2d(3, 64, 7, 2), bits) == (
            f" [memory Low on CPU: float copy, N=64, K=147{' under 2048 output pixels' if tiled else ''}]")
    finally:
        override_capabilities(None)


def test_memory_low_depthwise_runs_the_direct_kernel_on_big_planes(rng):
    """A stride-1 depthwise layer on a 16x16 plane runs lb_dwconv at memory Low (no float copy), fp32-exact."""
    conv, layer, qw = _layer(8, 8, 3, 8, rng)
    x = torch.randn(1, 8, 16, 16, generator=rng)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("error")
        y = layer(x)
    ref = F.conv2d(x.double(), qw.dequantize(torch.float64), conv.bias.double(), padding=1, groups=8)
    assert sqnr(ref, y.double()) >= DW_SQNR


@pytest.mark.parametrize("fmt,groups,depthwise,refusal,device,expect", [
    (FMT, 1, False, None, "cpu", Kernel.CPU_INT4),  # big dense conv: the native kernel wins
    (WeightFormat(4, 64, False, 64, 192), 1, False, None, "cpu", Kernel.DENSE),  # N=64 K=192: float copy is faster
    (WeightFormat(4, 64, False, 16, 27), 1, False, None, "cpu", Kernel.DENSE),  # stem, K=27
    (WeightFormat(4, 64, False, 1, 9), 96, True, None, "cpu", Kernel.DENSE),  # depthwise, plane unknown: the float copy
    (FMT, 1, False, "no native", "cpu", Kernel.CPU_INT8_DYNAMIC),  # groups 1 without native: im2col + linear
    (WeightFormat(4, 64, False, 96, 16), 1, False, "block 64", "cpu", Kernel.DENSE),  # refused and a losing shape
    (FMT, 4, False, "no native", "cpu", Kernel.DENSE),  # grouped without native: never a per-group loop
    (FMT, 4, False, "not on the CPU", "cuda", Kernel.DENSE),
])
def test_select_conv(fmt, groups, depthwise, refusal, device, expect):
    d = select_conv(Decision(Kernel.CPU_INT8_DYNAMIC), device, fmt, groups, depthwise, refusal, LOW)
    assert d.kernel is expect
    assert (d.fallback_reason is not None) == (expect is Kernel.DENSE)
    assert select_conv(Decision(Kernel.DENSE), device, fmt, groups, depthwise, refusal, LOW).kernel is Kernel.DENSE


def _layer(cin, cout, k, groups, rng, block=64):
    conv = nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups)
    qw = quantize_weight(conv.weight.detach(), QuantConfig(bits=4, block_size=block))
    return conv, QuantConv2d.from_float(conv, qw, LOW), qw


def test_memory_low_runs_native_or_one_float_copy(rng, monkeypatch):
    """A big conv runs the native kernel (no float copy); a depthwise one a float copy, with one warning for all."""
    big, qbig, qw = _layer(64, 128, 3, 1, rng)
    x = torch.randn(1, 64, 9, 9, generator=rng)
    reset_fallback_warnings()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            y = qbig(x)
    ref = F.conv2d(x.double(), qw.dequantize(torch.float64), big.bias.double(), padding=1)
    assert sqnr(ref, y.double()) >= GEMM_SQNR
    dws = [_layer(32, 32, 3, 32, rng)[1] for _ in range(3)]
    with pytest.warns(RuntimeWarning, match="depthwise") as record, torch.no_grad():
        for dw in dws:
            dw(torch.randn(1, 32, 8, 8, generator=rng))
    assert len([r for r in record if "depthwise" in str(r.message)]) == 1


def test_depthwise_propagates_non_finite_as_float_conv(rng):
    """The depthwise kernel computes in fp32 from x as is: NaN / inf reach exactly the outputs F.conv2d's do."""
    qw = quantize_weight(torch.randn(4, 1, 3, 3, generator=rng), QuantConfig(bits=4, block_size=32))
    w = cpu_conv.prepare_conv(qw, 4)
    x = torch.randn(1, 4, 9, 9, generator=rng)
    x[0, 1, 4, 4], x[0, 3, 0, 8] = float("nan"), float("inf")
    y = cpu_conv.conv2d_native(x, w, None, (1, 1), (1, 1), (1, 1), 4)
    ref = F.conv2d(x.double(), qw.dequantize(torch.float64), None, 1, 1, 1, 4)
    assert torch.equal(y.isfinite(), ref.isfinite())
    assert sqnr(ref[ref.isfinite()], y[y.isfinite()].double()) >= DW_SQNR


def test_non_finite_input_gives_nan_where_it_reaches(rng):
    """Int8 activations cannot carry NaN / inf: the outputs whose receptive field holds one come out NaN, the others
    match the finite computation."""
    qw = quantize_weight(torch.randn(8, 4, 3, 3, generator=rng), QuantConfig(bits=4, block_size=32))
    w = cpu_conv.prepare_conv(qw, 1)
    x = torch.randn(1, 4, 9, 9, generator=rng)
    x[0, 2, 0, 0] = float("inf")
    y = cpu_conv.conv2d_native(x, w, None, (1, 1), (1, 1), (1, 1), 1)
    ref = F.conv2d(x.double(), qw.dequantize(torch.float64), None, 1, 1)
    assert torch.equal(y.isnan(), ~ref.isfinite())
    assert sqnr(ref[ref.isfinite()], y[y.isfinite()].double()) >= GEMM_SQNR


def test_summary_names_the_float_copies():
    from lowbit.nn import quantize

    model = quantize(nn.Sequential(nn.Conv2d(64, 256, 3), nn.Conv2d(256, 48, 3), nn.Conv2d(64, 128, 5, groups=64)))
    notes = {r.name: r.config for r in model.lowbit_summary.swapped}
    assert notes["0"] == "int4 b64 asym rtn"  # N=256, K=576: the native kernel is faster
    assert notes["1"].endswith("[memory Low on CPU: float copy, N=48, K=2304]")
    assert notes["2"].endswith("[memory Low on CPU: float copy, depthwise under 14x14 outputs]")


@pytest.mark.parametrize("relu,out", [(False, 24), (True, 24), (False, 48), (True, 48)])
def test_static_depthwise_runs_the_direct_kernel(rng, relu, out, monkeypatch):
    """Static INT8 depthwise conv through a direct kernel (no im2col) matches its integer math in float64: one output
    per channel the channels-last kernel (cpu_static_nhwc), a channel multiplier lb_dwconv on NCHW."""
    from lowbit.kernels import cpu_static_nhwc
    from lowbit.static import StaticConfig, quantize_static

    conv = nn.Conv2d(24, out, 3, stride=2, padding=1, groups=24).eval()
    layers = [conv, nn.ReLU()] if relu else [conv]
    x = torch.randn(2, 24, 57, 56, generator=rng)  # 29x28 outputs: int8 on NCHW too (smaller planes: a float copy)
    model = quantize_static(nn.Sequential(*layers).eval(), [x], StaticConfig(), progress=False)
    layer = model[0]
    calls = []
    mod, name = (cpu_static_nhwc, "conv_dw_nhwc") if out == 24 else (cpu_conv, "conv2d_depthwise")
    real = getattr(mod, name)
    monkeypatch.setattr(mod, name, lambda *a, **k: calls.append(1) or real(*a, **k))
    with torch.no_grad():
        y = model(x)
    assert calls, "the static depthwise conv did not run the direct kernel"
    w = layer.prepared()
    # the codes as the layer rounds them: torch.div in float32 (float64 division rounds an exact float32 tie apart)
    xi = torch.div(x, layer.input_scale).round().clamp(-layer.input_clamp, layer.input_clamp).double()
    wq = w.wt.t().double().reshape(out, 1, 3, 3)
    ref = F.conv2d(xi, wq, None, 2, 1, 1, 24) * (w.scale.double() * layer.input_scale).reshape(1, -1, 1, 1)
    ref = ref + conv.bias.double().reshape(1, -1, 1, 1)
    ref = ref.relu() if relu else ref
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5)
    x[1, 3, 2, 2] = float("nan")
    with torch.no_grad():
        y = model(x)
    assert y[1].isnan().all() and y[0].isfinite().all()


@pytest.mark.parametrize("precision", ["high", "normal", "low"])
def test_conv_at_memory_low_follows_the_precision_table(precision):
    """High: fp32 activations, the packed weight exact against dequantize + conv2d (a grouped conv takes the float
    copy, with the warning); Normal: int8 per 32 channels; Low: per row (or block). Checked against float64."""
    import lowbit
    from lowbit.nn import quantized_weights

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.Conv2d(128, 128, 3, padding=1, groups=2))
    x = torch.randn(1, 64, 12, 12)
    q = lowbit.quantize(model.eval(), lowbit.QuantConfig(bits=4, block_size=64),
                        backend=lowbit.BackendConfig(memory="low", precision=precision), progress=False)
    w = {n: qw.dequantize(torch.float64) for n, qw in quantized_weights(q).items()}
    ref = F.conv2d(x.double(), w["0.weight"], q[0].bias.double(), padding=1).relu()
    ref = F.conv2d(ref, w["2.weight"], q[2].bias.double(), padding=1, groups=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = q(x).double()
    err = float((y - ref).norm() / ref.norm())
    assert err < {"high": 1e-5, "normal": 7e-3, "low": 1.2e-2}[precision], err  # measured 3e-7, 5.3e-3, 8.4e-3
    if precision == "high":
        assert any("grouped convs" in str(c.message) for c in caught)
