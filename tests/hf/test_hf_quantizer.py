"""transformers' own loader with quant_method "lowbit": quantize on load, save_pretrained, reload, and folders from
`lowbit convert`, on a tiny Llama-shaped causal LM and a BERT-shaped encoder built from configs here. The reference
is `lowbit.nn.quantize` of the same float model (same codes, so logits are compared with torch.equal); every way a
folder could load random weights is refused."""

import copy
import json

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers is not installed")

import lowbit  # noqa: E402
from lowbit.nn import quantized_weights  # noqa: E402
from lowbit.quant import QuantConfig  # noqa: E402

TOKENS = torch.tensor([[3, 17, 42, 99, 5, 64, 7, 120]])


def llama(tie: bool = False):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=128, max_position_embeddings=64,
                                   tie_word_embeddings=tie)
    return transformers.LlamaForCausalLM(cfg).eval()


def bert():
    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                  vocab_size=128, max_position_embeddings=64, num_labels=3)
    return transformers.BertForSequenceClassification(cfg).eval()


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    model = llama()
    folder = tmp_path_factory.mktemp("llama") / "fp"
    model.save_pretrained(folder)
    return folder, model


def reference(model, cfg: QuantConfig, skip=("lm_head",), memory="normal"):
    """The float model quantized by lowbit itself, computing at the same memory mode."""
    return lowbit.nn.quantize(copy.deepcopy(model), cfg, skip=list(skip), min_weights=0,
                              backend=lowbit.BackendConfig(memory=memory))


def logits(model, tokens=TOKENS):
    with torch.no_grad():
        return model(tokens).logits


def assert_same_weights(a, b):
    qa, qb = quantized_weights(a), quantized_weights(b)
    assert sorted(qa) == sorted(qb) and qa
    for name in qa:
        for f, t in qa[name].tensors().items():
            assert torch.equal(t, qb[name].tensors()[f]), (name, f)


@pytest.mark.parametrize("kw", [dict(bits=4, block_size=32), dict(bits=8, block_size=-1, symmetric=True),
                                dict(bits=3, block_size=64, method="hqq", memory="low")],
                         ids=["int4", "int8-sym-channel", "hqq3-low"])
def test_llama_quantize_on_load_save_reload(llama_folder, tmp_path, kw):
    folder, float_model = llama_folder
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, quantization_config=lowbit.LowbitConfig(**kw))
    quant = {k: v for k, v in kw.items() if k != "memory"}
    ref = reference(float_model, QuantConfig(**quant), memory=kw.get("memory", "normal"))
    assert_same_weights(model, ref)
    assert type(model.lm_head) is torch.nn.Linear  # transformers' default: the output embedding stays float
    assert torch.equal(logits(model), logits(ref))
    cos = torch.nn.functional.cosine_similarity(logits(model).flatten(), logits(float_model).flatten(), dim=0)
    assert cos > (0.99 if kw["bits"] >= 4 else 0.9)
    out = model.generate(TOKENS, max_new_tokens=4, do_sample=False)
    assert torch.equal(out, ref.generate(TOKENS, max_new_tokens=4, do_sample=False))
    model.save_pretrained(tmp_path / "q")
    saved = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]
    assert saved["quant_method"] == "lowbit" and saved["bits"] == kw["bits"]
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "q")
    assert_same_weights(again, model)
    assert torch.equal(logits(again), logits(model))
    assert torch.equal(logits(lowbit.from_pretrained(tmp_path / "q")), logits(model))  # also a lowbit checkpoint
    if kw["bits"] == 8:  # shards: each carries the lowbit header, merged on load
        model.save_pretrained(tmp_path / "shards", max_shard_size="100KB")
        assert len(list((tmp_path / "shards").glob("model-*.safetensors"))) > 1
        assert torch.equal(logits(transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "shards")),
                           logits(model))


def test_layers_are_quantized_as_they_load(llama_folder, monkeypatch):
    """Each Linear is swapped when its weight arrives: no float Linear weight is ever resident besides the one
    being quantized (the model is built on the meta device)."""
    from lowbit.hf.ops import LowbitQuantize

    folder, _ = llama_folder
    seen, convert = [], LowbitQuantize.convert

    def spy(self, input_dict, model=None, **kwargs):
        resident = [n for n, m in model.named_modules() if type(m) is torch.nn.Linear and n != "lm_head"
                    and m.weight.device.type != "meta"]
        seen.append(len(resident))
        return convert(self, input_dict, model=model, **kwargs)

    monkeypatch.setattr(LowbitQuantize, "convert", spy)
    transformers.AutoModelForCausalLM.from_pretrained(folder, quantization_config=lowbit.LowbitConfig())
    assert seen == [0] * 14  # 2 layers x 7 Linears, none float while another is quantized


def test_bert_encode_save_reload(tmp_path):
    float_model = bert()
    float_model.save_pretrained(tmp_path / "fp")
    cfg = lowbit.LowbitConfig(bits=4, block_size=32, modules_to_not_convert=["classifier"])
    model = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "fp", quantization_config=cfg)
    ref = reference(float_model, QuantConfig(bits=4, block_size=32), skip=("classifier",))
    assert_same_weights(model, ref)
    assert torch.equal(logits(model), logits(ref))
    with torch.no_grad():
        hidden = model.bert(TOKENS).last_hidden_state
        cos = torch.nn.functional.cosine_similarity(hidden, float_model.bert(TOKENS).last_hidden_state, dim=-1)
    assert cos.min() > 0.99
    model.save_pretrained(tmp_path / "q")
    again = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "q")
    assert_same_weights(again, model)
    assert torch.equal(logits(again), logits(model))
    built = lowbit.from_pretrained(tmp_path / "q")  # the class config.json names, not the headless BertModel
    assert type(built).__name__ == "BertForSequenceClassification"
    assert torch.equal(logits(built), logits(model))


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_convert_folder_loads_everywhere(tmp_path, tie):
    """`lowbit convert HF_DIR OUT` (no trailing slash) writes a folder whose config.json says quant_method lowbit:
    transformers, lowbit.from_pretrained and lowbit.load all give the same logits."""
    from lowbit.cli import main

    float_model = llama(tie)
    float_model.save_pretrained(tmp_path / "fp")
    assert main(["convert", str(tmp_path / "fp"), str(tmp_path / "out"), "--bits", "4", "--block", "32",
                 "--quiet"]) == 0
    assert (tmp_path / "out" / "model.safetensors").is_file()
    qc = json.loads((tmp_path / "out" / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "lowbit" and qc["block_size"] == 32
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    ours = lowbit.from_pretrained(tmp_path / "out")
    # the reference: lowbit.load into the float model (lowbit.load looks for the tied lm_head in the file, so the
    # tied model takes it untied; from_pretrained re-ties it)
    direct = copy.deepcopy(float_model)
    if tie:
        direct.lm_head.weight = torch.nn.Parameter(direct.lm_head.weight.detach().clone())
        del direct.lm_head._parameters["weight"]
    direct = lowbit.load(direct, tmp_path / "out" / "model.safetensors")
    if tie:
        direct.lm_head.weight = direct.model.embed_tokens.weight
    assert type(ours) is transformers.LlamaForCausalLM
    if tie:
        assert ours.lm_head.weight is ours.model.embed_tokens.weight
    else:
        assert type(ours.lm_head).__name__ == "QuantLinear"  # convert quantizes an untied lm_head
    assert_same_weights(hf, direct)
    assert torch.equal(logits(hf), logits(direct)) and torch.equal(logits(ours), logits(direct))


def _drop_tensor(src, dst, name):
    """Copy a folder's model.safetensors without tensor `name` (metadata kept)."""
    import shutil

    from safetensors import safe_open
    from safetensors.torch import save_file

    shutil.copytree(src, dst)
    with safe_open(str(src / "model.safetensors"), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys() if k != name}
        meta = f.metadata()
    save_file(tensors, str(dst / "model.safetensors"), metadata=meta)


def test_folders_that_would_load_random_weights_are_refused(llama_folder, tmp_path):
    folder, _ = llama_folder
    lowbit.convert(folder, tmp_path / "q", QuantConfig(bits=4, block_size=32), progress=False)
    _drop_tensor(tmp_path / "q", tmp_path / "no_norm", "model.norm.weight")
    with pytest.raises(ValueError, match=r"no tensor for \['model.norm.weight'\].*at random"):
        transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "no_norm")
    _drop_tensor(folder, tmp_path / "fp_missing", "model.layers.0.mlp.up_proj.weight")
    with pytest.raises(ValueError, match="up_proj.weight.*at random"):
        transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "fp_missing",
                                                          quantization_config=lowbit.LowbitConfig())
    # config.json says lowbit, but the weights are the float ones
    (tmp_path / "fake").mkdir()
    for f in ("config.json", "model.safetensors"):
        (tmp_path / "fake" / f).write_bytes((tmp_path / "q" / f if f == "config.json" else folder / f).read_bytes())
    with pytest.raises(ValueError, match="no lowbit metadata"):
        transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "fake")
    # packed weights read by a class without those layers (headless: lm_head's packed tensors have no place)
    with pytest.raises(ValueError, match="lm_head"):
        transformers.LlamaModel.from_pretrained(tmp_path / "q")


def test_bad_configs():
    with pytest.raises(ValueError, match="bits"):
        lowbit.LowbitConfig(bits=9)
    with pytest.raises(ValueError, match="unknown keys \\['bit'\\]"):
        lowbit.LowbitConfig(bit=4)
    with pytest.raises(ValueError, match="memory"):
        lowbit.LowbitConfig(memory="tiny")
    with pytest.raises(ValueError, match="modules_to_not_convert"):
        lowbit.LowbitConfig(modules_to_not_convert="lm_head")
    with pytest.raises(ValueError, match="needs calibration data"):
        from lowbit.hf.quantizer import LowbitHfQuantizer

        LowbitHfQuantizer(lowbit.LowbitConfig(method="gptq"), pre_quantized=False)
    cfg = lowbit.LowbitConfig(bits=2, block_size=16, method="hqq", memory="low")
    assert lowbit.LowbitConfig.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()


def test_import_registers_lazily():
    """`import lowbit` does not import transformers; importing transformers' registry later registers lowbit."""
    import subprocess
    import sys

    code = ("import sys, lowbit\n"
            "assert 'transformers' not in sys.modules, 'import lowbit imported transformers'\n"
            "from transformers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING, AUTO_QUANTIZER_MAPPING\n"
            "assert AUTO_QUANTIZER_MAPPING['lowbit'].__name__ == 'LowbitHfQuantizer'\n"
            "assert AUTO_QUANTIZATION_CONFIG_MAPPING['lowbit'] is lowbit.LowbitConfig\n"
            "assert not any(type(f).__name__ == '_RegistryFinder' for f in sys.meta_path), 'hook left installed'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


def test_bad_folders_for_lowbit_from_pretrained_and_convert(llama_folder, tmp_path):
    from lowbit.cli.convert_model import build_hf_model

    folder, _ = llama_folder
    lowbit.convert(folder, tmp_path / "q", QuantConfig(bits=4, block_size=32), progress=False)
    with pytest.raises(ValueError, match="already quantized"):
        build_hf_model(str(tmp_path / "q"))  # convert --model FOLDER / --calib of a lowbit folder
    config = json.loads((tmp_path / "q" / "config.json").read_text())
    (tmp_path / "q" / "config.json").write_text(json.dumps({**config, "architectures": ["NopeForCausalLM"]}))
    with pytest.raises(ValueError, match="names architecture 'NopeForCausalLM'"):
        lowbit.from_pretrained(tmp_path / "q")
    (tmp_path / "q" / "config.json").write_text(json.dumps({**config, "quantization_config": {
        **config["quantization_config"], "memory": "tiny"}}))
    with pytest.raises(ValueError, match="quantization_config.*memory"):
        lowbit.from_pretrained(tmp_path / "q")
