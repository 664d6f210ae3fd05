"""lowbit.calib: calibration sources, the capture pass and its errors."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from lowbit.calib import (
    CalibrationError,
    CalibrationSet,
    Item,
    as_calibration,
    ensure_eval,
    run_pass,
    trace_calls,
)
from lowbit.calib.minilm import pick_sentences
from lowbit.calib.sentences import CALIBRATION_SENTENCES
from lowbit.models import SENTENCES


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.k, self.out = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 4)

    def forward(self, x, scale=1.0):
        return self.out(self.q(x) * self.k(x) * scale)


def _args(cal):
    return [(it.args, it.kwargs) for it in cal]


def test_item_interpretation():
    x = torch.ones(2)
    assert Item.of((x, 3)).args == (x, 3)
    assert Item.of({"x": x}).kwargs == {"x": x} and Item.of({"x": x}).args == ()
    assert Item.of(x).args == (x,)
    assert Item.of(({"a": x},)).args[0] == {"a": x}  # a dict passed whole as one argument
    item = Item.of(({"a": x},))
    args, _ = item.fresh()
    args[0]["b"] = 1
    assert "b" not in item.args[0]  # the model may add keys to a dict input; the item stays as it was


def test_iterable_generator_and_limit():
    gen = (torch.full((1, 8), float(i)) for i in range(10))
    cal = as_calibration(gen, limit=3)
    assert len(cal) == 3 and [a[0][0, 0].item() for a, _ in _args(cal)] == [0.0, 1.0, 2.0]
    assert len(list(cal)) == 3  # re-iterable: one iteration per pass
    assert len(as_calibration(cal, limit=2)) == 2 and as_calibration(cal) is cal


def test_folder_of_files(tmp_path):
    torch.save(torch.zeros(1, 8), tmp_path / "a.pt")
    np.save(tmp_path / "b.npy", np.ones((1, 8), dtype=np.float32))
    save_file({"0": torch.full((1, 8), 2.0), "1": torch.tensor(0.5)}, str(tmp_path / "c.safetensors"))
    save_file({"x": torch.full((1, 8), 3.0)}, str(tmp_path / "d.safetensors"))
    save_file({"x": torch.full((1, 8), 4.0), "scale": torch.tensor(2.0)}, str(tmp_path / "e.safetensors"))
    (tmp_path / "notes.txt").write_text("ignored")
    cal = as_calibration(tmp_path)
    got = _args(cal)
    assert len(got) == 5
    assert got[0][0][0].sum() == 0 and got[1][0][0].sum() == 8
    assert len(got[2][0]) == 2 and got[2][0][1].item() == 0.5  # "0", "1": positional
    assert got[3][0][0].sum() == 24  # one tensor: the one argument
    assert set(got[4][1]) == {"x", "scale"}  # names: keyword arguments
    model = TwoInputs().eval()
    assert run_pass(model, cal, {"q": lambda a, k: None}, {"q": model.q}, progress=False) == 5
    assert len(as_calibration(tmp_path, limit=2)) == 2


def make_batches():
    return [torch.randn(2, 8) for _ in range(4)]


def test_module_function(monkeypatch):
    monkeypatch.setattr(__import__(__name__), "make_batches", make_batches, raising=False)
    cal = as_calibration(f"{__name__}:make_batches")
    assert len(cal) == 4 and cal.source.startswith("function")
    # resolved as a model's MODULE:FUNCTION (lowbit.models.resolve): one-line ValueErrors naming the spec
    with pytest.raises(ValueError, match="calibration function 'no_such_module_xyz:f': cannot import module"):
        as_calibration("no_such_module_xyz:f")
    with pytest.raises(ValueError, match="no callable"):
        as_calibration(f"{__name__}:nothing_here")
    monkeypatch.setattr(__import__(__name__), "broken", lambda: 1 / 0, raising=False)
    with pytest.raises(RuntimeError, match="calibration function .*:broken' raised ZeroDivisionError"):
        as_calibration(f"{__name__}:broken")


def test_source_errors(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        as_calibration([])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        as_calibration(tmp_path / "missing")
    with pytest.raises(ValueError, match="no .pt"):
        as_calibration(tmp_path)
    with pytest.raises(TypeError, match="iterable of model inputs"):
        as_calibration(torch.zeros(3))
    with pytest.raises(ValueError, match="limit"):
        as_calibration([torch.zeros(1)], limit=0)


def test_run_pass_hooks_and_stop_after(rng):
    model = TwoInputs().eval()
    cal = as_calibration([torch.randn(3, 8, generator=rng) for _ in range(5)])
    seen = {"q": [], "out": []}
    mods = {"q": model.q, "out": model.out}
    n = run_pass(model, cal, {k: (lambda a, kw, k=k: seen[k].append(a[0].shape)) for k in seen}, mods,
                 progress=False)
    assert n == 5 and seen["q"] == [(3, 8)] * 5 and len(seen["out"]) == 5
    later = []
    model.out.register_forward_pre_hook(lambda m, a: later.append(1))
    run_pass(model, cal, {"q": lambda a, kw: None}, mods, progress=False, stop_after={"q": 1})
    assert later == []  # the forward stopped once q had run


def test_trace_calls_groups_shared_inputs():
    model = TwoInputs().eval()
    calls = trace_calls(model, Item.of(torch.randn(2, 8)), {"q": model.q, "k": model.k, "out": model.out})
    assert [c[0] for c in calls] == ["q", "k", "out"]
    assert calls[0][1] == calls[1][1] != calls[2][1]


def test_rejected_item_is_named():
    model = TwoInputs().eval()
    cal = as_calibration([torch.randn(2, 8), torch.randn(2, 8), torch.randn(2, 5)])
    with pytest.raises(CalibrationError, match=r"rejected calibration item 2 \(Tensor\(2, 5\) float32\)"):
        run_pass(model, cal, {"q": lambda a, kw: None}, {"q": model.q}, progress=False)


def test_nan_activation_names_the_layer():
    model = TwoInputs().eval()
    with torch.no_grad():
        model.q.weight[0, 0] = float("inf")
    cal = as_calibration([torch.randn(2, 8)])
    with pytest.raises(CalibrationError, match="'out' contains NaN or inf"):
        run_pass(model, cal, {"out": lambda a, kw: None}, {"out": model.out}, progress=False)


def test_training_mode_is_switched_with_a_warning():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)).train()
    with pytest.warns(UserWarning, match="training mode"):
        assert ensure_eval(model) is True
    assert not any(m.training for m in model.modules())
    assert ensure_eval(model) is False


def test_minilm_calibration_sentences_are_not_the_evaluation_ones():
    assert len(CALIBRATION_SENTENCES) >= 200 and len(set(CALIBRATION_SENTENCES)) == len(CALIBRATION_SENTENCES)
    assert not set(CALIBRATION_SENTENCES) & set(SENTENCES)
    picked = pick_sentences(128)
    assert len(set(picked)) == 128 and picked[0] == CALIBRATION_SENTENCES[0]
    assert isinstance(as_calibration(CalibrationSet(picked, "s")), CalibrationSet)


def test_minilm_tuning_sentences_avoid_the_gptq_calibration():
    fitted = pick_sentences(256)
    tuned = pick_sentences(64, exclude=fitted)
    assert len(set(tuned)) == 64 and not set(tuned) & set(fitted) and set(tuned) <= set(CALIBRATION_SENTENCES)
    assert len(pick_sentences(10**6, exclude=fitted)) == len(CALIBRATION_SENTENCES) - 256  # all that are left
    with pytest.raises(ValueError, match="no MiniLM calibration sentence is left"):
        pick_sentences(4, exclude=CALIBRATION_SENTENCES)
