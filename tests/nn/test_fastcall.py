"""lowbit.nn.fastcall: a QuantLinear's bound call gives exactly what the usual path gives, and anything that could
change the answer (weights, backend, kernel table, capabilities, forced kernels, bias, input kind) sends the call
back down the usual path."""

import copy
import math

import pytest
import torch
from native_marks import needs_native as native

from lowbit import QuantConfig
from lowbit.nn import QuantLinear, fastcall
from lowbit.nn.fastcall import BoundDense, BoundNative, Refused
from lowbit.nn.weight_cache import current_capabilities, forced_kernel, override_capabilities
from lowbit.quant import quantize_weight
from lowbit.runtime import BackendConfig, Kernel, KernelRow, register_kernel, unregister_kernel


def _layer(rng, k, n, bits, block, backend, bias=True):
    lin = torch.nn.Linear(k, n, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n, k, generator=rng) / math.sqrt(k))
        if bias:
            lin.bias.copy_(torch.randn(n, generator=rng))
    qw = quantize_weight(lin.weight.detach(), QuantConfig(bits=bits, block_size=block))
    return QuantLinear.from_float(lin, qw, BackendConfig(*backend)).eval()


def _both(q, x):
    """(the bound call's output, the usual path's) on x, after one call has bound the layer."""
    q(x)
    bound = q._bound
    assert bound is not None, "the layer did not bind"
    fast = bound(q, x, q.bias)
    assert fast is not None, "the bound call refused a plain input"
    return fast, q._forward(x)


@native
@pytest.mark.parametrize("precision", ["normal", "high", "low"])
@pytest.mark.parametrize("bits,block", [(4, 64), (4, 128), (3, 32), (8, -1), (8, 128), (2, -1)])
@pytest.mark.parametrize("k,n,m", [(128, 48, 1), (200, 33, 3), (256, 64, 17)])
def test_the_bound_native_call_is_bit_identical(rng, one_thread, precision, bits, block, k, n, m):
    if block > k:
        block = -1
    q = _layer(rng, k, n, bits, block, ("low", precision))
    x = torch.randn(1, m, k, generator=rng)
    with torch.no_grad():
        q(x)
    fp32 = precision != "low" or not current_capabilities().cpu_bf16
    pads = precision == "high" and (k % 64 or m >= 16)  # fp32 activations: the register kernel, K padded by the op
    if not fp32 or pads:
        assert isinstance(q._bound, Refused)  # bf16 compute at precision Low; fp32 tiles or padding: the usual path
        return
    with torch.no_grad():
        fast, slow = _both(q, x)
    assert isinstance(q._bound, BoundNative)
    assert fast.shape == slow.shape == (1, m, n) and fast.dtype == slow.dtype
    assert torch.equal(fast, slow)


@pytest.mark.parametrize("bias", [True, False])
def test_the_bound_dense_call_is_bit_identical(rng, bias):
    q = _layer(rng, 96, 40, 4, 32, ("normal", "normal"), bias=bias)
    x = torch.randn(2, 5, 96, generator=rng)
    with torch.no_grad():
        fast, slow = _both(q, x)
    assert isinstance(q._bound, BoundDense)
    assert torch.equal(fast, slow)


@native
def test_a_steady_call_goes_through_the_bound_call(rng, one_thread, monkeypatch):
    q = _layer(rng, 128, 64, 4, 64, ("low", "normal"))
    x = torch.randn(1, 1, 128, generator=rng)
    with torch.no_grad():
        first = q(x)
        monkeypatch.setattr(q, "_forward", lambda _x: pytest.fail("the usual path ran"))
        assert torch.equal(q(x), first)


def _reference(q, x):
    """The usual path's answer on a fresh copy of q (nothing bound or cached carried over)."""
    fresh = copy.deepcopy(q)
    assert fresh._bound is None
    with torch.no_grad():
        return fresh._forward(x)


@native
@pytest.mark.parametrize("backend", [("low", "normal"), ("normal", "normal")])
def test_changed_weights_backend_and_bias_are_honoured(rng, one_thread, backend):
    q = _layer(rng, 128, 64, 4, 64, backend)
    other = _layer(rng, 128, 64, 4, 64, backend)
    x = torch.randn(1, 1, 128, generator=rng)
    with torch.no_grad():
        before = q(x)
        q.load_state_dict(other.state_dict())  # in place: version counters move
        after = q(x)
        assert not torch.equal(after, before)
        assert torch.equal(after, _reference(other, x))
        q.bias = torch.nn.Parameter(torch.zeros(64), requires_grad=False)  # a new bias object
        assert torch.equal(q(x), _reference(q, x))
        q.backend = BackendConfig("low", "high")  # assigned directly, not through set_backend
        assert torch.equal(q(x), _reference(q, x))
        q.set_backend(BackendConfig("normal"))
        assert q._bound is None
        assert torch.equal(q(x), _reference(q, x))


@native
def test_forced_kernels_table_and_capabilities_unbind(rng, one_thread):
    q = _layer(rng, 128, 64, 4, 64, ("low", "normal"))
    x = torch.randn(1, 1, 128, generator=rng)
    with torch.no_grad():
        native_y = q(x)
        bound = q._bound
        with forced_kernel(Kernel.EMULATED):
            emulated = q(x)
        assert not torch.equal(emulated, native_y)  # int8 activations vs the exact float product
        torch.testing.assert_close(emulated, _reference(q, x), rtol=0.05, atol=0.05)
        row = register_kernel(KernelRow("fastcall_test_kernel", priority=100, prepare=lambda *a: None,
                                        run=lambda *a: None))
        try:
            assert torch.equal(q(x), native_y) and q._bound is not bound  # rebound after the table changed
        finally:
            unregister_kernel("linear", row.kernel)
        bound = q._bound
        caps = current_capabilities()
        override_capabilities(caps)
        try:
            assert torch.equal(q(x), native_y) and q._bound is not bound
        finally:
            override_capabilities(None)


@native
def test_inputs_the_bound_call_leaves_to_the_usual_path(rng, one_thread):
    q = _layer(rng, 128, 64, 4, 64, ("low", "normal"))
    x = torch.randn(3, 128, generator=rng)
    with torch.no_grad():
        q(x[:1])
        q(x[:1])
        bound = q._bound
        assert bound(q, x, q.bias) is None  # another M bucket
        assert bound(q, x[:1].double(), q.bias) is None
        bad = x[:1].clone()
        bad[0, 5] = float("inf")
        assert bound(q, bad, q.bias) is None
        y = q(bad)
        assert torch.isnan(y).all()  # as the usual path: NaN on every output of a non-finite row
        strided = torch.randn(1, 256, generator=rng)[:, ::2]  # (1, 128), not contiguous
        assert bound(q, strided, q.bias) is None
        assert torch.equal(q(strided), _reference(q, strided.contiguous()))
    xg = x[:1].clone().requires_grad_(True)
    assert q._bound(q, xg, q.bias) is None  # autograd records it: the usual path's backward
    q(xg).sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()


@native
def test_copies_and_moves_drop_the_bound_call(rng, one_thread):
    q = _layer(rng, 128, 64, 4, 64, ("low", "normal"))
    x = torch.randn(1, 128, generator=rng)
    with torch.no_grad():
        q(x)
        assert q._bound is not None
        twin = copy.deepcopy(q)
        assert twin._bound is None
        twin.load_state_dict(_layer(rng, 128, 64, 4, 64, ("low", "normal")).state_dict())
        assert not torch.equal(twin(x), q(x))
        q.float()  # _apply
        assert q._bound is None


def test_a_refused_layer_is_not_bound_again_until_its_state_changes(rng, one_thread, monkeypatch):
    q = _layer(rng, 128, 64, 4, 64, ("low", "normal"))
    q.set_input_scale(torch.rand(128, generator=rng) + 0.5)  # AWQ's input scale: no bound form
    x = torch.randn(1, 128, generator=rng)
    attempts = []
    bind = fastcall.bind
    monkeypatch.setattr(fastcall, "bind", lambda *a: attempts.append(1) or bind(*a))
    with torch.no_grad():
        first = q(x)
        assert isinstance(q._bound, Refused)
        assert torch.equal(q(x), first) and torch.equal(q(x), first)
        assert len(attempts) == 1
        q(torch.randn(20, 128, generator=rng))  # another M bucket: asked again
        assert len(attempts) == 2
        del q._buffers["weight_input_scale"]  # the state changed: bound now
        q(x)
        assert isinstance(q._bound, BoundNative) and len(attempts) == 3


@native
@pytest.mark.parametrize("bound", [True, False], ids=["bound-call", "op-path"])
def test_the_kernel_writes_fp32_whatever_the_default_dtype(rng, one_thread, bound):
    """The output buffer was torch.empty(shape) on both paths (the bound native call; the op path, bind_calls off,
    which torch.compile graphs call): under torch.set_default_dtype(float64) the kernel's fp32 results landed in a
    float64 buffer (values off by ~1 on this layer, dtype float64)."""
    q = _layer(rng, 128, 64, 4, 64, ("low", "normal"))
    q.bind_calls = bound
    x = torch.randn(1, 128, generator=rng)
    default = torch.get_default_dtype()
    with torch.no_grad():
        ref = q(x)
        if bound:
            q(x)  # the second call runs bound
            assert isinstance(q._bound, BoundNative)
        torch.set_default_dtype(torch.float64)
        try:
            got = q(x)
        finally:
            torch.set_default_dtype(default)
    assert got.dtype == torch.float32 and torch.equal(got, ref)
