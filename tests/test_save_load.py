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
    convert(tmp_path / "float.safetensors", tmp_path / "q.safetensors", CFG, fp16=True, progress=False)
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
