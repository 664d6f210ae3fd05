"""A conv layer's bound call (lowbit.nn.conv_bound.BoundConv): Conv1d and Conv2d, memory Normal and Low, the same
output as the usual path bit for bit and as the float conv with the dequantized weight, and every change it checks
sends the call down the usual path (which binds again)."""

import copy
import warnings

import pytest
import torch
from torch import nn

from lowbit.nn import QuantConv1d, QuantConv2d
from lowbit.nn.conv_bound import BoundConv
from lowbit.quant import QuantConfig, quantize_weight
from lowbit.runtime import BackendConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def layer_and_reference(conv, memory):
    qw = quantize_weight(conv.weight.detach(), QuantConfig(bits=4, block_size=16))
    deq = copy.deepcopy(conv)
    with torch.no_grad():
        deq.weight.copy_(qw.dequantize())
    cls = QuantConv1d if isinstance(conv, nn.Conv1d) else QuantConv2d
    return cls.from_float(conv, qw, BackendConfig(memory)), deq


@pytest.mark.parametrize("memory", ["normal", "low"])
@pytest.mark.parametrize("make,shape", [
    (lambda: nn.Conv1d(16, 64, 5, padding=2), (1, 16, 24)),  # the conv + BiLSTM test model's first conv
    (lambda: nn.Conv1d(12, 8, 3, stride=2, groups=4), (2, 12, 17)),
    (lambda: nn.Conv2d(32, 32, 3, padding=1, groups=32), (1, 32, 7, 7)),  # depthwise: a float copy at memory Low
    (lambda: nn.Conv2d(16, 24, 1), (1, 16, 5, 5)),
])
def test_bound_call_matches_and_follows_changes(rng, memory, make, shape):
    torch.manual_seed(0)
    layer, deq = layer_and_reference(make(), memory)
    x = torch.randn(*shape, generator=rng)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # memory Low's float-copy fallback
        first = layer(x)
        torch.testing.assert_close(first, deq(x), rtol=1e-5, atol=1e-5)
        bound = layer._bound
        assert isinstance(bound, BoundConv) and bound.call is not None and bound.holds(layer, x)
        assert torch.equal(bound(layer, x), first) and torch.equal(layer(x), first)
        assert bound(layer, torch.randn(*shape[:-1], shape[-1] + 1)) is None  # another shape: not this call
        assert bound(layer, x.double()) is None
        layer.bias.add_(1)  # an in-place bias edit: rebound, the new bias read
        assert bound(layer, x) is None
        deq.bias.add_(1)
        torch.testing.assert_close(layer(x), deq(x), rtol=1e-5, atol=1e-5)
        assert layer._bound is not bound and layer._bound.holds(layer, x)
        unbatched = layer(x[0])  # no binding for unbatched inputs, the same numbers
        torch.testing.assert_close(unbatched, deq(x[0]), rtol=1e-5, atol=1e-5)
        layer.backend = BackendConfig(memory)  # another backend object: re-dispatched
        assert layer._bound(layer, x) is None
    xg = x.clone().requires_grad_(True)
    y = layer(xg)  # autograd records it: the op's backward, not the bound call
    assert y.requires_grad
    y.sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()
    layer.clear_cache()
    assert layer._bound is None
