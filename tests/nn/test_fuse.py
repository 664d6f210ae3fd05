"""lowbit.nn.fuse: sibling QuantLinears fused into one call give the unfused model's logits bit for bit (memory Low,
native kernel), on transformers' Llama (GQA: q/k/v of different N) and Qwen2 (q/k/v with bias)."""

import copy

import pytest
import torch
from native_marks import needs_native as native

import lowbit
from lowbit.nn import FusedSiblings, QuantLinear, SiblingOutput, fuse_siblings, unfuse_siblings
from lowbit.quant import quantize_weight

transformers = pytest.importorskip("transformers")

_TINY = dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)


def _model(arch: str, backend=("low", "normal"), bits=4, block=32):
    torch.manual_seed(0)
    if arch == "llama":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**_TINY))
    else:
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**_TINY))
    cfg = lowbit.QuantConfig(bits=bits, block_size=block, method="rtn")
    return lowbit.quantize(model.eval(), cfg, backend=lowbit.BackendConfig(*backend), progress=False)


def _logits(model, tokens):
    with torch.no_grad():
        return model(tokens).logits


@native
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("traced", [True, False])
@pytest.mark.parametrize("bits,block", [(4, 32), (8, -1)])
def test_fused_logits_equal_the_unfused(arch, traced, bits, block, one_thread):
    model = _model(arch, bits=bits, block=block)
    tokens = torch.randint(0, 96, (1, 7), generator=torch.Generator().manual_seed(1))
    want = _logits(model, tokens)
    fused = copy.deepcopy(model)
    groups = fuse_siblings(fused, tokens) if traced else fuse_siblings(fused)
    assert sorted(len(g) for g in groups) == [2, 2, 3, 3]  # per layer: q/k/v and gate/up
    attn = fused.model.layers[0].self_attn
    assert isinstance(attn.q_proj, SiblingOutput) and isinstance(attn.fused_q_proj_k_proj_v_proj, FusedSiblings)
    assert torch.equal(_logits(fused, tokens), want)
    assert torch.equal(_logits(fused, tokens[:, :1]), _logits(model, tokens[:, :1]))  # M = 1, a decode step


def test_memory_normal_fused_within_float_noise(one_thread):
    model = _model("llama", backend=("normal", "normal"))
    tokens = torch.randint(0, 96, (1, 5), generator=torch.Generator().manual_seed(2))
    want = _logits(model, tokens)
    fused = copy.deepcopy(model)
    fuse_siblings(fused)
    torch.testing.assert_close(_logits(fused, tokens), want, rtol=1e-5, atol=1e-5)


def test_saving_refuses_and_unfusing_restores_the_exact_layers(one_thread):
    model = _model("qwen2")
    want = model.state_dict()
    fused = copy.deepcopy(model)
    fuse_siblings(fused)
    with pytest.raises(RuntimeError, match="unfuse_siblings"):
        fused.state_dict()
    assert unfuse_siblings(fused) == 4
    assert isinstance(fused.model.layers[1].mlp.up_proj, QuantLinear)
    got = fused.state_dict()
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert fused.model.layers[0].self_attn.q_proj.quant_meta == model.model.layers[0].self_attn.q_proj.quant_meta


def test_incompatible_siblings_stay_apart(one_thread):
    model = _model("llama")
    attn = model.model.layers[0].self_attn
    attn.v_proj.set_backend(lowbit.BackendConfig("normal"))  # another backend: not fused with q/k
    groups = fuse_siblings(model)
    assert ("model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj") in groups
    assert isinstance(attn.v_proj, QuantLinear)


def test_a_member_called_twice_recomputes_and_in_place_edits_stay_local(one_thread):
    model = _model("llama")
    mlp = model.model.layers[0].mlp
    ref_gate, ref_up = copy.deepcopy(mlp.gate_proj), copy.deepcopy(mlp.up_proj)
    fuse_siblings(model)
    x = torch.randn(1, 3, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        g = mlp.gate_proj(x)
        g.mul_(0)  # the caller edits its view in place
        again = mlp.gate_proj(x)
        assert torch.equal(again, ref_gate(x))
        assert torch.equal(mlp.up_proj(x), ref_up(x))
        x.add_(1)  # a new version of the same tensor: recomputed
        assert torch.equal(mlp.up_proj(x), ref_up(x))


class _Block(torch.nn.Module):
    """q/k/v and gate/up siblings reading one input each (a decoder block's Linear calls, nothing else)."""

    def __init__(self, rng):
        super().__init__()
        def lin(n):
            w = torch.randn(n, 64, generator=rng) / 8
            return QuantLinear(quantize_weight(w, lowbit.QuantConfig(bits=4, block_size=32)), None,
                               lowbit.BackendConfig("low"))
        self.q_proj, self.k_proj, self.v_proj = lin(64), lin(32), lin(32)
        self.gate_proj, self.up_proj = lin(96), lin(96)

    def forward(self, x):
        h = self.q_proj(x)[..., :32] + self.k_proj(x) * self.v_proj(x)
        return self.gate_proj(x) * self.up_proj(x), h


def test_under_torch_compile_each_group_is_one_op_call(rng, one_thread):
    block = _Block(rng).eval()
    x = torch.randn(1, 3, 64, generator=rng)
    with torch.no_grad():
        want = block(x)
    assert len(fuse_siblings(block)) == 2
    ops_seen = []

    def backend(gm, _inputs):  # dynamo's graph as traced: count the lowbit::linear calls, run it as is
        ops_seen.append(sum(n.target in (torch.ops.lowbit.linear, torch.ops.lowbit.linear.default)
                            for n in gm.graph.nodes))
        return gm.forward

    compiled = torch.compile(block, backend=backend, fullgraph=True)
    with torch.no_grad():
        got, again = compiled(x), compiled(x)
    assert ops_seen == [2]  # one per group; no recompile on the second call
    assert all(torch.equal(g, w) and torch.equal(a, w) for g, a, w in zip(got, again, want, strict=True))
