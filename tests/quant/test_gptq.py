"""GPTQ on plain tensors: against a naive OBS-style reference, RTN with the same scales, and its error paths."""

import pytest
import torch

from lowbit.quant import QuantConfig, quantize_weight
from lowbit.quant.gptq import gptq_quantize, inverse_hessian_factor
from lowbit.quant.hessian import InputStats, relative_output_error
from lowbit.quant.rtn import rtn_scale_zero


def _layer(rng, n, k, m=1024):
    """Correlated inputs with uneven channel magnitudes (what makes GPTQ beat rounding) and a weight."""
    mix = torch.randn(k // 4, k, generator=rng)  # activations live near a low-dimensional subspace, as in networks
    x = torch.randn(m, k // 4, generator=rng) @ mix + 0.1 * torch.randn(m, k, generator=rng)
    x = x * torch.exp(torch.randn(k, generator=rng))
    w = torch.randn(n, k, generator=rng) * 0.05
    return w, x


def _brute_error(w, w_hat, x):
    """‖x (W - Ŵ)ᵀ‖ / ‖x Wᵀ‖ from the inputs themselves, float64."""
    x64, w64 = x.double(), w.double()
    return ((x64 @ (w64 - w_hat.double()).T).norm() / (x64 @ w64.T).norm()).item()


def _rtn_same_scales(w, qw):
    """Round-to-nearest of w with qw's own stored scales and zeros (asymmetric)."""
    g, k = qw.group_size, qw.k
    s = qw.scale.double().repeat_interleave(g, 1)[:, :k]
    z = qw.zero.double().repeat_interleave(g, 1)[:, :k]
    q = torch.round(w.double() / s + z).clamp(0, (1 << qw.bits) - 1)
    return (q - z) * s


def _obs_reference(w, h, bits, group, damp):
    """Naive GPTQ: full inverse Hessian, one column at a time, column j removed by Gaussian elimination."""
    w = w.double().clone()
    n, k = w.shape
    h = h.double() + damp * h.diagonal().mean() * torch.eye(k, dtype=torch.float64)
    hinv = torch.linalg.inv(h)
    out = torch.empty_like(w)
    for j in range(k):
        if j % group == 0:
            s, z = rtn_scale_zero(w[:, j:j + group].unsqueeze(1), bits, False, torch.float16)
            s, z = s[:, 0].double(), z[:, 0].double()
        q = (torch.round(w[:, j] / s + z).clamp(0, (1 << bits) - 1) - z) * s
        out[:, j] = q
        w[:, j + 1:] -= ((w[:, j] - q) / hinv[j, j]).unsqueeze(1) * hinv[j, j + 1:].unsqueeze(0)
        hinv = hinv - hinv[:, j:j + 1] @ hinv[j:j + 1, :] / hinv[j, j]
    return out


def test_matches_naive_obs_reference(rng):
    w, x = _layer(rng, 24, 48, m=256)
    h = x.double().T @ x.double()
    cfg = QuantConfig(bits=3, block_size=16, method="gptq", gptq_block=8)
    got = gptq_quantize(w, h, cfg).dequantize(torch.float64)
    ref = _obs_reference(w, h, 3, 16, cfg.gptq_damp)
    # the same values, but for the odd code at a rounding tie (the loop runs in float32, the reference in float64)
    differ = (got - ref).abs() > 1e-5 * w.abs().max()
    assert int(differ.sum()) <= 2, int(differ.sum())
    assert _brute_error(w, got, x) == pytest.approx(_brute_error(w, ref, x), rel=0.02)


@pytest.mark.parametrize("block", [16, 32, 64, -1])
def test_lazy_batch_width_does_not_change_the_result(rng, block):
    w, x = _layer(rng, 16, 80, m=256)
    h = x.double().T @ x.double()
    a = gptq_quantize(w, h, QuantConfig(bits=4, block_size=block, method="gptq", gptq_block=1))
    b = gptq_quantize(w, h, QuantConfig(bits=4, block_size=block, method="gptq", gptq_block=48))
    assert torch.equal(a.unpack(), b.unpack()) and torch.equal(a.scale, b.scale)


def test_identity_hessian_is_round_to_nearest(rng):
    """Uncorrelated, equal inputs: no error feedback, so GPTQ's codes are RTN's exactly."""
    w = torch.randn(32, 96, generator=rng)
    for sym in (False, True):
        qw = gptq_quantize(w, torch.eye(96, dtype=torch.float64) * 3, QuantConfig(bits=4, method="gptq",
                                                                                 symmetric=sym))
        rtn = quantize_weight(w, QuantConfig(bits=4, symmetric=sym))
        assert torch.equal(qw.unpack(), rtn.unpack()) and torch.equal(qw.scale, rtn.scale)


@pytest.mark.parametrize("bits,block,act_order,gain", [(4, 64, False, 0.5), (4, 64, True, 0.5), (3, 32, False, 0.5),
                                                       (4, -1, False, 0.5), (8, -1, True, 0.5)])
def test_output_error_below_rtn_with_same_scales(rng, bits, block, act_order, gain):
    """GPTQ's objective: per layer not worse than rounding with its own scales, and lower on average."""
    ratios = []
    for n, k in [(64, 128), (96, 200), (40, 256)]:
        w, x = _layer(rng, n, k)
        stats = InputStats(k)
        stats.add(x)
        qw = gptq_quantize(w, stats.xtx, QuantConfig(bits=bits, block_size=block, method="gptq",
                                                     gptq_act_order=act_order))
        got, rtn = _brute_error(w, qw.dequantize(), x), _brute_error(w, _rtn_same_scales(w, qw), x)
        assert got == pytest.approx(relative_output_error(w, qw.dequantize(), stats.xtx), rel=1e-4)
        assert got <= rtn
        ratios.append(got / rtn)
    assert sum(ratios) / len(ratios) <= 1 - gain, ratios


def test_hqq_scales_and_symmetric(rng):
    w, x = _layer(rng, 32, 128)
    h = x.double().T @ x.double()
    for cfg in (QuantConfig(bits=4, method="gptq", gptq_scales="hqq"), QuantConfig(bits=4, method="gptq",
                                                                                   symmetric=True)):
        qw = gptq_quantize(w, h, cfg)
        plain = quantize_weight(w, QuantConfig(bits=4, symmetric=cfg.symmetric))
        assert qw.method == "gptq" and qw.symmetric == cfg.symmetric
        assert _brute_error(w, qw.dequantize(), x) < 0.8 * _brute_error(w, plain.dequantize(), x)


def test_grouped_hessians_and_conv_shape(rng):
    """One Hessian per group of rows (grouped conv); the packed weight keeps the conv shape."""
    w = torch.randn(8, 3, 3, 3, generator=rng)
    xs = [torch.randn(200, 27, generator=rng) * (1 + i) for i in range(2)]
    hs = [x.double().T @ x.double() for x in xs]
    qw = gptq_quantize(w, hs, QuantConfig(bits=4, block_size=16, method="gptq"))
    assert qw.shape == (8, 3, 3, 3)
    deq = qw.dequantize().reshape(8, 27)
    for i, h in enumerate(hs):
        alone = gptq_quantize(w[4 * i:4 * i + 4], h, QuantConfig(bits=4, block_size=16, method="gptq"))
        assert torch.equal(deq[4 * i:4 * i + 4], alone.dequantize().reshape(4, 27))


def test_dead_input_channels(rng):
    w, x = _layer(rng, 16, 64)
    x[:, [3, 40]] = 0
    h = x.double().T @ x.double()
    qw = gptq_quantize(w, h, QuantConfig(bits=4, block_size=32, method="gptq"))
    deq = qw.dequantize()
    assert torch.isfinite(deq).all()
    assert _brute_error(w, deq, x) < _brute_error(w, quantize_weight(w, QuantConfig(bits=4, block_size=32))
                                                  .dequantize(), x)


def test_not_positive_definite_raises_damping_with_a_warning():
    h = torch.eye(16, dtype=torch.float64)
    h[15, 15] = -0.5
    with pytest.warns(UserWarning, match="raised the damping to 1"):
        upper, damp = inverse_hessian_factor(h, 0.01, "fc")
    assert damp == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not positive definite"):
        inverse_hessian_factor(-torch.eye(4, dtype=torch.float64), 0.01, "fc")


def test_errors(rng):
    w = torch.randn(8, 32, generator=rng)
    with pytest.raises(ValueError, match="Hessian shape"):
        gptq_quantize(w, torch.eye(16), QuantConfig(bits=4, block_size=16, method="gptq"))
    with pytest.raises(ValueError, match="equal groups"):
        gptq_quantize(w, [torch.eye(32)] * 3, QuantConfig(bits=4, block_size=16, method="gptq"))
    with pytest.raises(ValueError, match="calibration"):
        quantize_weight(w, QuantConfig(bits=4, block_size=16, method="gptq"))
    with pytest.raises(ValueError, match="gptq_damp"):
        QuantConfig(method="gptq", gptq_damp=0)
    with pytest.raises(ValueError, match="gptq_scales"):
        QuantConfig(method="gptq", gptq_scales="minmax")


@pytest.mark.parametrize("panel", [7, 16, 64])
def test_inverse_factor_by_panels_is_the_inverse_cholesky_factor(rng, panel, monkeypatch):
    """UᵀU = (H + λI)⁻¹ with U upper, whatever the panel width (one panel, several, a ragged last one), checked
    against float64 torch.linalg.inv; the caller's H is left as it was."""
    import lowbit.quant.cholesky as cholesky

    monkeypatch.setattr(cholesky, "PANEL", panel)
    x = torch.randn(300, 50, generator=rng, dtype=torch.float64)
    h = (x.T @ x).float()
    before = h.clone()
    upper, damp = inverse_hessian_factor(h, 0.01, "fc", torch.float64)
    reg = h.double() + damp * h.double().diagonal().mean() * torch.eye(50, dtype=torch.float64)
    assert torch.equal(upper, upper.triu()) and torch.equal(h, before)
    torch.testing.assert_close(upper.T @ upper, torch.linalg.inv(reg), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("act_order", [False, True])
def test_rows_fitted_in_chunks_match_one_pass_and_leave_the_weight(rng, act_order, monkeypatch):
    """GPTQ's rows are independent given H: fitting them 7 at a time (lm_head's bound on the float copy) gives the
    same codes, scales and zeros as one pass, and the caller's float32 weight is not touched."""
    import lowbit.quant.gptq as gptq

    w, x = _layer(rng, 30, 64, m=256)
    h = x.T @ x
    cfg = QuantConfig(bits=4, block_size=16, method="gptq", gptq_act_order=act_order)
    before = w.clone()
    whole = gptq.gptq_rows(w, h, cfg)
    monkeypatch.setattr(gptq, "_ROW_CHUNK", 7)
    chunked = gptq.gptq_rows(w, h, cfg)
    assert torch.equal(w, before)
    for a, b in zip(whole, chunked, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
