"""method="recon" on whole models: blocks (transformer layer, conv -> BN -> act, LSTM), the packed model reproducing
the trained quantized outputs, accuracy on SeqNet beside GPTQ/RTN, determinism, bad inputs, the CLI."""

import copy
import json
import textwrap

import pytest
import torch
from seqnet import accuracy, task, train_seqnet
from torch import nn

import lowbit
from lowbit.cli import main
from lowbit.methods.recon.capture import relative_error
from lowbit.methods.recon.train import split_items
from lowbit.nn import quantized_weights
from lowbit.quant import QuantConfig


class TinyLayer(nn.Module):
    """A pre-norm transformer layer (attention + MLP) of plain Linear layers."""

    def __init__(self, d=32, heads=4):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.up, self.down = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x, mask=None):
        b, t, d = x.shape
        h = self.norm1(x)
        q, k, v = (f(h).reshape(b, t, self.heads, -1).transpose(1, 2) for f in (self.q, self.k, self.v))
        att = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.o(att.transpose(1, 2).reshape(b, t, d))
        return x + self.down(torch.nn.functional.gelu(self.up(self.norm2(x))))


class TinyNet(nn.Module):
    def __init__(self, d=32, layers=2):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Linear(8, d)
        self.layers = nn.ModuleList(TinyLayer(d) for _ in range(layers))
        self.head = nn.Linear(d, 4)

    def forward(self, x, mask=None):
        h = self.embed(x)
        for layer in self.layers:
            h = layer(h, mask=mask)
        return self.head(h)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest)


def _items(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 6, 8, generator=g) for _ in range(n)]


def _recon(model, cal, **fields):
    cfg = QuantConfig(bits=4, block_size=16, method="recon", **{"recon_steps": 20, **fields})
    return lowbit.quantize(copy.deepcopy(model), cfg, calibration=cal, min_weights=0, progress=False)


@pytest.fixture(scope="module")
def seqnet():
    model, gen = train_seqnet()
    return model, [task(gen, 8)[0] for _ in range(20)], task(gen, 256)


def test_seqnet_blocks_and_accuracy_beside_gptq_and_rtn(seqnet, capsys):
    model, cal, test = seqnet
    fp32 = accuracy(model, test)
    cfg = dict(bits=4, block_size=64)
    rtn = accuracy(lowbit.quantize(copy.deepcopy(model), QuantConfig(**cfg), min_weights=0), test)
    gptq = accuracy(lowbit.quantize(copy.deepcopy(model), QuantConfig(**cfg, method="gptq"), calibration=cal,
                                    min_weights=0, progress=False), test)
    q = lowbit.quantize(copy.deepcopy(model), QuantConfig(**cfg, method="recon", recon_steps=60), calibration=cal,
                        min_weights=0, progress=False)
    recon = accuracy(q, test)
    with capsys.disabled():
        print(f"\nSeqNet int4 b64 accuracy: fp32 {fp32:.4f}, rtn {rtn:.4f}, gptq {gptq:.4f}, recon {recon:.4f}")
    s = q.lowbit_summary
    kinds = {b.name: b.kind for b in s.blocks}
    assert kinds == {"conv+bn": "conv-bn-act", "mix": "layer", "lstm": "lstm", "fc": "layer"}
    assert any("recon blocks: conv+bn (conv-bn-act" in n for n in s.notes)
    assert all(b.holdout_best <= b.holdout_start for b in s.blocks)
    assert {e.name for e in s.errors} >= {"conv.weight", "mix.weight", "lstm.weight_hh_l1_reverse", "fc.weight"}
    kept = s.fallbacks  # blocks whose RTN start beat the trained block on held-out data keep it, named
    assert len(kept) < len(s.blocks), kept
    assert all(e.method == ("recon" if e.name not in kept else "rtn") and 0 < e.after < 2 * e.before
               for e in s.errors), ([(e.name, e.method, e.before, e.after) for e in s.errors], kept)
    assert recon >= max(rtn, gptq) - 0.005 and recon >= fp32 - 0.02


@pytest.mark.parametrize("unit", ["model", "block"])
def test_packed_model_reproduces_the_trained_outputs(tmp_path, unit):
    """The held-out error the training reports (hard fake-quantized weights) is what the packed model gives, through
    the kernels of every memory mode and after a checkpoint round trip."""
    model, cal = TinyNet().eval(), _items(20)
    q = _recon(model, cal, recon_unit=unit, recon_steps=30)
    last = q.lowbit_summary.blocks[-1]
    assert last.steps > 0
    _, hold = split_items(20, 0)
    with torch.no_grad():
        targets = [model(cal[i]) for i in hold]

        def held_out_error(m):
            return torch.stack([relative_error(m(cal[i]), t) for i, t in zip(hold, targets, strict=True)]).mean()

        # unit="model": the last block is the whole model, so its held-out error is the packed model's
        ref = last.holdout_best if unit == "model" else held_out_error(q).item()
        for memory in ("normal", "high", "low"):
            lowbit.set_backend(q, lowbit.BackendConfig(memory=memory))
            assert held_out_error(q).item() == pytest.approx(ref, rel=1e-4), memory
        path = tmp_path / "m.safetensors"
        lowbit.save(q, path)
        loaded = lowbit.load(TinyNet().eval(), path)
        x = cal[hold[0]]
        torch.testing.assert_close(loaded(x), q(x), rtol=1e-5, atol=1e-6)
    methods = {qw.method for qw in quantized_weights(loaded).values()}
    # the model-level check keeps the learned weights unless the GPTQ start gives a lower held-out output error;
    # a block whose plain RTN weights have the lower held-out error keeps them (never worse than the data-free start)
    note = next(n for n in q.lowbit_summary.notes if n.startswith("model held-out output error"))
    blocks = q.lowbit_summary.blocks
    per_block = {"rtn" if b.note.startswith("kept rtn") else "recon" for b in blocks}
    assert methods == ({"gptq"} if "kept the start" in note else per_block)
    assert ("rtn" in per_block) == bool(q.lowbit_summary.fallbacks)


def test_transformer_layers_found_and_better_than_the_start():
    model, cal = TinyNet().eval(), _items(20)
    q = _recon(model, cal, recon_init="rtn", recon_steps=40)
    blocks = q.lowbit_summary.blocks
    assert [(b.name, b.kind, b.layers) for b in blocks] == [
        ("embed", "layer", 1), ("layers.0", "transformer layer", 6), ("layers.1", "transformer layer", 6),
        ("head", "layer", 1)]
    assert sum(b.holdout_best for b in blocks) < 0.9 * sum(b.holdout_start for b in blocks)
    named = _recon(model, cal, recon_blocks=["layers.1"], recon_steps=5).lowbit_summary.blocks
    assert [(b.name, b.kind) for b in named] == [("embed", "layer"), ("layers.0.q", "layer"), ("layers.0.k", "layer"),
                                                 ("layers.0.v", "layer"), ("layers.0.o", "layer"),
                                                 ("layers.0.up", "layer"), ("layers.0.down", "layer"),
                                                 ("layers.1", "named"), ("head", "layer")]


def test_adaround_rounding_ends_hard():
    model, cal = TinyNet().eval(), _items(20)
    q = _recon(model, cal, recon_learn=("rounding", "scales"), recon_init="rtn", recon_unit="layer", recon_steps=40)
    assert all(b.steps == 40 for b in q.lowbit_summary.blocks)  # AdaRound runs to the end of its anneal
    assert all(b.holdout_best <= b.holdout_start for b in q.lowbit_summary.blocks)


def test_deterministic_for_a_seed():
    model, cal = TinyNet().eval(), _items(20)
    a, b = (quantized_weights(_recon(model, cal, recon_steps=15)) for _ in range(2))
    assert a.keys() == b.keys()
    for name in a:
        for field, t in a[name].tensors().items():
            assert torch.equal(t, b[name].tensors()[field]), (name, field)


def test_final_distillation_pass():
    model, cal = TinyNet().eval(), _items(20)
    q = _recon(model, cal, recon_steps=10, recon_final_steps=20)
    last = q.lowbit_summary.blocks[-1]
    assert last.kind == "final distillation" and last.layers == 14
    assert last.holdout_best <= last.holdout_start


def test_eight_batches_hold_back_samples_within_them():
    """Before: 8 calibration batches were refused (a tenth of the items is not one item); now a tenth of each batch's
    samples is held out, and the held-out rows never enter a training loss."""
    from lowbit.calib import as_calibration
    from lowbit.methods.recon.train import make_split

    items = list(as_calibration(_items(8)))
    split = make_split(items, 0)
    assert split.train == split.hold == list(range(8))
    for tm, hm in zip(split.train_masks, split.hold_masks, strict=True):
        assert tm.shape == hm.shape == (4,) and int(hm.sum()) == 1 and not bool((tm & hm).any())
    q = _recon(TinyNet().eval(), _items(8), recon_steps=4)
    assert len(q.lowbit_summary.blocks) >= 2 and all(b.holdout_best <= b.holdout_start for b in q.lowbit_summary.blocks)


def test_calibration_too_small_unknown_block_and_nothing_changed():
    model = TinyNet().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="holds back a tenth .* only 9"):  # 9 items of one sample: nothing to hold
        lowbit.quantize(model, QuantConfig(method="recon"), calibration=[x[:1] for x in _items(9)], min_weights=0,
                        progress=False)
    with pytest.raises(ValueError, match="no module 'layers.7'; did you mean 'layers.1'"):
        lowbit.quantize(model, QuantConfig(method="recon", recon_blocks=["layers.7"]), calibration=_items(20),
                        min_weights=0, progress=False)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) and not after[k].requires_grad for k in before)
    assert all(p.requires_grad for p in model.parameters())  # requires_grad restored


class Diverges(nn.Module):
    """Linear -> Trap -> Linear, where Trap turns its input to NaN from the 6th training step on: a loss that goes
    NaN mid-training, deterministically."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.trap, self.b = nn.Linear(16, 32), Trap(), nn.Linear(32, 4)

    def forward(self, x):
        return self.b(self.trap(self.a(x)))


class Trap(nn.Module):
    def __init__(self):
        super().__init__()
        self.training_calls = 0

    def forward(self, x):
        self.training_calls += torch.is_grad_enabled()
        return x * float("nan") if self.training_calls > 5 else x


def test_non_finite_loss_restores_the_last_good_step_and_warns():
    model, cal = Diverges().eval(), [torch.randn(4, 16, generator=torch.Generator().manual_seed(i)) for i in range(20)]
    with pytest.warns(RuntimeWarning, match="non-finite loss at step 6: stopped and restored step"):
        q = _recon(model, cal, recon_unit="model", recon_steps=40, recon_init="rtn")
    block = q.lowbit_summary.blocks[0]
    assert "non-finite" in block.note and block.steps == 5 and block.holdout_best <= block.holdout_start
    q.trap.training_calls = 0
    with torch.no_grad():
        assert bool(torch.isfinite(q(cal[0])).all())


MODULE = textwrap.dedent('''
    import torch
    from torch import nn


    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv1d(8, 64, 3, padding=1), nn.BatchNorm1d(64), nn.ReLU(), nn.Flatten(),
                             nn.Linear(64 * 16, 32), nn.ReLU(), nn.Linear(32, 64)).eval()


    def batches():
        g = torch.Generator().manual_seed(1)
        return [torch.randn(4, 8, 16, generator=g) for _ in range(12)]


    def too_few():
        return [b[:1] for b in batches()[:5]]
''')


def test_cli_convert_method_recon(tmp_path, monkeypatch, capsys):
    (tmp_path / "recon_user_mod.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    user = importlib.import_module("recon_user_mod")
    out = tmp_path / "m.safetensors"
    args = ["convert", "--model", "recon_user_mod:build", "--method", "recon", "--steps", "5", "--bits", "4",
            "--block", "32", "--quiet"]
    assert main([*args, "--calib", "recon_user_mod:batches", "--json", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(b["name"], b["kind"]) for b in report["blocks"]] == [("0+1+2", "conv-bn-act"), ("4", "layer"),
                                                                  ("6", "layer")]
    kept = {r["method"] for r in report["layers"]} - {"recon"}  # a block whose RTN is better on held-out data
    assert kept <= {"rtn"} and len(report["layers"]) == 3 and bool(kept) == bool(report["kept data-free"])
    model = lowbit.load(user.build(), out)
    ref = lowbit.quantize(user.build(), QuantConfig(bits=4, block_size=32, method="recon", recon_steps=5),
                          calibration=user.batches(), progress=False)
    x = user.batches()[0]
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))
    bad = tmp_path / "bad.safetensors"
    assert main([*args, "--calib", "recon_user_mod:too_few", str(bad)]) == 1
    assert "tenth" in capsys.readouterr().err and not bad.exists()
