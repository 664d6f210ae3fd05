"""Exports read by the consumer's own loader: `convert --format compressed-tensors` -> `export` -> transformers'
`from_pretrained`, logits compared with lowbit's model of the same checkpoint (Llama- and BERT-shaped models built
from a config here and saved with save_pretrained); sharded outputs; names checked against config.json."""

import json

import pytest
import torch

import lowbit
from lowbit.checkpoint import CheckpointError, export, save
from lowbit.cli import main as cli_main

transformers = pytest.importorskip("transformers", reason="the consumer tests need transformers (the hf extra)")
pytest.importorskip("compressed_tensors", reason="transformers loads these exports through compressed-tensors")

LLAMA = dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=32)
BERT = dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
            max_position_embeddings=32)


def _save_model(folder, kind: str):
    torch.manual_seed(0)
    if kind == "llama":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA))
    else:
        model = transformers.BertModel(transformers.BertConfig(**BERT))
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return _save_model(tmp_path_factory.mktemp("hf") / "llama", "llama")


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return _save_model(tmp_path_factory.mktemp("hf") / "bert", "bert")


def _fresh(folder):
    """The float architecture of `folder`, randomly initialised (lowbit.load replaces every tensor)."""
    config = transformers.AutoConfig.from_pretrained(folder)
    cls = getattr(transformers, config.architectures[0])
    torch.manual_seed(1)
    return cls(config).eval()


def _logits(model, ids):
    with torch.no_grad():
        out = model(ids)
    return (out.logits if hasattr(out, "logits") else out.last_hidden_state).float()


def _agree(a, b):
    assert a.shape == b.shape
    assert (a - b).abs().max() <= 1e-4 * max(1.0, float(b.abs().max())), float((a - b).abs().max())


def _convert(src, out, bits, block, symmetric, *extra):
    args = ["convert", str(src), f"{out}/", "--bits", str(bits), "--block", str(block), "--format",
            "compressed-tensors", "--quiet", *extra] + (["--symmetric"] if symmetric else [])
    assert cli_main(args) == 0


IDS = torch.tensor([[3, 17, 42, 8, 91, 5, 23, 60, 11, 2]])


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("block", [32, -1])
@pytest.mark.parametrize("symmetric", [True, False])
def test_llama_export_loads_in_transformers(tmp_path, llama_dir, bits, block, symmetric, one_thread):
    _convert(llama_dir, tmp_path / "q", bits, block, symmetric)
    summary = export(tmp_path / "q", tmp_path / "ct", progress=False)
    assert summary.count("packed") == len(summary.plans) == 8  # 7 Linear + lm_head: every one packed as is
    assert all(p.rel_error == 0 for p in summary.plans)
    ours = lowbit.load(_fresh(llama_dir), tmp_path / "q")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ct").eval()
    _agree(_logits(theirs, IDS), _logits(ours, IDS))
    floating = _logits(transformers.AutoModelForCausalLM.from_pretrained(llama_dir), IDS)
    assert (_logits(theirs, IDS) - floating).abs().max() > 0  # really the quantized weights


@pytest.mark.parametrize("bits,block,symmetric", [(4, 32, False), (8, -1, True)])
def test_bert_export_loads_in_transformers(tmp_path, bert_dir, bits, block, symmetric, one_thread):
    _convert(bert_dir, tmp_path / "q", bits, block, symmetric)
    summary = export(tmp_path / "q", tmp_path / "ct", progress=False)
    assert summary.count("packed") == len(summary.plans) == 7  # q, k, v, attn out, inter, out, pooler
    ours = lowbit.load(_fresh(bert_dir), tmp_path / "q")
    theirs = transformers.AutoModel.from_pretrained(tmp_path / "ct").eval()
    _agree(_logits(theirs, IDS), _logits(ours, IDS))


def test_sharded_convert_and_export_load(tmp_path, llama_dir, one_thread):
    """--max-shard-size: lowbit reads its sharded folder, transformers reads the sharded export; same logits."""
    _convert(llama_dir, tmp_path / "q", 4, 32, False, "--max-shard-size", "20KB")
    index = json.loads((tmp_path / "q" / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and all((tmp_path / "q" / s).is_file() for s in shards)
    assert not (tmp_path / "q" / "model.safetensors").exists()
    _convert(llama_dir, tmp_path / "whole", 4, 32, False)
    whole = _logits(lowbit.load(_fresh(llama_dir), tmp_path / "whole"), IDS)
    assert torch.equal(_logits(lowbit.from_pretrained(tmp_path / "q", model=_fresh(llama_dir)), IDS), whole)
    assert cli_main(["export", str(tmp_path / "q"), str(tmp_path / "ct"), "--max-shard-size", "30KB",
                     "--quiet"]) == 0
    index = json.loads((tmp_path / "ct" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1 and index["metadata"]["total_size"] > 0
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ct").eval()
    _agree(_logits(theirs, IDS), whole)


def test_wrapper_prefix_is_mapped_and_a_mismatch_refused(tmp_path, llama_dir, one_thread):
    """Issue 26 item 9: names `0.model.<hf name>` (a wrapped model) are exported as the HF names; a checkpoint of
    another architecture is refused naming the first missing and unexpected names."""
    _convert(llama_dir, tmp_path / "q", 4, 32, True)
    model = lowbit.load(_fresh(llama_dir), tmp_path / "q")
    wrapped = torch.nn.Sequential(torch.nn.Module())
    wrapped[0].model = model
    (tmp_path / "w").mkdir()
    save(wrapped, tmp_path / "w" / "model.safetensors")
    summary = export(tmp_path / "w", tmp_path / "ct", config=llama_dir / "config.json", progress=False)
    assert any("'0.model.'" in n for n in summary.notes)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ct").eval()
    _agree(_logits(theirs, IDS), _logits(model, IDS))
    with pytest.raises(CheckpointError, match="not those of the LlamaForCausalLM .* missing .*layers.1.*unexpected"):
        export(tmp_path / "w", tmp_path / "bad", config=_two_layer_config(tmp_path, llama_dir), progress=False)
    assert not (tmp_path / "bad").exists()


def _two_layer_config(tmp_path, llama_dir):
    """The same architecture with one layer more than the checkpoint has: its names go missing."""
    config = json.loads((llama_dir / "config.json").read_text())
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 2}))
    return tmp_path / "two" / "config.json"
