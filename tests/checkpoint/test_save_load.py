"""save -> load -> save and convert -> load round trips on a model with Linear, Conv1d and a BiLSTM."""

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import lowbit
from lowbit.checkpoint import CheckpointError, convert, load, save
from lowbit.nn import QuantLinear, QuantLSTM
from lowbit.quant import QuantConfig
from lowbit.runtime import BackendConfig

CFG = QuantConfig(bits=4, block_size=32)


class Net(nn.Module):
    def __init__(self, extra: bool = False, width: int = 64):
        super().__init__()
        self.emb = nn.Embedding(50, 32)
        self.fc = nn.Linear(32, width)
        self.conv = nn.Conv1d(width, 32, 3, padding=1)
        self.norm = nn.LayerNorm(32)
        self.rnn = nn.LSTM(32, 32, bidirectional=True, batch_first=True)
        self.head = nn.Linear(64, 5)
        if extra:
            self.extra = nn.Linear(5, 5)

    def forward(self, x):
        h = self.fc(self.emb(x))
        h = self.conv(h.transpose(1, 2)).transpose(1, 2)
        h, _ = self.rnn(self.norm(h))
        return self.head(h)


@pytest.fixture
def float_net():
    torch.manual_seed(0)
    return Net().eval()


@pytest.fixture
def tokens(rng):
    return torch.randint(0, 50, (3, 11), generator=rng)


def _quantized(float_net, cfg=CFG):
    q = Net().eval()
    q.load_state_dict(float_net.state_dict())
    return lowbit.quantize(q, cfg)


@pytest.mark.parametrize("external", [False, True])
def test_save_load_save_identical_bytes_and_outputs(tmp_path, float_net, tokens, external):
    q = _quantized(float_net)
    with torch.no_grad():
        want = q(tokens)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    save(q, tmp_path / "a" / "m.safetensors", external_data=external)
    with torch.device("meta"):
        fresh = Net().eval()
    loaded = load(fresh, tmp_path / "a" / "m.safetensors")
    assert isinstance(loaded.fc, QuantLinear) and isinstance(loaded.rnn, QuantLSTM)
    assert all(t.device.type == "cpu" for t in loaded.state_dict().values())
    with torch.no_grad():
        assert torch.equal(loaded(tokens), want)
    save(loaded, tmp_path / "b" / "m.safetensors", external_data=external)
    for name in ["m.safetensors"] + (["m.safetensors.data"] if external else []):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == sorted(p.name for p in (tmp_path / "a").iterdir())


@pytest.mark.parametrize("cfg", [CFG, QuantConfig(bits=3, block_size=-1, method="hqq"),
                                 QuantConfig(bits=8, block_size=16, symmetric=True)])
def test_convert_load_equals_quantize_in_memory(tmp_path, float_net, tokens, cfg):
    save_file(float_net.state_dict(), str(tmp_path / "float.safetensors"))
    convert(tmp_path / "float.safetensors", tmp_path / "q.safetensors", cfg, progress=False)
    with torch.device("meta"):
        fresh = Net().eval()
    load(fresh, tmp_path / "q.safetensors")
    want = _quantized(float_net, cfg)
    assert set(lowbit.nn.quantized_weights(fresh)) == set(lowbit.nn.quantized_weights(want))
    with torch.no_grad():
        assert torch.equal(fresh(tokens), want(tokens))


def test_load_memory_low_and_fp16_storage(tmp_path, float_net, tokens):
    save_file(float_net.state_dict(), str(tmp_path / "float.safetensors"))
    convert(tmp_path / "float.safetensors", tmp_path / "q.safetensors", CFG, kept_float16=True, progress=False)
    normal = load(Net().eval(), tmp_path / "q.safetensors")
    low = load(Net().eval(), tmp_path / "q.safetensors", backend=BackendConfig(memory="low"))
    assert normal.norm.weight.dtype == torch.float32  # stored float16, back in the model's dtype
    assert torch.equal(normal.norm.weight, float_net.norm.weight.half().float())
    with torch.no_grad():
        y_low, y_normal = low(tokens), normal(tokens)
        # memory Low may compute with int8 activations on CPU: close to Normal, not bit-equal
        sqnr = 20 * torch.log10(y_normal.norm() / (y_low - y_normal).norm())
        assert sqnr > 30, sqnr
        ref = float_net(tokens)
        cos = torch.nn.functional.cosine_similarity(normal(tokens).flatten(), ref.flatten(), dim=0)
    assert cos > 0.99


def test_load_refuses_a_file_that_does_not_fit_the_model(tmp_path, float_net):
    save(_quantized(float_net), tmp_path / "q.safetensors")
    wrong = Net(width=48).eval()
    mismatch = r"tensor shape mismatch for 'conv.weight': \[32, 64, 3\] in .*q.safetensors, \[32, 48, 3\] in the model"
    with pytest.raises(CheckpointError, match=mismatch):
        load(wrong, tmp_path / "q.safetensors")
    assert isinstance(wrong.fc, nn.Linear)  # nothing was swapped
    with pytest.raises(CheckpointError, match="is missing tensor 'extra.bias' of the model"):
        load(Net(extra=True).eval(), tmp_path / "q.safetensors")
    sd = {k: v for k, v in float_net.state_dict().items() if k != "head.bias"}
    save_file(sd, str(tmp_path / "partial.safetensors"))
    convert(tmp_path / "partial.safetensors", tmp_path / "p.safetensors", CFG, progress=False)
    with pytest.raises(CheckpointError, match="p.safetensors is missing tensor 'head.bias'"):
        load(Net().eval(), tmp_path / "p.safetensors")

    class Smaller(Net):
        def __init__(self):
            super().__init__()
            del self.head

    with pytest.raises(CheckpointError, match="has tensor 'head.bias' that the model does not have"):
        load(Smaller().eval(), tmp_path / "q.safetensors")
    with pytest.raises(TypeError, match="needs the float nn.Module"):
        load({}, tmp_path / "q.safetensors")


def test_load_into_a_wrapper_under_a_prefix(tmp_path, float_net, tokens):
    """A checkpoint of the bare model loads into a wrapper that holds it as a submodule (e.g. SentenceTransformer)."""
    save_file(float_net.state_dict(), str(tmp_path / "float.safetensors"))
    convert(tmp_path / "float.safetensors", tmp_path / "q.safetensors", CFG, progress=False)
    wrapper = nn.Sequential(nn.ModuleDict({"inner": Net().eval()}))
    load(wrapper, tmp_path / "q.safetensors")
    assert isinstance(wrapper[0]["inner"].fc, QuantLinear)
    with torch.no_grad():
        assert torch.equal(wrapper[0]["inner"](tokens), _quantized(float_net)(tokens))


def test_file_tensors_of_non_persistent_buffers_are_ignored(tmp_path, float_net, tokens):
    """Older exports store buffers the model now keeps non-persistent (BERT's position_ids): they are skipped."""
    sd = dict(float_net.state_dict())
    sd["pos_ids"] = torch.arange(7)
    save_file(sd, str(tmp_path / "float.safetensors"))
    convert(tmp_path / "float.safetensors", tmp_path / "q.safetensors", CFG, progress=False)
    model = Net().eval()
    model.register_buffer("pos_ids", torch.arange(9), persistent=False)
    load(model, tmp_path / "q.safetensors")
    assert model.pos_ids.tolist() == list(range(9))
    with torch.no_grad():
        assert torch.equal(model(tokens), _quantized(float_net)(tokens))


def _state(model: nn.Module) -> dict:
    """What a failed load must leave as it was: every module object, and every tensor object with its dtype."""
    modules = {name: m for name, m in model.named_modules()}
    tensors = {k: (v, v.dtype) for k, v in model.state_dict(keep_vars=True).items()}
    return {"modules": modules, "tensors": tensors}


def _assert_unchanged(model: nn.Module, before: dict) -> None:
    after = _state(model)
    assert after["modules"].keys() == before["modules"].keys()
    assert all(after["modules"][k] is m for k, m in before["modules"].items())
    assert after["tensors"].keys() == before["tensors"].keys()
    assert all(after["tensors"][k][0] is t and after["tensors"][k][1] == d for k, (t, d) in before["tensors"].items())


def _file_of(q: nn.Module, path, **replace) -> None:
    """Save quantized model q as a dict, with some entries replaced (e.g. a bias of another dtype)."""
    quantized = lowbit.nn.quantized_weights(q)
    packed = {f"{p}_{f}" for p in quantized for f in ("packed", "scale", "zero")}
    state = {k: v for k, v in q.state_dict().items() if k not in packed}
    save({**state, **quantized, **replace}, path)


@pytest.mark.parametrize("bad", ["int bias", "quantized embedding", "lstm gate missing", "swap fails"])
def test_failed_load_leaves_the_model_as_it_was(tmp_path, float_net, monkeypatch, bad):
    """Validate everything, then swap: layers before the bad one in file order are not swapped either."""
    q = _quantized(float_net)
    path = tmp_path / "q.safetensors"
    if bad == "int bias":
        _file_of(q, path, **{"rnn.bias_hh_l0": torch.zeros(128, dtype=torch.int64)})
        match = "'rnn.bias_hh_l0' is I64 in the file but float32 in the model"
    elif bad == "quantized embedding":
        _file_of(q, path, **{"emb.weight": lowbit.quantize_weight(float_net.emb.weight.detach(), CFG)})
        match = r"quantized weights \['weight'\] belong to 'emb', which is Embedding"
    elif bad == "lstm gate missing":
        quantized = lowbit.nn.quantized_weights(q)
        _file_of(q, path, **{"rnn.weight_hh_l0": q.rnn.quantized_weight("weight_hh_l0").dequantize()})
        assert "rnn.weight_hh_l0" in quantized
        match = r"LSTM 'rnn' needs packed weights .*the file has \['weight_hh_l0_reverse', 'weight_ih_l0', "
    else:  # a failure nothing checks for: the swap itself raises half way (after conv, fc and head)
        save(q, path)

        def boom(*args, **kwargs):
            raise RuntimeError("out of memory while building the layer")

        monkeypatch.setattr(QuantLSTM, "from_float", boom)
        match = "q.safetensors: out of memory while building the layer"
    model = Net().eval()
    before = _state(model)
    with pytest.raises(CheckpointError, match=match):
        load(model, path)
    _assert_unchanged(model, before)
    if bad == "swap fails":
        monkeypatch.setattr(QuantLSTM, "from_float", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            load(model, path)
        _assert_unchanged(model, before)


def test_load_into_a_model_that_is_one_layer_returns_the_quantized_layer(tmp_path, rng):
    linear = nn.Linear(96, 32)
    qw = lowbit.quantize_weight(linear.weight.detach(), CFG)
    save({"weight": qw, "bias": linear.bias.detach()}, tmp_path / "q.safetensors")
    loaded = load(nn.Linear(96, 32), tmp_path / "q.safetensors")
    assert isinstance(loaded, QuantLinear) and torch.equal(loaded.bias, linear.bias)
    x = torch.randn(3, 96, generator=rng)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), x @ qw.dequantize().T + linear.bias, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("corrupt", ["bf16 scale", "zero dtype differs", "packed int8"])
def test_info_and_load_apply_the_same_validation(tmp_path, float_net, capsys, corrupt):
    """`lowbit info` refuses exactly what `lowbit.load` refuses, with the same message (info used to pass these)."""
    from lowbit.checkpoint import open_checkpoint
    from lowbit.checkpoint.header import build_metadata
    from lowbit.cli import main

    q = _quantized(float_net)
    _file_of(q, tmp_path / "q.safetensors")
    ckpt = open_checkpoint(tmp_path / "q.safetensors")
    tensors = {name: ckpt.tensor(name).clone() for name in ckpt.entries}
    if corrupt == "bf16 scale":
        tensors["fc.weight_scale"] = tensors["fc.weight_scale"].to(torch.bfloat16)
    elif corrupt == "zero dtype differs":
        tensors["fc.weight_zero"] = tensors["fc.weight_zero"].float()
    else:
        tensors["fc.weight_packed"] = tensors["fc.weight_packed"].view(torch.int8)
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=build_metadata(ckpt.quantized))
    code = main(["info", str(tmp_path / "bad.safetensors")])
    _, err = capsys.readouterr()
    assert code == 1 and err.startswith("lowbit: error: ") and len(err.strip().splitlines()) == 1
    with pytest.raises(CheckpointError, match="quantized weight 'fc.weight', tensor 'fc.weight_.*' has dtype") as e:
        load(Net().eval(), tmp_path / "bad.safetensors")
    assert err.strip() == f"lowbit: error: {e.value}"
