"""The native decode-step kernels (lowbit_cpu_decode.h via lowbit.kernels.cpu_decode) against float64 references,
on every ISA variant this CPU runs (AVX-512 VNNI, AVX2, portable C)."""

import pytest
import torch
import torch.nn.functional as F

from lowbit.kernels import cpu_decode
from lowbit.kernels.cpu_native.build import VARIANTS, build_native, runnable_variants

_TOL = dict(atol=2e-6, rtol=2e-6)  # fp32 sums in another order and a polynomial exp: ~1e-7 relative


@pytest.fixture(scope="module", params=runnable_variants())
def lib(request):
    return build_native(flag_sets=VARIANTS[request.param]).lib


def _close(got: torch.Tensor, want: torch.Tensor, scale: float = 1.0):
    torch.testing.assert_close(got.double(), want, atol=_TOL["atol"] * scale, rtol=_TOL["rtol"])


def _rms(x, w, eps):
    x = x.double()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w.double()


@pytest.mark.parametrize("n", [2048, 100, 7])
def test_rms_norm_and_residual(lib, n):
    g = torch.Generator().manual_seed(n)
    x, y = (torch.randn(2, n, generator=g) for _ in range(2))
    w = torch.randn(n, generator=g)
    _close(cpu_decode.rms_norm(lib, x, w, 1e-6), _rms(x, w, 1e-6), 4)
    acc = y.clone()
    out = cpu_decode.add_rms_norm_(lib, acc, x, w, 1e-5)
    _close(acc, x.double() + y.double())
    _close(out, _rms(x.double() + y.double(), w, 1e-5), 4)


@pytest.mark.parametrize("d", [64, 128, 80])
def test_rope_matches_rotate_half(lib, d):
    g = torch.Generator().manual_seed(d)
    x = torch.randn(1, 1, 6 * d, generator=g)
    angle = torch.rand(d // 2, generator=g, dtype=torch.float64) * 6
    cos, sin = (torch.cat([f(angle), f(angle)]).float().view(1, 1, d) for f in (torch.cos, torch.sin))
    v = x.double().view(6, d)
    want = v * cos.double().view(d) + torch.cat([-v[:, d // 2:], v[:, :d // 2]], -1) * sin.double().view(d)
    got = x.clone()
    cpu_decode.rope_(lib, got, cos, sin, 5, d)  # the first 5 heads only
    _close(got.view(6, d)[:5], want[:5], 4)
    assert torch.equal(got.view(6, d)[5], x.view(6, d)[5])


def test_silu_mul_over_the_whole_range(lib):
    g = torch.Generator().manual_seed(0)
    gate = torch.cat([torch.randn(1000, generator=g) * 4, torch.tensor([-120.0, -88.0, -30.0, 0.0, 30.0, 90.0])])
    up = torch.randn(gate.numel(), generator=g)
    got = cpu_decode.silu_mul(lib, torch.cat([gate, up]).view(1, 1, -1))
    want = F.silu(gate.double()) * up.double()
    torch.testing.assert_close(got.view(-1).double(), want, atol=1e-30, rtol=2e-6)


def _attention(q, keys, values, length, scale):
    heads, d = q.numel() // keys.shape[3], keys.shape[3]
    k, v = (t[0, :, :length].double().repeat_interleave(heads // keys.shape[1], 0) for t in (keys, values))
    s = torch.einsum("hd,hld->hl", q.double().view(heads, d), k) * scale
    return torch.einsum("hl,hld->hd", s.softmax(-1), v).reshape(1, 1, heads * d)


@pytest.mark.parametrize("heads,kv,d", [(32, 8, 64), (4, 4, 128), (6, 2, 80), (16, 1, 64), (8, 2, 32)])
@pytest.mark.parametrize("length", [1, 7, 300, 700])
def test_attention_one_query_matches_float64(lib, heads, kv, d, length):
    g = torch.Generator().manual_seed(heads * length + d)
    q = torch.randn(heads * d, generator=g)
    keys, values = (torch.randn(1, kv, length + 5, d, generator=g) for _ in range(2))  # 5 rows past length unread
    got = cpu_decode.attend_one(lib, q, keys, values, length, d ** -0.5, 2)
    _close(got, _attention(q, keys, values, length, d ** -0.5), 2)


def test_attention_reads_a_prefix_view(lib):
    """A cache view buffer[:, :, :L] (heads further apart than L rows) is read as the buffer's first L rows."""
    g = torch.Generator().manual_seed(9)
    buffers = [torch.randn(1, 4, 50, 64, generator=g) for _ in range(2)]
    keys, values = (b[:, :, :20] for b in buffers)
    q = torch.randn(8 * 64, generator=g)
    assert cpu_decode.rows_f32(keys) and not keys.is_contiguous()
    got = cpu_decode.attend_one(lib, q, keys, values, 20, 0.125, 1)
    _close(got, _attention(q, keys.contiguous(), values.contiguous(), 20, 0.125), 2)


def test_all_finite_sees_every_position(lib):
    x = torch.randn(1000)
    assert lib.lb_all_finite(x.data_ptr(), 1000) == 1
    for bad in (float("nan"), float("inf"), float("-inf")):
        for at in (0, 15, 16, 999):
            y = x.clone()
            y[at] = bad
            assert lib.lb_all_finite(y.data_ptr(), 1000) == 0, (bad, at)
    assert lib.lb_all_finite(x.data_ptr(), 0) == 1
