"""`convert`: every source format, the selection rule, overrides, --fp16, external data, atomicity."""

import importlib
import json

import pytest
import torch
from safetensors.torch import save_file

from lowbit.checkpoint import CheckpointError, convert, load_overrides, open_checkpoint, save
from lowbit.checkpoint.overrides import never_quantized
from lowbit.quant import QuantConfig, quantize_weight

CFG = QuantConfig(bits=4, block_size=64)
convert_mod = importlib.import_module("lowbit.checkpoint.convert")  # the package exports a function of that name


@pytest.fixture
def float_state(rng):
    """A small float checkpoint with every kind of tensor the selection rule distinguishes."""
    r = lambda *s: torch.randn(*s, generator=rng)  # noqa: E731
    return {
        "embeddings.word_embeddings.weight": r(200, 32),
        "encoder.0.fc.weight": r(48, 80),
        "encoder.0.fc.bias": r(48),
        "encoder.0.LayerNorm.weight": r(48),
        "encoder.1.fc.weight": r(40, 48),
        "conv.weight": r(16, 8, 3, 3),
        "rnn.weight_ih_l0": r(64, 32),
        "rnn.weight_hh_l0_reverse": r(64, 16),
        "tiny.weight": r(8, 16),
        "head.weight": r(10, 130),
        "position_ids": torch.arange(12).view(1, 12),
    }


QUANTIZED = {"encoder.0.fc.weight", "encoder.1.fc.weight", "conv.weight", "rnn.weight_ih_l0",
             "rnn.weight_hh_l0_reverse", "head.weight"}


@pytest.fixture
def st_file(tmp_path, float_state):
    path = tmp_path / "model.safetensors"
    save_file(float_state, str(path))
    return path


def test_selection_rule_and_exact_quantization(tmp_path, st_file, float_state):
    summary = convert(st_file, tmp_path / "out.safetensors", CFG, progress=False)
    ckpt = open_checkpoint(tmp_path / "out.safetensors")
    assert set(ckpt.quantized) == QUANTIZED
    assert summary.n_quantized == len(QUANTIZED) and summary.n_kept == len(float_state) - len(QUANTIZED)
    reasons = {p.source.name: p.reason for p in summary.plans}
    assert reasons["embeddings.word_embeddings.weight"] == "embedding or norm"
    assert reasons["tiny.weight"] == "< 1024 elements" and reasons["encoder.0.fc.bias"] == "rank < 2"
    assert reasons["position_ids"] == "int64 tensor"
    for name in QUANTIZED:
        want = quantize_weight(float_state[name], CFG)
        got = ckpt.quantized_weight(name)
        assert got.metadata() == want.metadata()
        for f, t in want.tensors().items():
            assert torch.equal(got.tensors()[f], t), (name, f)
    for name in ckpt.floats:
        assert torch.equal(ckpt.tensor(name), float_state[name])
    assert summary.bytes_before == sum(t.nbytes for t in float_state.values())
    assert summary.bytes_after == sum(e.nbytes for e in ckpt.entries.values())
    assert summary.ratio > 2


def test_all_sources_give_identical_files(tmp_path, st_file, float_state):
    names = sorted(float_state)
    half = len(names) // 2
    shards = {"a.safetensors": names[:half], "b.safetensors": names[half:]}
    for shard, keys in shards.items():
        save_file({k: float_state[k] for k in keys}, str(tmp_path / shard))
    index = {"metadata": {}, "weight_map": {k: s for s, keys in shards.items() for k in keys}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    torch.save(float_state, tmp_path / "model.bin")
    torch.save({"state_dict": float_state}, tmp_path / "wrapped.pt")
    outs = []
    for i, src in enumerate([st_file, tmp_path / "model.safetensors.index.json", tmp_path / "model.bin",
                             tmp_path / "wrapped.pt"]):
        convert(src, tmp_path / f"out{i}.safetensors", CFG, progress=False)
        outs.append((tmp_path / f"out{i}.safetensors").read_bytes())
    assert all(o == outs[0] for o in outs)


def test_never_quantized_rule():
    f = torch.float32
    assert never_quantized("bert.embeddings.word_embeddings.weight", f, (10, 4)) == "embedding or norm"
    assert never_quantized("transformer.wte.weight", f, (10, 4)) == "embedding or norm"
    assert never_quantized("h.0.ln_f.norm.weight", f, (10, 4)) == "embedding or norm"
    assert never_quantized("fc.bias", f, (10,)) == "rank < 2"
    assert never_quantized("fc.scale", f, (10, 4)) == "not a weight"
    assert never_quantized("q.weight", torch.int8, (10, 4)) == "int8 tensor"
    assert never_quantized("lstm.weight_hh_l1_reverse", f, (10, 4)) is None


def test_skip_and_overrides(tmp_path, st_file, float_state):
    layers = {"version": 1, "layers": {
        "encoder.0.fc": {"bits": 8, "block_size": -1},
        "encoder.*.fc": {"bits": 3, "method": "hqq"},
        "rnn.weight_ih_l0": "skip",
        "rnn.weight_hh_l0_reverse": {"bits": 0},
        "conv.weight": {"bits": 16},
        "tiny": 2,
    }}
    cfg_file = tmp_path / "layers.json"
    cfg_file.write_text(json.dumps(layers))
    convert(st_file, tmp_path / "o.safetensors", CFG, overrides=cfg_file, skip=["head"], progress=False)
    ckpt = open_checkpoint(tmp_path / "o.safetensors")
    q = ckpt.quantized
    assert set(q) == {"encoder.0.fc.weight", "encoder.1.fc.weight", "conv.weight", "tiny.weight"}
    assert (q["encoder.0.fc.weight"]["bits"], q["encoder.0.fc.weight"]["block_size"]) == (8, -1)
    assert (q["encoder.1.fc.weight"]["bits"], q["encoder.1.fc.weight"]["method"]) == (3, "hqq")
    assert q["conv.weight"]["method"] == "fp16" and ckpt.entries["conv.weight_packed"].dtype == torch.float16
    assert torch.equal(ckpt.quantized_weight("conv.weight").dequantize(), float_state["conv.weight"].half().float())
    assert q["tiny.weight"]["bits"] == 2  # an explicit override quantizes below the size threshold
    for kept in ("rnn.weight_ih_l0", "rnn.weight_hh_l0_reverse", "head.weight"):
        assert torch.equal(ckpt.tensor(kept), float_state[kept])


@pytest.mark.parametrize("layers, match", [
    ({"encoder.9.fc": {"bits": 4}}, "entry 'encoder.9.fc' matches no layer in the checkpoint"),
    ({"decoder.*": {"bits": 4}}, "entry 'decoder.\\*' matches no layer"),
    ({"head": {"bits": 9}}, "entry 'head' has bits=9, out of range: use 2..8, 16"),
    ({"head": {"bits": 1}}, "entry 'head' has bits=1, out of range"),
    ({"head": {"bits": "4"}}, "entry 'head' has bits='4', out of range"),
    ({"head": {"bitz": 4}}, "entry 'head' has unknown keys \\['bitz'\\]"),
    ({"head": {"block_size": 10}}, "entry 'head': block_size=10 is not supported"),
    ({"head": [4]}, "entry 'head' must be an object, 'skip' or 0"),
    ({"encoder.0.fc.bias": {"bits": 4}}, "entry 'encoder.0.fc.bias' names only tensors that are never quantized "
                                         r"\('encoder.0.fc.bias': rank < 2\)"),
    ({"encoder.*.LayerNorm": {"bits": 8}}, "entry 'encoder.\\*.LayerNorm' names only tensors that are never quantized"),
    ({"embeddings.word_embeddings": 4}, "names only tensors that are never quantized .*embedding or norm"),
    ({"position_ids": {"bits": 8}}, "names only tensors that are never quantized .*int64 tensor"),
])
def test_override_errors_name_the_entry(tmp_path, st_file, layers, match):
    cfg_file = tmp_path / "layers.json"
    cfg_file.write_text(json.dumps({"layers": layers}))
    with pytest.raises(CheckpointError, match=match):
        convert(st_file, tmp_path / "o.safetensors", CFG, overrides=cfg_file, progress=False)
    assert not (tmp_path / "o.safetensors").exists()


def test_override_file_errors(tmp_path):
    with pytest.raises(CheckpointError, match="version 2; this lowbit reads version 1"):
        load_overrides({"version": 2, "layers": {}}, CFG)
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(CheckpointError, match="bad.json is not valid JSON"):
        load_overrides(tmp_path / "bad.json", CFG)
    with pytest.raises(FileNotFoundError, match="overrides file .* does not exist"):
        load_overrides(tmp_path / "missing.json", CFG)
    with pytest.raises(CheckpointError, match="must hold a JSON object"):
        load_overrides([1], CFG)


def test_fp16_and_external_data(tmp_path, st_file, float_state):
    convert(st_file, tmp_path / "o.safetensors", CFG, kept_float16=True, external_data=True, progress=False)
    ckpt = open_checkpoint(tmp_path / "o.safetensors")
    assert ckpt.external is not None and (tmp_path / "o.safetensors").stat().st_size < 4096
    assert ckpt.tensor("encoder.0.fc.bias").dtype == torch.float16
    assert torch.equal(ckpt.tensor("encoder.0.fc.bias"), float_state["encoder.0.fc.bias"].half())
    assert ckpt.tensor("position_ids").dtype == torch.int64


def test_interrupted_conversion_keeps_old_output(tmp_path, st_file, monkeypatch):
    out = tmp_path / "out.safetensors"
    save({"old": torch.ones(3)}, out)
    old = out.read_bytes()
    calls = []

    def failing(w, cfg, name="weight"):
        calls.append(name)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return quantize_weight(w, cfg, name)

    monkeypatch.setattr(convert_mod, "quantize_weight", failing)
    with pytest.raises(KeyboardInterrupt):
        convert(st_file, out, CFG, progress=False)
    assert out.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "out.safetensors"]


def test_source_errors(tmp_path, st_file):
    with pytest.raises(FileNotFoundError, match="input checkpoint .*none.safetensors does not exist"):
        convert(tmp_path / "none.safetensors", tmp_path / "o.safetensors", CFG)
    (tmp_path / "x.onnx").write_bytes(b"123")
    with pytest.raises(CheckpointError, match="unknown checkpoint type"):
        convert(tmp_path / "x.onnx", tmp_path / "o.safetensors", CFG)
    (tmp_path / "bad.safetensors").write_bytes(b"123456789")
    with pytest.raises(CheckpointError, match="truncated or not a safetensors file"):
        convert(tmp_path / "bad.safetensors", tmp_path / "o.safetensors", CFG)
    convert(st_file, tmp_path / "o.safetensors", CFG, progress=False)
    with pytest.raises(CheckpointError, match="already a lowbit checkpoint"):
        convert(tmp_path / "o.safetensors", tmp_path / "o2.safetensors", CFG)
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        convert(tmp_path / "list.pt", tmp_path / "o2.safetensors", CFG)
    (tmp_path / "idx.index.json").write_text("{}")
    with pytest.raises(CheckpointError, match="need a 'weight_map' object"):
        convert(tmp_path / "idx.index.json", tmp_path / "o2.safetensors", CFG)
    with pytest.raises(FileNotFoundError, match="output directory .* does not exist"):
        convert(st_file, tmp_path / "no" / "o.safetensors", CFG, progress=False)


def test_skip_patterns_must_match(tmp_path, st_file, float_state):
    with pytest.raises(CheckpointError, match=r"skip pattern 'decoder.\*' matches no tensor or layer"):
        convert(st_file, tmp_path / "o.safetensors", CFG, skip=["head", "decoder.*"], progress=False)
    with pytest.raises(CheckpointError, match="skip pattern 'encoder.0.fc.weight_packed' matches no tensor"):
        convert(st_file, tmp_path / "o.safetensors", CFG, skip="encoder.0.fc.weight_packed", progress=False)
    assert not (tmp_path / "o.safetensors").exists()
    summary = convert(st_file, tmp_path / "o.safetensors", CFG, skip=["encoder.0.fc.bias", "conv"], progress=False)
    reasons = {p.source.name: p.reason for p in summary.plans}
    assert reasons["conv.weight"] == "skipped" and reasons["encoder.0.fc.bias"] == "rank < 2"
    assert "encoder.0.fc.weight" in open_checkpoint(tmp_path / "o.safetensors").quantized
    override_skip = tmp_path / "layers.json"  # a 'skip' entry for a bias is what happens anyway: accepted
    override_skip.write_text(json.dumps({"layers": {"encoder.0.fc.bias": "skip"}}))
    convert(st_file, tmp_path / "o.safetensors", CFG, overrides=override_skip, progress=False)


def test_other_safetensors_dtypes_are_kept_as_they_are(tmp_path, float_state, rng):
    """float8, uint16..64 tensors (issue 13) are read and stored untouched, never quantized."""
    extra = {"fp8.weight": torch.randn(64, 64, generator=rng).to(torch.float8_e4m3fn),
             "codes.weight": torch.randint(0, 1 << 15, (64, 64), generator=rng).to(torch.uint16),
             "ids": torch.randint(0, 1 << 30, (7,), generator=rng).to(torch.uint64)}
    save_file({**float_state, **extra}, str(tmp_path / "m.safetensors"))
    summary = convert(tmp_path / "m.safetensors", tmp_path / "o.safetensors", CFG, kept_float16=True, progress=False)
    reasons = {p.source.name: p.reason for p in summary.plans}
    assert reasons["fp8.weight"] == "float8_e4m3fn tensor" and reasons["codes.weight"] == "uint16 tensor"
    ckpt = open_checkpoint(tmp_path / "o.safetensors")
    assert set(ckpt.quantized) == QUANTIZED
    for name, t in extra.items():
        got = ckpt.tensor(name)
        assert got.dtype == t.dtype and torch.equal(got.view(torch.uint8), t.view(torch.uint8)), name


def test_overlapping_source_tensors_are_refused(tmp_path, st_file):
    """Two tensors over the same bytes would convert into wrong weights (the safetensors library refuses them)."""
    import struct

    data = st_file.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    a, b = header["encoder.0.fc.weight"], header["encoder.1.fc.weight"]
    b["data_offsets"] = [a["data_offsets"][0], a["data_offsets"][0] + b["data_offsets"][1] - b["data_offsets"][0]]
    raw = json.dumps(header).encode()
    (tmp_path / "bad.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])
    with pytest.raises(CheckpointError, match="bad.safetensors has a corrupted header: tensor .* overlaps tensor"):
        convert(tmp_path / "bad.safetensors", tmp_path / "o.safetensors", CFG, progress=False)
    assert not (tmp_path / "o.safetensors").exists()
