"""Static int8 math (lowbit.quant.observers, static_int8, static_config) against independent references."""

import math

import numpy as np
import pytest
import torch

from lowbit.kernels.cpu_static_int8 import linear_static_int8, prepare_static_int8
from lowbit.quant import observers
from lowbit.quant.static_config import ActivationMethod, StaticConfig, WeightMethod
from lowbit.quant.static_int8 import int8_codes, int8_weight, quantize_symmetric, weight_scales


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


def _kl_brute(hist, levels):
    """MXNet's _get_optimal_threshold loop, written plainly in float64 Python."""
    hist = [float(v) for v in hist]
    best, best_i = math.inf, None
    for i in range(levels, len(hist) + 1):
        sliced = hist[:i]
        p = list(sliced)
        p[-1] += sum(hist[i:])
        merged = i // levels
        qb = [sum(sliced[j * merged:(j + 1) * merged]) for j in range(levels)]
        qb[-1] += sum(sliced[levels * merged:])
        q = [0.0] * i
        for j in range(levels):
            lo, hi = j * merged, (i if j == levels - 1 else (j + 1) * merged)
            norm = sum(1 for v in p[lo:hi] if v != 0)
            for t in range(lo, hi):
                q[t] = qb[j] / norm if norm and p[t] != 0 else 0.0

        def smooth(d, eps=1e-4):
            nz = sum(1 for v in d if v == 0)
            nn_ = len(d) - nz
            return [v + eps if v == 0 else v - eps * nz / nn_ for v in d]
        ps, qs = smooth(p), smooth(q)
        sp, sq = sum(ps), sum(qs)
        kl = sum((a / sp) * math.log((a / sp) / (b / sq)) for a, b in zip(ps, qs, strict=True))
        if kl < best:
            best, best_i = kl, i
    return best_i


@pytest.mark.parametrize("dist", ["normal", "laplace", "relu"])
def test_kl_threshold_matches_bruteforce(gen, dist):
    x = torch.randn(5000, generator=gen, dtype=torch.float64)
    if dist == "laplace":
        x = torch.sign(x) * torch.empty_like(x).exponential_(generator=gen)
    elif dist == "relu":
        x = x.clamp(min=0)
    bins, levels = 256, 128
    hist = observers.abs_histogram(x, bins, float(x.abs().max()))
    width = float(x.abs().max()) / bins
    i = _kl_brute(hist.tolist(), levels)
    assert observers.kl_threshold(hist, width, levels) == pytest.approx(i * width, rel=1e-12)


def test_kl_threshold_clips_gaussian_tails(gen):
    x = torch.randn(200000, generator=gen)
    m = float(x.abs().max())
    t = observers.kl_threshold(observers.abs_histogram(x, 2048, m), m / 2048)
    assert 2.0 < t < m  # clips the sparse tail, keeps the bulk


@pytest.mark.parametrize("p", [50.0, 99.0, 99.99])
def test_percentile_matches_numpy(gen, p):
    x = torch.randn(50000, generator=gen)
    m = float(x.abs().max())
    got = observers.percentile_threshold(observers.abs_histogram(x, 2048, m), m / 2048, p)
    assert abs(got - np.percentile(x.abs().numpy(), p)) <= m / 2048


def test_mse_threshold_near_bruteforce_optimum(gen):
    x = torch.randn(4000, generator=gen, dtype=torch.float64) ** 3
    m, bins, clamp = float(x.abs().max()), 512, 127
    got = observers.mse_threshold(observers.abs_histogram(x, bins, m), m / bins, clamp)

    def mse(t):
        s = t / clamp
        return float(((torch.clamp(torch.round(x / s), -clamp, clamp) * s - x) ** 2).mean())
    best = min(mse(t) for t in np.linspace(m / 64, m, 200))
    assert mse(got) <= best * 1.1
    assert mse(got) < mse(m)  # better than min-max on a heavy-tailed input


def test_ema_and_scale():
    assert observers.ema(None, 3.0, 0.9) == 3.0
    assert observers.ema(2.0, 4.0, 0.75) == pytest.approx(2.5)
    assert observers.scale_from_threshold(2.54, 127) == pytest.approx(0.02)
    assert observers.scale_from_threshold(0.0) > 0
    with pytest.raises(ValueError, match="not finite"):
        observers.scale_from_threshold(float("nan"))


def test_histogram_ignores_zeros_and_rejects_bad_counts():
    h = observers.abs_histogram(torch.tensor([0.0, 0.0, 1.0, -2.0]), 4, 2.0)
    assert h.tolist() == [0.0, 0.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="non-negative"):
        observers.kl_threshold(torch.tensor([1.0, -1.0] * 100), 0.1)


@pytest.mark.parametrize("per_channel", [True, False])
def test_weight_scales_max_abs_and_admm(gen, per_channel):
    w = torch.randn(16, 3, 3, 3, generator=gen) ** 3
    s = weight_scales(w, 127, per_channel, "max_abs")
    rows = w.reshape(16, -1)
    ref = rows.abs().amax(1) / 127 if per_channel else rows.abs().max().expand(16) / 127
    torch.testing.assert_close(s, ref, rtol=1e-6, atol=0)
    sa = weight_scales(w, 127, per_channel, "admm", iters=20)

    def err(scale):
        qw = int8_weight(w, scale)
        return ((qw.dequantize() - w) ** 2).reshape(16, -1).sum(1)
    if per_channel:  # each row's own least-squares refinement never loses to max_abs
        assert bool((err(sa) <= err(s) * (1 + 1e-6)).all())
    assert float(err(sa).sum()) < float(err(s).sum())  # ADMM actually improves heavy-tailed weights
    with pytest.raises(ValueError, match="NaN"):
        weight_scales(torch.full((2, 2), float("nan")))


def test_int8_weight_roundtrip(gen):
    w = torch.randn(8, 20, generator=gen)
    s = weight_scales(w, 100)
    qw = int8_weight(w, s, 100)
    q = quantize_symmetric(w, s[:, None], 100)
    assert torch.equal(int8_codes(qw), q)
    assert int(q.abs().max()) == 100
    torch.testing.assert_close(qw.dequantize(), q.float() * s[:, None], rtol=0, atol=0)


@pytest.mark.parametrize("impl", ["int_mm", "emulated"])
@pytest.mark.parametrize("m,k,n", [(1, 33, 7), (17, 300, 40), (64, 1024, 96)])
def test_linear_static_int8_exact_integers(gen, impl, m, k, n):
    w = torch.randn(n, k, generator=gen)
    s = weight_scales(w)
    pw = prepare_static_int8(int8_codes(int8_weight(w, s)), s)
    x = torch.randn(m, k, generator=gen) * 2
    a, bias = 0.03, torch.randn(n, generator=gen)
    xq = torch.clamp(torch.round(x.double() / a), -127, 127)
    ref = (xq @ int8_codes(int8_weight(w, s)).double().t()) * (a * s.double()) + bias.double()
    y = linear_static_int8(x, pw, a, 127, bias, impl)
    torch.testing.assert_close(y.double(), ref, rtol=1e-6, atol=1e-5)
    x[0, 3] = float("nan")
    y = linear_static_int8(x, pw, a, 127, bias, impl)
    assert bool(torch.isnan(y[0]).all()) and bool(torch.isfinite(y[1:]).all())
    with pytest.raises(ValueError, match="shape"):
        linear_static_int8(torch.randn(2, k + 1), pw, a)


def test_static_config_roundtrip_and_errors():
    cfg = StaticConfig(activation_method="percentile", weight_method="ADMM", samples=8, skip=["fc*"], debug=True)
    assert cfg.activation_method is ActivationMethod.PERCENTILE and cfg.weight_method is WeightMethod.ADMM
    assert StaticConfig.from_json(cfg.to_json()) == cfg
    mnn, image = StaticConfig.from_mnn({"feature_quantize_method": "KL", "weight_quantize_method": "MAX_ABS",
                                        "used_sample_num": 4, "feature_clamp_value": 127, "skip_quant_op_names": [],
                                        "format": "RGB", "mean": [0, 0, 0]})
    assert mnn.samples == 4 and image == {"format": "RGB", "mean": [0, 0, 0]}
    with pytest.raises(ValueError, match="unknown quantization config field 'bogus'"):
        StaticConfig.from_mnn({"bogus": 1})
    with pytest.raises(ValueError, match="unknown StaticConfig field"):
        StaticConfig.from_dict({"bogus": 1})
    for bad, match in (({"activation_method": "foo"}, "activation_method"), ({"activation_clamp": 200}, "1..127"),
                       ({"samples": 0}, "samples"), ({"percentile": 0}, "percentile"),
                       ({"smooth_alpha": 2.0}, "smooth_alpha"), ({"skip": "fc"}, "skip")):
        with pytest.raises(ValueError, match=match):
            StaticConfig(**bad)
