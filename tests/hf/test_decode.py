"""lowbit.hf.decode: the packed-GQA attention against a float64 reference and transformers' sdpa, and a prepared
model's greedy decode against the unprepared one (eager, static cache, and a compiled static step)."""

import copy

import pytest
import torch

import lowbit
from lowbit.hf.decode import PACKED_SDPA, packed_sdpa_attention, prepare_decode
from lowbit.nn import SiblingOutput

transformers = pytest.importorskip("transformers")
from transformers.integrations.sdpa_attention import sdpa_attention_forward  # noqa: E402

_TINY = dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)


class _Attn(torch.nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.num_key_value_groups, self.is_causal = groups, True


def _reference(q, k, v, mask, scale):
    """Attention in float64 with every KV head repeated for its query heads: (B, q, H, D)."""
    groups = q.shape[1] // k.shape[1]
    k, v = (t.double().repeat_interleave(groups, dim=1) for t in (k, v))
    s = q.double() @ k.transpose(-1, -2) * scale
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask.double()
    return (s.softmax(-1) @ v).transpose(1, 2)


@pytest.mark.parametrize("mask_kind", [None, "bool", "float"])
@pytest.mark.parametrize("heads,kv_heads", [(8, 2), (6, 3)])
def test_packed_attention_matches_reference_at_one_query(mask_kind, heads, kv_heads):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, h, n, 16, generator=g) for h, n in ((heads, 1), (kv_heads, 11), (kv_heads, 11)))
    mask = None
    if mask_kind is not None:
        keep = torch.rand(2, 1, 1, 11, generator=g) > 0.3
        keep[..., 0] = True
        mask = keep if mask_kind == "bool" else torch.zeros(keep.shape).masked_fill(~keep, float("-inf"))
    out, weights = packed_sdpa_attention(_Attn(heads // kv_heads), q, k, v, mask, scaling=0.25)
    assert weights is None and out.shape == (2, 1, heads, 16) and out.is_contiguous()
    torch.testing.assert_close(out.double(), _reference(q, k, v, mask, 0.25), atol=1e-5, rtol=1e-5)
    ref, _ = sdpa_attention_forward(_Attn(heads // kv_heads), q, k, v, mask, scaling=0.25)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("q_len,groups", [(5, 4), (1, 1)])
def test_other_calls_are_transformers_sdpa(q_len, groups):
    """Prefill and models without grouped KV heads go to transformers' sdpa unchanged (bit for bit)."""
    g = torch.Generator().manual_seed(1)
    q = torch.randn(1, 4, q_len, 8, generator=g)
    k, v = (torch.randn(1, 4 // groups, 9, 8, generator=g) for _ in range(2))
    got, _ = packed_sdpa_attention(_Attn(groups), q, k, v, None)
    ref, _ = sdpa_attention_forward(_Attn(groups), q, k, v, None)
    assert torch.equal(got, ref)


def _quantized_llama(attn="sdpa"):
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**_TINY, attn_implementation=attn)).eval()
    model.generation_config.pad_token_id = 0
    cfg = lowbit.QuantConfig(bits=4, block_size=32, method="rtn")
    return lowbit.quantize(model, cfg, backend=lowbit.BackendConfig("low"), progress=False)


def _greedy(model, prompt, **kwargs):
    with torch.inference_mode():
        out = model.generate(prompt, max_new_tokens=6, min_new_tokens=6, do_sample=False, output_scores=True,
                             return_dict_in_generate=True, **kwargs)
    scores = torch.cat(out.scores)
    return out.sequences, torch.where(torch.isfinite(scores), scores, 0)  # min_new_tokens' -inf on EOS zeroed


@pytest.mark.parametrize("static", [False, True])
def test_prepared_model_decodes_as_before(static):
    model = _quantized_llama()
    prepared = copy.deepcopy(model)
    done = prepare_decode(prepared, lean=False)  # lean steps: tests/hf/test_decode_step.py
    assert done["attention"] == PACKED_SDPA == prepared.config._attn_implementation
    assert len(done["fused"]) == 4 and isinstance(prepared.model.layers[0].self_attn.k_proj, SiblingOutput)
    prompt = torch.randint(0, 96, (1, 5), generator=torch.Generator().manual_seed(2))
    kwargs = dict(cache_implementation="static", max_cache_len=16) if static else {}
    tokens, scores = _greedy(model, prompt, **kwargs)
    got_tokens, got = _greedy(prepared, prompt, **kwargs)
    assert torch.equal(got_tokens, tokens)
    torch.testing.assert_close(got, scores, atol=1e-4, rtol=1e-4)  # GQA attention summed in another order


def test_prepare_leaves_other_attention_alone():
    model = _quantized_llama(attn="eager")
    done = prepare_decode(model, fuse=False, lean=False)
    assert done == {"fused": [], "attention": None, "lean": 0} and model.config._attn_implementation == "eager"


@pytest.mark.slow  # torch.compile of a 2-block model: ~15 s on 2 cores
def test_prepared_compiled_step_matches_eager():
    """The compiled static decode step of a prepared model (packed attention inside the graph, fused layers as one
    opaque op each) gives the eager prepared model's tokens and logits."""
    from transformers import CompileConfig

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        prepared = _quantized_llama()
        prepare_decode(prepared)
        prompt = torch.randint(0, 96, (1, 5), generator=torch.Generator().manual_seed(2))
        static = dict(cache_implementation="static", max_cache_len=16)
        tokens, scores = _greedy(prepared, prompt, **static)
        config = CompileConfig(fullgraph=True, mode="default")
        config._compile_all_devices = True
        got_tokens, got = _greedy(prepared, prompt, compile_config=config, **static)
        assert torch.equal(got_tokens, tokens)
        # int8 activations may round a ulp apart once inductor fuses the norms: close, not equal
        sqnr = (20 * torch.log10(scores.norm(dim=-1) / (scores - got).norm(dim=-1))).min().item()
        assert sqnr > 30
    finally:
        torch.set_num_threads(threads)
