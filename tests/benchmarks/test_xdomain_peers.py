"""The cross-domain bench's peer wiring: rows that say why a peer is missing or failed, and the two HQQ peers'
dequantized weights against each other (both are HQQ: same algorithm, two packages)."""

import importlib.util

import pytest
import torch

from benchmarks.xdomain import Setup
from benchmarks.xdomain_peers import PeerUnavailable, hqq_package, peer_row, torchao_hqq


def _setup(model=None) -> Setup:
    return Setup(model, {"readme": ["a"]}, {}, {"own": ["a"]})


def test_missing_and_failing_peers_give_rows_that_say_why():
    def missing(setup, bits, sentences):
        raise PeerUnavailable("somepeer is not installed")

    def broken(setup, bits, sentences):
        raise RuntimeError("bad shape")

    setup = _setup()
    skipped = peer_row("peer x", missing, False, 4, "none", setup, 8).values
    failed = peer_row("peer y", broken, False, 4, "none", setup, 8).values
    assert skipped["note"] == "skipped: somepeer is not installed" and skipped["worst"] == ""
    assert failed["note"] == "failed: RuntimeError: bad shape" and failed["readme normal min"] == ""


@pytest.mark.skipif(not (importlib.util.find_spec("hqq") and importlib.util.find_spec("torchao")),
                    reason="needs the peers extra (hqq, torchao)")
@pytest.mark.parametrize("bits", [3, 4])
def test_hqq_and_torchao_hqq_dequantize_to_the_same_weights(bits, rng):
    w = torch.randn(64, 256, generator=rng) * torch.logspace(-1, 0, 256)  # unevenly scaled input channels
    model = torch.nn.Sequential(torch.nn.Linear(256, 64))
    with torch.no_grad():
        model[0].weight.copy_(w)
    a = hqq_package(_setup(model), bits, None)[0].weight.detach()
    b = torchao_hqq(_setup(model), bits, None)[0].weight.detach()
    assert torch.equal(model[0].weight, w)  # the peers work on copies
    sqnr = [20 * torch.log10(w.norm() / (w - q).norm()).item() for q in (a, b)]
    for q in (a, b):
        assert max(torch.unique(g).numel() for g in q.reshape(-1, 64)) <= 2 ** bits
    # a real quantization of w (measured 14.19 / 14.20 dB at 3 bits, 20.72 / 20.72 at 4), the same for both
    assert min(sqnr) > (13.5 if bits == 3 else 20.0) and abs(sqnr[0] - sqnr[1]) < 0.1
    # at 4 bits the two packages agree to fp16 rounding; at 3 only torchao leaves the zero unrounded (2% of codes)
    differ = ((a - b).abs() > 1e-2 * w.abs().max()).float().mean()
    assert differ == 0 if bits == 4 else differ < 0.05
