"""The runtime kernel table: a kernel family registered from this file alone is probed, dispatched to and run."""

from dataclasses import dataclass

import pytest
import torch
from torch import nn

import lowbit
from lowbit.nn import kernel_for
from lowbit.runtime import Kernel, KernelRow, capabilities, executor, kernel_rows, register_kernel, unregister_kernel

NAME = "reference_affine4"


def _affine_float64(qw) -> torch.Tensor:
    """W (N, K) in float64 by the affine rule written out here: (code - zero) * scale per block along K."""
    codes = qw.unpack().double()  # (N, K)
    zero = qw.zero_or_implicit().double().repeat_interleave(qw.group_size, dim=1)[:, : qw.k]
    scale = qw.scale.double().repeat_interleave(qw.group_size, dim=1)[:, : qw.k]
    return (codes - zero) * scale


def _reference_run(_module, w, x, bias, _activations):
    y = x.double() @ w.T
    return (y if bias is None else y + bias.double()).to(x.dtype)


@pytest.fixture
def reference_row():
    """A reference kernel for affine 4-bit weights on the CPU (dequantize + float64 matmul), tried first."""
    row = register_kernel(KernelRow(
        NAME, device="cpu", priority=0, available=lambda _module: True,
        supports=lambda _module, qw: None if qw.bits == 4 else f"bits={qw.bits}: 4-bit weights only",
        prepare=lambda _module, qw, _dtype: qw.dequantize(torch.float64).reshape(qw.n, qw.k),
        run=_reference_run, doc="test: dequantize + float64 matmul"))
    yield row
    unregister_kernel("linear", NAME)


def _model(bits: int):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(96, 40), nn.ReLU(), nn.Linear(40, 32)).eval()
    return net, lowbit.quantize(net, lowbit.QuantConfig(bits=bits, block_size=32),
                                backend=lowbit.BackendConfig(memory="low"), progress=False)


def test_registered_row_is_listed_dispatched_and_exact(reference_row):
    assert reference_row in kernel_rows("linear")
    assert NAME in capabilities().kernels
    net, q = _model(bits=4)
    assert kernel_for(q[0], "weight", 3) == NAME and kernel_for(q[2], "weight", 64) == NAME
    x = torch.randn(3, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = q(x)
    w0, w2 = (_affine_float64(q[i].quantized_weight("weight")) for i in (0, 2))
    h = (x.double() @ w0.T + q[0].bias.double()).float().relu()  # each layer returns x's dtype
    ref = h.double() @ w2.T + q[2].bias.double()
    torch.testing.assert_close(y.double(), ref, rtol=1e-6, atol=1e-6)  # float64 products, rounded to fp32 per layer


def test_registered_row_refusal_leaves_the_builtin_choice(reference_row):
    _, q = _model(bits=8)
    assert kernel_for(q[0], "weight", 3) != NAME


def test_unregistered_row_is_gone():
    register_kernel(KernelRow(NAME, available=lambda _module: True, prepare=lambda *a: None, run=lambda *a: None))
    with pytest.raises(ValueError, match="already registered"):
        register_kernel(KernelRow(NAME, prepare=lambda *a: None, run=lambda *a: None))
    unregister_kernel("linear", NAME)
    assert NAME not in capabilities().kernels and all(r.name != NAME for r in kernel_rows())
    _, q = _model(bits=4)
    assert kernel_for(q[0], "weight", 3) != NAME
    with pytest.raises(ValueError, match="no registered"):
        unregister_kernel("linear", Kernel.DENSE)
    with pytest.raises(TypeError, match="KernelRow"):
        register_kernel("not a row")


@dataclass
class _OtherFormat:
    """A weight of a format no packed kernel reads: it only knows how to dequantize itself."""

    w: torch.Tensor
    format: str = "toy"
    is_float: bool = False

    @property
    def n(self):
        return self.w.shape[0]

    @property
    def k(self):
        return self.w.shape[1]

    def dequantize(self, dtype=torch.float32):
        return self.w.to(dtype)


@pytest.mark.parametrize("kernel", [Kernel.DENSE, Kernel.EMULATED])
def test_dense_and_emulated_serve_any_weight_that_dequantizes_itself(kernel):
    gen = torch.Generator().manual_seed(2)
    qw, x = _OtherFormat(torch.randn(7, 33, generator=gen)), torch.randn(5, 33, generator=gen)
    refused = dict(executor.refusals(qw))
    assert kernel not in refused and "reads affine weights, not toy" in refused[Kernel.CPU_INT4]
    y = executor.run(kernel, executor.prepare(kernel, qw), x)
    torch.testing.assert_close(y.double(), x.double() @ qw.w.double().T, rtol=1e-5, atol=1e-5)
