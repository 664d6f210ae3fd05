"""lowbit.hf.decode_step: lean one-token steps give bit-identical greedy decodes and scores to transformers' own
layers with torch's ops (Llama, Qwen2, Mistral from configs; float and int4 prepared; dynamic and static caches;
padded batches), the same tokens and scores within 1e-5 with the native glue, and every other call is the layer's
own forward; the in-place cache append equals transformers' concatenation."""

import copy

import pytest
import torch

import lowbit
from lowbit.hf.decode import prepare_decode
from lowbit.hf.decode_step import LeanDecodeStep, lean_decode_layers, restore_decode_layers
from lowbit.hf.kv_cache import append_in_place
from lowbit.kernels import cpu_decode

transformers = pytest.importorskip("transformers")

_TINY = dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)
_FAMILIES = {"llama": ("LlamaConfig", "LlamaForCausalLM"), "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
             "mistral": ("MistralConfig", "MistralForCausalLM")}


def _model(family: str, **extra):
    config_cls, model_cls = (getattr(transformers, n) for n in _FAMILIES[family])
    torch.manual_seed(0)
    model = model_cls(config_cls(**_TINY, **extra)).eval()
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = None  # always 6 new tokens, no min-length processors
    return model


@pytest.fixture
def lean_calls(monkeypatch):
    """How many one-token steps took the lean path."""
    seen = []
    step = LeanDecodeStep._step

    def counted(self, *args):
        seen.append(1)
        return step(self, *args)

    monkeypatch.setattr(LeanDecodeStep, "_step", counted)
    return seen


def _greedy(model, prompt, **kwargs):
    with torch.inference_mode():
        out = model.generate(prompt, max_new_tokens=6, do_sample=False, output_scores=True,
                             return_dict_in_generate=True, **kwargs)
    return out.sequences, torch.stack(out.scores)


@pytest.mark.parametrize("family", list(_FAMILIES))
@pytest.mark.parametrize("static", [False, True])
def test_float_decode_is_bit_identical(family, static, lean_calls):
    model = _model(family)
    prompt = torch.randint(1, 96, (1, 5), generator=torch.Generator().manual_seed(1))
    kwargs = dict(cache_implementation="static") if static else {}
    want = _greedy(model, prompt, **kwargs)
    assert lean_decode_layers(model, native=False) == 2
    got = _greedy(model, prompt, **kwargs)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert len(lean_calls) == 2 * 5  # 2 layers x the 5 one-token steps after the prompt


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_padded_batch_is_bit_identical(family, lean_calls):
    """Left-padded batch of 2: the steps carry a mask, and the lean path applies it as transformers does."""
    model = _model(family)
    prompt = torch.randint(1, 96, (2, 6), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(prompt)
    prompt[0, :3], mask[0, :3] = 0, 0
    want = _greedy(model, prompt, attention_mask=mask)
    lean_decode_layers(model)  # native asked for, but batch 2 keeps torch's ops
    got = _greedy(model, prompt, attention_mask=mask)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert lean_calls


@pytest.mark.parametrize("static", [False, True])
def test_prepared_int4_decode_is_bit_identical(static, lean_calls):
    """int4 at memory Low after prepare_decode (fused q/k/v and gate/up, packed attention): one fused call each."""
    model = lowbit.quantize(_model("llama"), lowbit.QuantConfig(bits=4, block_size=32, method="rtn"),
                            backend=lowbit.BackendConfig("low"), progress=False)
    prepare_decode(model, lean=False)
    prompt = torch.randint(1, 96, (1, 5), generator=torch.Generator().manual_seed(3))
    kwargs = dict(cache_implementation="static") if static else {}
    want = _greedy(model, prompt, **kwargs)
    assert lean_decode_layers(model, native=False) == 2
    step = model.model.layers[0].forward
    got = _greedy(model, prompt, **kwargs)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert lean_calls and all(group is not None for _, group in step._groups.values())


def test_prepare_decode_installs_lean_steps():
    model = lowbit.quantize(_model("llama"), lowbit.QuantConfig(bits=4, block_size=32, method="rtn"),
                            backend=lowbit.BackendConfig("low"), progress=False)
    done = prepare_decode(model)
    assert done["lean"] == 2 and isinstance(model.model.layers[1].__dict__["forward"], LeanDecodeStep)


def test_other_calls_are_the_layers_own(lean_calls):
    """Prefill, a forward without cache and training never take the lean path; restoring removes it."""
    model = _model("llama")
    lean_decode_layers(model)
    ids = torch.randint(1, 96, (1, 4))
    with torch.inference_mode():
        model(ids)
        model(ids[:, :1], use_cache=False)
    model.train()
    model(ids[:, :1])
    assert not lean_calls
    assert restore_decode_layers(model) == 2 and "forward" not in vars(model.model.layers[0])


def test_unknown_layers_are_left_alone():
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=96, n_embd=32, n_layer=1, n_head=2))
    assert lean_decode_layers(gpt2) == 0
    model = _model("llama", hidden_act="gelu")  # not a SiLU-gated MLP
    assert lean_decode_layers(model) == 0


def test_deepcopy_steps_run_the_copy(lean_calls):
    model = _model("llama")
    lean_decode_layers(model)
    twin = copy.deepcopy(model)
    assert twin.model.layers[0].forward.layer is twin.model.layers[0]
    prompt = torch.randint(1, 96, (1, 5), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        twin.model.layers[0].mlp.down_proj.weight.zero_()
    assert not torch.equal(_greedy(twin, prompt)[1], _greedy(model, prompt)[1])


def test_eager_attention_takes_the_layers_own_forward(lean_calls):
    """Lean steps compute sdpa's attention, so a model on another attention implementation keeps its own."""
    model = _model("llama", attn_implementation="eager")
    prompt = torch.randint(1, 96, (1, 5), generator=torch.Generator().manual_seed(5))
    want = _greedy(model, prompt)
    lean_decode_layers(model)
    got = _greedy(model, prompt)
    assert torch.equal(got[1], want[1]) and not lean_calls


@pytest.fixture
def native_calls(monkeypatch):
    """How many attention calls the native glue made."""
    if cpu_decode.decode_library() is None:
        pytest.skip("needs_native: the native kernels did not build")
    seen = []
    attend = cpu_decode.attend_one

    def counted(*args):
        seen.append(1)
        return attend(*args)

    monkeypatch.setattr(cpu_decode, "attend_one", counted)
    return seen


@pytest.mark.parametrize("family", list(_FAMILIES))
@pytest.mark.parametrize("static", [False, True])
def test_native_glue_decode_matches(family, static, native_calls):
    model = _model(family)
    prompt = torch.randint(1, 96, (1, 5), generator=torch.Generator().manual_seed(6))
    kwargs = dict(cache_implementation="static") if static else {}
    want = _greedy(model, prompt, **kwargs)
    lean_decode_layers(model)
    got = _greedy(model, prompt, **kwargs)
    assert torch.equal(got[0], want[0])
    torch.testing.assert_close(got[1], want[1], atol=1e-5, rtol=1e-5)
    assert len(native_calls) == 2 * 5


@pytest.mark.parametrize("static", [False, True])
def test_native_glue_on_prepared_int4(static, native_calls):
    """Fused q/k/v and gate/up feed rotary and the gated product in one native call each (dynamic and static)."""
    model = lowbit.quantize(_model("llama"), lowbit.QuantConfig(bits=4, block_size=32, method="rtn"),
                            backend=lowbit.BackendConfig("low"), progress=False)
    prompt = torch.randint(1, 96, (1, 5), generator=torch.Generator().manual_seed(7))
    prepare_decode(model, lean=False)
    kwargs = dict(cache_implementation="static") if static else {}
    want = _greedy(model, prompt, **kwargs)
    lean_decode_layers(model)
    got = _greedy(model, prompt, **kwargs)
    assert torch.equal(got[0], want[0])
    # ~1e-7 differences in the glue can flip an int8 activation rounding inside the int4 kernels (one step of
    # ~1e-3 in a logit); a wrong norm, rotary or attention moves logits by their own size (~0.5)
    torch.testing.assert_close(got[1], want[1], atol=5e-3, rtol=0)
    assert native_calls


def _prefilled_cache(tokens: int):
    from transformers import DynamicCache

    cache = DynamicCache(config=transformers.LlamaConfig(**_TINY))
    g = torch.Generator().manual_seed(tokens)
    for layer in range(2):
        cache.update(*(torch.randn(1, 2, tokens, 16, generator=g) for _ in range(2)), layer)
    return cache


def test_append_in_place_equals_concatenation():
    ours, theirs = _prefilled_cache(3), _prefilled_cache(3)
    g = torch.Generator().manual_seed(11)
    for step in range(300):  # past the first buffer's spare rows
        k, v = (torch.randn(1, 2, 1, 16, generator=g) for _ in range(2))
        got = append_in_place(ours, step % 2, k, v)
        want = theirs.update(k, v, step % 2)
        assert got is not None and all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    assert ours.get_seq_length(0) == theirs.get_seq_length(0) == 153
    ours.crop(-4), theirs.crop(-4)
    k, v = (torch.randn(1, 2, 1, 16, generator=g) for _ in range(2))
    got, want = append_in_place(ours, 0, k, v), theirs.update(k, v, 0)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True)) and got[0].shape[2] == 150


def test_append_in_place_leaves_other_caches_to_update():
    from transformers import DynamicCache

    empty = DynamicCache(config=transformers.LlamaConfig(**_TINY))
    k = torch.zeros(1, 2, 1, 16)
    assert append_in_place(empty, 0, k, k) is None  # not initialized: cache.update's lazy start
    batch = _prefilled_cache(2)
    batch.layers[0].keys = batch.layers[0].keys.expand(2, -1, -1, -1)
    assert append_in_place(batch, 0, k, k) is None


def test_pickled_model_keeps_working_lean_steps(tmp_path, lean_calls):
    model = _model("llama")
    lean_decode_layers(model, native=False)
    prompt = torch.randint(1, 96, (1, 5), generator=torch.Generator().manual_seed(8))
    want = _greedy(model, prompt)
    torch.save(model, tmp_path / "m.pt")
    twin = torch.load(tmp_path / "m.pt", weights_only=False)
    lean_calls.clear()
    got = _greedy(twin, prompt)
    assert torch.equal(got[1], want[1]) and lean_calls


@pytest.mark.parametrize("native", [False, True])
def test_sliding_window_mistral(native):
    """A window shorter than the context: the steps' masks are not a cache prefix, and the sliding cache layers
    keep their own update; torch's ops stay bit-identical, the native glue close."""
    model = _model("mistral", sliding_window=4)
    prompt = torch.randint(1, 96, (1, 6), generator=torch.Generator().manual_seed(12))
    want = _greedy(model, prompt)
    lean_decode_layers(model, native=native)
    got = _greedy(model, prompt)
    assert torch.equal(got[0], want[0])
    if native:
        torch.testing.assert_close(got[1], want[1], atol=1e-5, rtol=1e-5)
    else:
        assert torch.equal(got[1], want[1])


def test_bf16_model_is_bit_identical(lean_calls):
    """bf16 activations keep torch's ops (the native glue is fp32 only): transformers' numbers exactly."""
    model = _model("qwen2").to(torch.bfloat16)
    prompt = torch.randint(1, 96, (1, 5), generator=torch.Generator().manual_seed(13))
    want = _greedy(model, prompt)
    lean_decode_layers(model)
    got = _greedy(model, prompt)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]) and lean_calls


def test_layers_with_another_forward_are_left_alone():
    """accelerate's offload hooks replace a layer's forward (and set _hf_hook): that forward must keep running."""
    model = _model("llama")
    wrapped = model.model.layers[0]
    wrapped.forward = lambda *args, **kwargs: type(wrapped).forward(wrapped, *args, **kwargs)
    model.model.layers[1]._hf_hook = object()
    assert lean_decode_layers(model) == 0
