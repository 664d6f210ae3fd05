"""lowbit.pipeline.registry: a new affine method is one function plus `register_method`, from this file alone.

The toy method is RTN whose range is clipped by the ratio (of a few) with the lowest weight MSE per block. It runs
through `lowbit.quantize`, matches a float64 re-computation written independently below, is listed by the CLI and
convert readers of the registry, and saves and loads through lowbit's checkpoint with identical outputs.
"""

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import lowbit
from lowbit.checkpoint.convert import _needs_calibration
from lowbit.cli import convert_model, main
from lowbit.methods import MethodSpec, method_for, methods, register_method, unregister_method
from lowbit.quant import QuantConfig, QuantizedWeight, pack_bits

RATIOS = (1.0, 0.9, 0.8, 0.7)


def toy_clip_quantize(w: torch.Tensor, cfg: QuantConfig, name: str = "weight") -> QuantizedWeight:
    """Asymmetric RTN per block of cfg.block_size (dividing K); each block's [min, max] shrunk by the ratio of RATIOS
    with the lowest squared weight error."""
    n, qmax = w.shape[0], (1 << cfg.bits) - 1
    blocks = w.detach().reshape(n, -1, cfg.block_size).double()  # (N, nb, g)
    best = None
    for r in RATIOS:
        lo, hi = blocks.amin(-1) * r, blocks.amax(-1) * r
        scale = ((hi - lo) / qmax).to(cfg.scale_torch_dtype)
        zero = (-lo / scale.double()).to(cfg.scale_torch_dtype)
        q = torch.round(blocks / scale.double()[..., None] + zero.double()[..., None]).clamp(0, qmax)
        err = ((q - zero.double()[..., None]) * scale.double()[..., None] - blocks).square().sum(-1)
        if best is None:
            best = [err, q, scale, zero]
        else:
            better = err < best[0]
            best = [torch.where(better[..., None], new, old) if new.dim() == 3 else torch.where(better, new, old)
                    for new, old in zip((err, q, scale, zero), best, strict=True)]
    _, q, scale, zero = best
    return QuantizedWeight(packed=pack_bits(q.to(torch.uint8).reshape(n, -1), cfg.bits), scale=scale, zero=zero,
                           shape=tuple(w.shape), dtype=w.dtype, bits=cfg.bits, block_size=cfg.block_size,
                           symmetric=False, method="toy_clip")


@pytest.fixture
def toy_method():
    spec = register_method(MethodSpec("toy_clip", needs_calibration=False, quantize_weight=toy_clip_quantize))
    yield spec
    unregister_method("toy_clip")


def reference(w: torch.Tensor, bits: int, block: int) -> torch.Tensor:
    """Float64 block by block: every ratio tried, the dequantized block with the lowest squared error kept."""
    out = torch.empty(w.shape, dtype=torch.float64)
    qmax = 2**bits - 1
    for i in range(w.shape[0]):
        for j in range(0, w.shape[1], block):
            x = w[i, j:j + block].double()
            tries = []
            for r in RATIOS:
                lo, hi = float(x.min()) * r, float(x.max()) * r
                s = torch.tensor((hi - lo) / qmax).half().double()
                z = torch.tensor(-lo / float(s)).half().double()
                deq = (torch.clamp(torch.round(x / s + z), 0, qmax) - z) * s
                tries.append((float(((deq - x) ** 2).sum()), deq))
            out[i, j:j + block] = min(tries, key=lambda t: t[0])[1]
    return out


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 32)).eval()


def test_quantize_with_a_registered_method_matches_the_reference(toy_method):
    model = _model()
    w = [model[0].weight.detach().clone(), model[2].weight.detach().clone()]
    q = lowbit.quantize(model, QuantConfig(bits=3, block_size=16, method="toy_clip"), min_weights=0)
    assert [r.config for r in q.lowbit_summary.swapped] == ["int3 b16 asym toy_clip"] * 2
    rtn = lowbit.quantize(_model(), QuantConfig(bits=3, block_size=16), min_weights=0)
    for layer, w_float, plain in zip((q[0], q[2]), w, (rtn[0], rtn[2]), strict=True):
        deq = layer.quantized_weight("weight").dequantize(torch.float64)
        torch.testing.assert_close(deq, reference(w_float, 3, 16), rtol=0, atol=1e-12)
        plain_err = (plain.quantized_weight("weight").dequantize(torch.float64) - w_float.double()).square().sum()
        assert (deq - w_float.double()).square().sum() < 0.95 * plain_err  # the clip search pays off


def test_registry_readers_list_it_and_forget_it(toy_method):
    assert method_for("TOY_CLIP") is toy_method and "toy_clip" in methods()
    assert "toy_clip" in convert_model.METHODS and not convert_model.needs_calibration("toy_clip")
    assert not _needs_calibration(QuantConfig(method="toy_clip"))
    assert _needs_calibration(QuantConfig(method="gptq")) and convert_model.needs_calibration("recon")
    unregister_method("toy_clip")
    assert "toy_clip" not in convert_model.METHODS
    with pytest.raises(ValueError, match="method='toy_clip' is unknown: use one of rtn, hqq, gptq, awq, recon"):
        QuantConfig(method="toy_clip")
    with pytest.raises(ValueError, match="method='toy_clip' is unknown: use one of rtn, hqq, gptq, awq, recon"):
        method_for("toy_clip")


def test_saved_and_loaded_with_identical_outputs(toy_method, tmp_path):
    q = lowbit.quantize(_model(), QuantConfig(bits=4, block_size=16, method="toy_clip"), min_weights=0)
    path = lowbit.save(q, tmp_path / "toy.safetensors")
    loaded = lowbit.load(_model(), path)
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(x), q(x))
    assert loaded[0].quantized_weight("weight").method == "toy_clip"


def test_cli_convert_takes_it(toy_method, tmp_path):
    model = _model()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "f.safetensors")
    argv = ["convert", tmp_path / "f.safetensors", tmp_path / "q.safetensors", "--method", "toy_clip", "--bits", "3",
            "--block", "16", "--quiet"]
    assert main([str(a) for a in argv]) == 0
    loaded = lowbit.load(_model(), tmp_path / "q.safetensors")
    for i in (0, 2):
        qw = loaded[i].quantized_weight("weight")
        assert qw.method == "toy_clip"
        ref = toy_clip_quantize(model[i].weight, QuantConfig(bits=3, block_size=16, method="toy_clip"))
        assert torch.equal(qw.dequantize(torch.float32), ref.dequantize(torch.float32))


def test_register_refuses_a_taken_name_and_an_incomplete_spec(toy_method):
    with pytest.raises(ValueError, match="'toy_clip' is already registered"):
        register_method(MethodSpec("toy_clip", needs_calibration=False, quantize_weight=lambda w, c, n: None))
    with pytest.raises(ValueError, match="must give quantize_weight"):
        register_method(MethodSpec("toy_none", needs_calibration=False))
    with pytest.raises(ValueError, match="must give its walk"):
        register_method(MethodSpec("toy_walkless", needs_calibration=True))
    with pytest.raises(ValueError, match="'gptq' is already registered"):
        register_method(MethodSpec("gptq", needs_calibration=False, quantize_weight=toy_clip_quantize))
    assert method_for("gptq").needs_calibration and "toy_none" not in methods()


def test_transformers_quantizes_on_load_with_a_registered_method(toy_method, tmp_path):
    """`from_pretrained(..., quantization_config=LowbitConfig(method=<registered data-free method>))` runs it."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                                   num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path / "fp")
    float_model = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "fp")
    model = transformers.LlamaForCausalLM.from_pretrained(
        tmp_path / "fp", quantization_config=lowbit.LowbitConfig(bits=4, block_size=32, method="toy_clip"))
    layer = model.model.layers[0].mlp.down_proj
    w = float_model.model.layers[0].mlp.down_proj.weight.detach()
    assert isinstance(layer, lowbit.nn.QuantLinear)
    deq = layer.quantized_weight("weight").dequantize(torch.float64)
    torch.testing.assert_close(deq, reference(w, 4, 32), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="needs calibration"):
        lowbit.LowbitConfig(method="gptq").check_on_load()
