"""8-bit codes pre-tiled for the tiled kernel (`cpu_native.pack_q8t`, `gemm_q8t`) on every ISA variant: the layout
round-trips bit-exactly, the GEMM is within the int8 activation bound of the float64 product at every M and
bit-identical to `gemm_q8` where that takes the tiled kernel (M >= 4); builds without a tiled kernel say so."""

import pytest
import torch

from lowbit.kernels import cpu_native
from lowbit.kernels.cpu_native.build import VARIANTS, build_native, runnable_variants
from lowbit.kernels.reference import linear_reference
from lowbit.quant import QuantConfig, quantize_weight


def _bound(x: torch.Tensor, w: torch.Tensor, group: int) -> torch.Tensor:
    """0.5 * sum_k |W[n, k]| * d[block(k)]: the most int8 activation rounding (d = absmax / 127 per group) moves y."""
    k = x.shape[1]
    nb = -(-k // group)
    xp = torch.nn.functional.pad(x.double().abs(), (0, nb * group - k)).view(x.shape[0], nb, group)
    return 0.5 * ((xp.amax(-1) / 127).repeat_interleave(group, 1)[:, :k] @ w.double().abs().T)


@pytest.fixture(scope="module", params=runnable_variants())
def variant(request):
    return build_native(flag_sets=VARIANTS[request.param])


@pytest.mark.parametrize("rows", [16, 32])
def test_pack_q8t_layout_and_round_trip(rows, rng):
    codes = torch.randint(0, 256, (37, 130), dtype=torch.uint8, generator=rng)
    packed = cpu_native.pack_q8(codes)
    tiled = cpu_native.pack_q8t(packed, rows)
    g = 4 if rows == 32 else 2
    assert tiled.shape == (-(-37 // rows), 192 // g, rows, g)
    assert int(tiled[1, 5, 3, 1]) == int(codes[rows + 3, 5 * g + 1])  # out[t, c, i, j] = q[t * rows + i, c * g + j]
    assert not bool(tiled[-1, :, 37 - rows * (tiled.shape[0] - 1):].any())  # rows past N: zero
    assert torch.equal(cpu_native.unpack_q8t(tiled, 37), packed)
    s = torch.randn(37, 3, generator=rng)
    st = cpu_native.tile_scales(s, rows)
    assert st.shape == (tiled.shape[0], 3, rows) and float(st[1, 2, 4]) == float(s[rows + 4, 2])
    with pytest.raises(ValueError, match="rows 16 or 32"):
        cpu_native.pack_q8t(packed, 8)


# (block, K, N): blocks of 32, 128 (K cut short), per channel with padding, N not a multiple of the tile
CASES = [(32, 192, 40), (128, 520, 33), (-1, 130, 17), (-1, 1024, 64)]


def test_gemm_q8t_within_bound_and_equal_to_the_tiled_row_major_kernel(variant, rng):
    rows = cpu_native.q8t_rows(variant)
    if not rows:
        assert variant.variant not in ("avx512vnni", "avx2")
        with pytest.raises(RuntimeError, match="no native tiled kernel"):
            cpu_native.gemm_q8t(torch.zeros(1, 64), torch.zeros(1, 16, 16, 4, dtype=torch.uint8),
                                torch.zeros(1, 1, 16), torch.zeros(1, 1, 16), 16, 64, 64, library=variant)
        return
    for block, k, n in CASES:
        w = torch.randn(n, k, generator=rng)
        bias = torch.randn(n, generator=rng)
        qw = quantize_weight(w, QuantConfig(bits=8, block_size=block))
        cw = qw.compute_layout()
        wd = cw.dequantize(torch.float64)
        packed = cpu_native.pack_q8(qw.unpack())
        scale, sz = qw.scale.float(), qw.scale.float() * qw.zero_or_implicit().float()
        group_k = packed.shape[1] if block == -1 else block
        tiled = cpu_native.pack_q8t(packed, rows)
        st, szt = cpu_native.tile_scales(scale, rows), cpu_native.tile_scales(sz, rows)
        for m in (1, 2, 3, 4, 9):
            x = torch.randn(m, k, generator=rng) * 3
            ref = linear_reference(x.double(), cw, bias.double(), torch.float64)
            for act in ("int8/32", "int8/block", "int8/row"):
                case = (variant.variant, block, k, n, m, act)
                y = cpu_native.gemm_q8t(x, tiled, st, szt, n, k, group_k, bias, library=variant, activations=act)
                group = {"int8/32": 32, "int8/row": k}.get(act, k if block == -1 else block)
                assert bool(((y.double() - ref).abs() <= _bound(x, wd, group) + 1e-4 * (1 + ref.abs())).all()), case
                if m >= 4:
                    y8 = cpu_native.gemm_q8(x, packed, scale, sz, k, group_k, bias, library=variant, activations=act)
                    assert torch.equal(y, y8), case
