"""torch.compile(fullgraph=True) on CPU over the lowbit custom ops matches eager."""

import pytest
import torch
from torch import nn
from torch._inductor import codecache
from torch._inductor import config as inductor_config
from torch._inductor.cpu_vec_isa import pick_vec_isa

import lowbit
from lowbit.quant import QuantConfig
from lowbit.runtime import BackendConfig


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1, groups=2)
        self.rnn = nn.LSTM(8, 16, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(32, 24)

    def forward(self, x):  # x (B, 4, 3, 5) -> (B, 5, 24)
        h = self.conv(x).mean(2).transpose(1, 2)  # (B, 8, 5) -> (B, 5, 8)
        h, _ = self.rnn(h)
        return self.fc(torch.relu(h))


def _isa_keyed_inductor():
    """Inductor's CPU vector ISA pinned explicitly, so that it is part of the compile cache's key.

    torch 2.13 picks the ISA from ATEN_CPU_CAPABILITY at compile time but its FX graph and AOT autograd cache keys
    omit it: a graph compiled under ATEN_CPU_CAPABILITY=avx2 (8-float tiles) was served from /tmp/torchinductor_*
    to a later AVX-512 run, whose build of the same C++ stores 16 floats per `Vectorized<float>` store: up to 8
    floats written past the end of a buffer, the heap corruption this file once documented as a lowbit known issue
    (the reverse order gave NaN). An explicit `cpp.simdlen` is hashed into both keys.
    """
    with inductor_config.patch({"cpp.simdlen": None}):  # None: the ISA inductor picks from the environment
        bits = pick_vec_isa().bit_width()
    return inductor_config.patch({"cpp.simdlen": bits})


@pytest.fixture(autouse=True)
def _inductor_cache_per_isa():
    with _isa_keyed_inductor():
        yield


@pytest.mark.filterwarnings("ignore:lowbit")
@pytest.mark.parametrize("memory", ["normal", "low"])
def test_compile_fullgraph_matches_eager(memory):
    torch.manual_seed(0)
    model = lowbit.quantize(Small().eval(), QuantConfig(bits=4, block_size=16), BackendConfig(memory), min_weights=0)
    x = torch.randn(2, 4, 3, 5)
    with torch.no_grad():
        eager = model(x)
        compiled = torch.compile(model, fullgraph=True)  # inductor: its C++ kernels around the custom ops
        for _ in range(2):  # the second call reuses the compiled graph's buffers
            torch.testing.assert_close(compiled(x), eager, rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:lowbit")
@pytest.mark.parametrize("memory", ["normal", "low"])
def test_inductor_compiles_conv_and_linear(memory):
    # conv and Linear only, on a strided input
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, groups=2), nn.ReLU(), nn.Flatten(), nn.Linear(120, 24)).eval()
    model = lowbit.quantize(net, QuantConfig(bits=4, block_size=16), BackendConfig(memory), min_weights=0)
    x = torch.randn(2, 4, 3, 5).transpose(2, 3).contiguous().transpose(2, 3)  # a strided input as well
    with torch.no_grad():
        eager = model(x)
        torch.testing.assert_close(torch.compile(model, fullgraph=True)(x), eager, rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:lowbit")
def test_compile_fullgraph_backward_matches_eager():
    """The ops' registered autograd traced by AOT autograd: input and bias gradients as in eager (memory Low)."""
    torch.manual_seed(0)
    model = lowbit.quantize(Small().eval(), QuantConfig(bits=4, block_size=16), BackendConfig("low"), min_weights=0)
    x = torch.randn(2, 4, 3, 5, requires_grad=True)
    g = torch.randn(2, 5, 24)
    grads = []
    for run in (model, torch.compile(model, fullgraph=True, backend="aot_eager")):
        x.grad = None
        model.zero_grad()
        (run(x) * g).sum().backward()
        grads.append([x.grad.clone(), *(p.grad.clone() for p in model.parameters())])
    assert len(grads[0]) == 1 + 1 + 4 + 1  # input, conv bias, 4 LSTM biases (1 layer, 2 directions), fc bias
    for eager, compiled in zip(*grads, strict=True):
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:lowbit")
def test_inductor_cache_never_serves_another_isa(monkeypatch):
    """The heap corruption's cause (see `_isa_keyed_inductor`): a graph compiled for another vector ISA must hash to
    another FX graph cache key. The other ISA is ATEN_CPU_CAPABILITY=default (scalar C++), so that a shared key
    would run safe, scalar code here and fail only the key check."""
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    if pick_vec_isa().bit_width() == 0:
        pytest.skip("inductor finds no vector ISA on this CPU: there is no other ISA to tell apart")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8)).eval()
    model = lowbit.quantize(net, QuantConfig(bits=4, block_size=16), min_weights=0)
    x = torch.randn(3, 16)
    keys, hash_graph = [], codecache.compiled_fx_graph_hash

    def recording_hash(*args, **kwargs):
        keys.append(hash_graph(*args, **kwargs))
        return keys[-1]

    monkeypatch.setattr(codecache, "compiled_fx_graph_hash", recording_hash)
    with torch.no_grad(), torch._functorch.config.patch(enable_autograd_cache=False):  # always ask the FX cache
        eager = model(x)
        for capability in ("default", None):
            if capability:
                monkeypatch.setenv("ATEN_CPU_CAPABILITY", capability)
            else:
                monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
            torch._dynamo.reset()
            with _isa_keyed_inductor():
                torch.testing.assert_close(torch.compile(model, fullgraph=True)(x), eager, rtol=1e-5, atol=1e-5)
    assert len(keys) == 2, "one FX graph cache lookup per compile"
    assert keys[0][0] != keys[1][0], "the inductor cache key ignores the vector ISA: keep `_isa_keyed_inductor`"


@pytest.mark.filterwarnings("ignore:lowbit")
@pytest.mark.parametrize("memory", ["normal", "low"])
def test_opcheck(memory):
    """torch.library.opcheck: schema, fake implementations (shapes and strides), autograd registration."""
    from lowbit.nn import QuantConv2d, QuantLinear

    torch.manual_seed(0)
    lin, conv = nn.Linear(64, 48), nn.Conv2d(8, 16, 3, groups=2)
    q = QuantLinear.from_float(lin, lowbit.quantize_weight(lin.weight.detach(), QuantConfig(bits=4, block_size=32)),
                               BackendConfig(memory))
    p, s, z, shape, bits, block = q._op_args("weight")
    for x in (torch.randn(3, 64), torch.randn(64, 3).t()):  # traced calls pass strided inputs as they come
        x.requires_grad_(True)
        torch.library.opcheck(torch.ops.lowbit.linear.default, (x, p, s, z, q.bias, list(shape), bits, block, memory,
                                                                 "normal"))
    torch.library.opcheck(torch.ops.lowbit.dequantize.default, (p, s, z, list(shape), bits, block, torch.float32))
    qw = lowbit.quantize_weight(conv.weight.detach(), QuantConfig(bits=4, block_size=-1))
    q = QuantConv2d.from_float(conv, qw, BackendConfig(memory))
    p, s, z, shape, bits, block = q._op_args("weight")
    x = torch.randn(2, 8, 5, 6, requires_grad=True)
    torch.library.opcheck(torch.ops.lowbit.conv2d.default, (x, p, s, z, q.bias, list(shape), bits, block, [1, 2],
                                                             [1, 0], [1, 1], 2, memory, "normal"))


def test_graph_holds_the_custom_ops():
    """Under tracing the layers call torch.ops.lowbit.* (eager calls skip the dispatcher)."""
    torch.manual_seed(0)
    model = lowbit.quantize(Small().eval(), QuantConfig(bits=4, block_size=16), min_weights=0)
    seen = []

    def backend(gm, example_inputs):
        seen.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm.forward

    torch._dynamo.reset()
    with torch.no_grad():
        torch.compile(model, fullgraph=True, backend=backend)(torch.randn(2, 4, 3, 5))
    assert "lowbit.conv2d" in seen and seen.count("lowbit.linear") == 2 * (1 + 5) + 1  # BiLSTM: ih + 5 hh steps


def test_fake_impls_give_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    torch.manual_seed(0)
    model = lowbit.quantize(Small().eval(), QuantConfig(bits=8, block_size=-1), min_weights=0)
    x = torch.randn(3, 4, 3, 5)
    with torch.no_grad():
        expected = model(x).shape
    with FakeTensorMode(allow_non_fake_inputs=True), torch.no_grad():
        assert model(torch.empty(3, 4, 3, 5)).shape == expected


def _triton_gpu() -> bool:
    from lowbit.runtime import capabilities

    return capabilities().triton_gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (capability triton_gpu)")
@pytest.mark.filterwarnings("ignore:lowbit")
@pytest.mark.parametrize("precision", ["normal", "low"])
def test_cuda_graph_capture_matches_eager(precision):
    """memory Low on a GPU: the Triton kernels replayed from a CUDA graph (twin on CPU: the compile test above)."""
    if not _triton_gpu():
        pytest.skip("capability triton_gpu is false: the Triton kernels cannot run on this GPU")
    torch.manual_seed(0)
    model = lowbit.quantize(Small().eval(), QuantConfig(bits=4, block_size=16), BackendConfig("low", precision),
                            min_weights=0).cuda()
    x = torch.randn(2, 4, 3, 5, device="cuda")
    with torch.no_grad():
        eager = model(x)  # also builds the prepared weights before capture
        graph = torch.cuda.CUDAGraph()
        static_x = x.clone()
        with torch.cuda.graph(graph):
            static_y = model(static_x)
        static_x.copy_(x)
        graph.replay()
    tol = 1e-4 if precision == "normal" else 2e-2
    torch.testing.assert_close(static_y, eager, rtol=tol, atol=tol)
