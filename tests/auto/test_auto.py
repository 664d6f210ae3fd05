"""lowbit.auto_quantize on a tiny MLP: targets, verification, the config file, cache, metrics and bad inputs."""

import copy
import dataclasses
import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import lowbit
from lowbit.auto import auto_quantize, default_candidates
from lowbit.auto.fakequant import dequantized, dequantized_weight, fake_quantized, run_outputs
from lowbit.auto.metrics import as_metric
from lowbit.calib import CalibrationError, as_calibration
from lowbit.checkpoint.overrides import find_rule, load_overrides
from lowbit.quant import QuantConfig

CANDS = default_candidates(bits=(2, 3, 4, 8), blocks=(32,), methods=("rtn", "hqq"))


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("auto-cache")


@pytest.fixture(autouse=True)
def _cache(shared_cache, monkeypatch):
    # one sensitivity cache for this file (fast); not XDG_CACHE_HOME: that would also move the kernel probe cache
    monkeypatch.setattr("lowbit.auto.sensitivity.cache_dir", lambda: shared_cache)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 16)).eval()


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(1)
    return [torch.randn(8, 32, generator=g) for _ in range(3)]


def _error_of(model, data, overrides, metric="cosine"):
    ref = run_outputs(model, as_calibration(data), None)
    q = lowbit.quantize(copy.deepcopy(model), overrides=overrides)
    return as_metric(metric)(ref, run_outputs(q, as_calibration(data), None)), q


def test_fake_quant_equals_the_quantized_model(model, data):
    cfg = QuantConfig(bits=3, block_size=32, method="hqq")
    ws, nbytes = dequantized(model[2], ["weight"], cfg, "2")
    with fake_quantized(model, {"2": ws}):
        fake = model(data[0])
    q = lowbit.quantize(copy.deepcopy(model), cfg, skip=["0", "4"])
    torch.testing.assert_close(q(data[0]), fake, rtol=0, atol=1e-6)
    assert q.lowbit_summary.bytes_after == nbytes
    assert torch.equal(model[2].weight, copy.deepcopy(model)[2].weight)  # restored


@pytest.mark.parametrize("cfg", [QuantConfig(bits=3, block_size=32, method="hqq"), QuantConfig(bits=8, block_size=-1),
                                 QuantConfig(bits=5, block_size=48, symmetric=True), QuantConfig(bits=16),
                                 QuantConfig(bits=2, block_size=128, scale_dtype="float32")])
def test_fast_dequantize_is_quantize_weight(cfg):
    w = torch.randn(24, 72, generator=torch.Generator().manual_seed(2))
    deq, nbytes = dequantized_weight(w, cfg, "w")
    qw = lowbit.quantize_weight(w, cfg)
    assert torch.equal(deq, qw.dequantize(w.dtype)) and nbytes == qw.nbytes


@pytest.mark.parametrize("mode", ["anchors", "all"])
def test_size_target_holds_and_plan_applies(model, data, mode):
    plan = auto_quantize(model, data, target_size=0.15, candidates=CANDS, progress=False, mode=mode)
    assert plan.total_bytes <= 0.15 * plan.float_bytes
    measured, q = _error_of(model, data, plan.overrides)
    assert measured == pytest.approx(plan.measured_error, rel=1e-4, abs=1e-7)
    assert q.lowbit_summary.bytes_after == plan.total_bytes
    uniform4 = plan.uniform["int4-b32-hqq"]
    at_int4 = auto_quantize(model, data, target_size=uniform4[0], candidates=CANDS, progress=False, mode=mode)
    assert at_int4.estimated_error <= uniform4[1] + 1e-12
    assert "error alone" in plan.table() and "measured" in plan.summary()


def test_error_target_holds_after_verification(model, data):
    plan = auto_quantize(model, data, target_error=2e-3, candidates=CANDS, progress=False)
    assert plan.measured_error <= 2e-3
    assert _error_of(model, data, plan.overrides)[0] <= 2e-3 * 1.001
    assert plan.total_bytes < plan.float_bytes / 2
    tight = auto_quantize(model, data, target_error=plan.measured_error, candidates=CANDS, progress=False,
                          max_repairs=20)
    assert tight.measured_error <= plan.measured_error


def test_held_back_items_choose_nothing_but_the_plan_holds_on_them(model, data):
    more = data + [torch.randn(8, 32, generator=torch.Generator().manual_seed(5))]  # 4 items: the 4th is held back
    plan = auto_quantize(model, more, target_error=2e-3, candidates=CANDS, progress=False)
    assert plan.held_back == 1 and plan.measured_error <= 2e-3
    assert _error_of(model, more, plan.overrides)[0] == pytest.approx(plan.measured_error, rel=1e-4, abs=1e-7)
    assert _error_of(model, more[3:], plan.overrides)[0] <= 2e-3  # holds on the held-back item too
    assert auto_quantize(model, more, target_error=2e-3, candidates=CANDS, progress=False, holdout=0).held_back == 0


def test_repair_raises_layers_until_the_measured_error_holds(model, data, monkeypatch):
    from lowbit.auto import search

    real = search._measure_plan
    monkeypatch.setattr(search, "_measure_plan", lambda *a: 4 * real(*a))  # the additive estimate is 4x too low
    plan = auto_quantize(model, data, target_error=2e-3, candidates=CANDS, progress=False)
    assert plan.repair_steps and plan.measured_error <= 2e-3


def test_json_is_the_convert_config_schema(model, data, tmp_path):
    plan = auto_quantize(model, data, target_size=0.2, candidates=CANDS, progress=False)
    path = plan.to_json(tmp_path / "plan.json")
    assert set(json.loads(path.read_text())) == {"version", "layers"}
    rules = load_overrides(path, QuantConfig(bits=2, block_size=128, symmetric=True))
    for name, cfg in plan.overrides.items():
        got = find_rule(rules, f"{name}.weight").cfg
        assert got.is_float if cfg.is_float else got == cfg
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "m.safetensors")
    summary = lowbit.convert(tmp_path / "m.safetensors", tmp_path / "q.safetensors", overrides=path, progress=False)
    assert summary is not None and (tmp_path / "q.safetensors").is_file()


def test_sensitivity_cache_is_reused(model, data, tmp_path, monkeypatch):
    monkeypatch.setattr("lowbit.auto.sensitivity.cache_dir", lambda: tmp_path)
    first = auto_quantize(model, data, target_size=0.2, candidates=CANDS, progress=False)
    again = auto_quantize(model, data, target_size=0.2, candidates=CANDS, progress=False)
    assert first.cache_hits == 0 and again.cache_hits == 3 * len(CANDS) and again.evaluations == 1
    assert again.overrides == first.overrides
    other = auto_quantize(model, [d * 2 for d in data], target_size=0.2, candidates=CANDS, progress=False)
    assert other.cache_hits == 0  # other data, other key


def test_outputs_as_dicts_and_tuples_and_user_metrics():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(32, 64), nn.Linear(64, 32)

        def forward(self, x):
            h = self.a(x)
            return {"hidden": (h, x.long()), "out": self.b(h)}

    torch.manual_seed(0)
    net, data = Net().eval(), [torch.randn(4, 32)]
    cands = CANDS[:3] + CANDS[-1:]
    for metric in ("cosine_mean", "snr", "max_rel", lambda ref, out: float((ref[0]["out"] - out[0]["out"]).norm())):
        plan = auto_quantize(net, data, target_size=0.3, candidates=cands, metric=metric, progress=False, cache=False)
        assert plan.measured_error > 0
    plan = auto_quantize(net, data, target_size=0.3, candidates=cands, output="out", progress=False, cache=False)
    assert plan.metric == "cosine"


@pytest.mark.parametrize(("kwargs", "err", "match"), [
    ({}, ValueError, "exactly one target"),
    ({"target_size": 0.2, "target_error": 0.1}, ValueError, "exactly one target"),
    ({"target_size": 0.2, "candidates": []}, ValueError, "candidates is empty"),
    ({"target_size": 0.2, "candidates": ["int4"]}, TypeError, "QuantConfig"),
    ({"target_size": 0.2, "candidates": [QuantConfig(method="awq")]}, ValueError, "AWQ is not an auto candidate"),
    ({"target_size": 0.2, "candidates": [QuantConfig(method="gptq", awq=True)]}, ValueError, "AWQ is not"),
    ({"target_size": 10}, ValueError, "unreachable: the smallest plan"),
    ({"target_size": -1}, ValueError, "target_size"),
    ({"target_error": 0.0, "candidates": CANDS[:2]}, ValueError, "unreachable with these candidates: the closest"),
    ({"target_size": 0.2, "metric": "l2"}, ValueError, "metric='l2' is unknown"),
    ({"target_size": 0.2, "holdout": 1.0}, ValueError, "holdout=1.0"),
    ({"target_size": 0.2, "output": "x"}, ValueError, "output='x'"),
])
def test_bad_inputs(model, data, kwargs, err, match):
    kwargs.setdefault("candidates", CANDS)
    with pytest.raises(err, match=match):
        auto_quantize(model, data, progress=False, **kwargs)


GPTQ_CANDS = default_candidates(bits=(2, 3, 4, 8), blocks=(32,), methods=("hqq", "gptq"), data_aware_bits=(2, 3))


def test_default_gptq_candidates_search_clipping_at_low_bits():
    from lowbit.auto.sensitivity import candidate_label

    cands = default_candidates(bits=(2, 3, 4), blocks=(64,), methods=("hqq", "gptq"), keep_float=False)
    assert {(c.method.value, c.bits): c.gptq_scales for c in cands if c.data_aware} == {
        ("gptq", 2): "clip", ("gptq", 3): "clip", ("gptq", 4): "rtn"}
    assert [candidate_label(c) for c in cands if c.bits == 3] == ["int3-b64-hqq", "int3-b64-gptq-clip"]
    assert all(c.gptq_scales == "rtn" for c in default_candidates(methods=("gptq",), clip_bits=()))


def test_gptq_candidates_applied_are_the_measured_model(model, data, tmp_path):
    from lowbit.quant.gptq import gptq_quantize
    from lowbit.quant.hessian import InputStats

    gptq_only = default_candidates(bits=(3, 4), blocks=(32,), methods=("gptq",), data_aware_bits=(3, 4))
    plan = auto_quantize(model, data, target_size=0.13, candidates=gptq_only, progress=False, mode="all")
    assert plan.needs_calibration and plan.gptq_fit_every == 2, plan.table()
    measured = as_calibration(data[1::2])  # GPTQ is fitted on items 0, 2; every error is measured on item 1
    ref = run_outputs(model, measured, None)
    q = plan.quantize(copy.deepcopy(model), data, progress=False)
    assert as_metric("cosine")(ref, run_outputs(q, measured, None)) == pytest.approx(
        plan.measured_error, rel=1e-4, abs=1e-7)
    assert q.lowbit_summary.bytes_after == plan.total_bytes
    name = next(c.name for c in plan.layers if c.cfg.data_aware)  # independent: GPTQ on the layer's float inputs
    stats, x = InputStats(model[int(name)].in_features), []
    hook = model[int(name)].register_forward_pre_hook(lambda m, a: x.append(a[0]))
    with torch.no_grad():
        [model(d) for d in data[::2]]
    hook.remove()
    stats.add(torch.cat(x))
    cfg = plan.overrides[name]
    if f"{name}.weight" in q.lowbit_summary.fallbacks:  # 16 rows: GPTQ may lose to RTN on the held-out rows
        cfg = dataclasses.replace(cfg, method="rtn", gptq_act_order=False, gptq_scales="rtn")
        want = lowbit.quantize_weight(model[int(name)].weight, cfg).dequantize(torch.float32)
    else:  # GPTQ passed the held-out check and was refitted on all the fit rows
        want = gptq_quantize(model[int(name)].weight, [stats.xtx], cfg).dequantize(torch.float32)
    got = q[int(name)].quantized_weight("weight").dequantize(torch.float32)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="needs calibration data"):
        plan.quantize(copy.deepcopy(model))
    with pytest.raises(ValueError, match="calibration"):
        lowbit.quantize(copy.deepcopy(model), overrides=plan.overrides)
    path = plan.to_json(tmp_path / "plan.json")
    entry = json.loads(path.read_text())["layers"][name]
    assert entry["gptq_act_order"] is True and entry["gptq_scales"] == plan.overrides[name].gptq_scales
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "m.safetensors")
    with pytest.raises(lowbit.checkpoint.CheckpointError, match="--model MODULE:FUNCTION --calib DATA --config"):
        lowbit.convert(tmp_path / "m.safetensors", tmp_path / "q.safetensors", overrides=path, progress=False)
    assert not (tmp_path / "q.safetensors").exists()


def test_gptq_is_fitted_and_measured_on_disjoint_items(model, data, monkeypatch):
    """GPTQ's collectors see only the fit items (the noise proxy's see the selection items); every model run that
    scores a candidate or a plan sees only the other items."""
    import lowbit.auto.calibrated as calibrated
    import lowbit.auto.search as search
    import lowbit.auto.sensitivity as sensitivity

    data = data + [torch.randn(8, 32) for _ in range(5)]  # 8 items: fit 0, 2, 4, 6; measure 1, 3, 5, 7
    seen, passes = {"measured": set()}, []

    def spy(fn, kind):
        def wrapped(model, cal, *a, **k):
            ptrs = {item.args[0].data_ptr() for item in cal}
            seen[kind].update(ptrs) if kind in seen else passes.append(frozenset(ptrs))
            return fn(model, cal, *a, **k)
        return wrapped

    monkeypatch.setattr(calibrated, "run_pass", spy(calibrated.run_pass, "fit"))
    monkeypatch.setattr(sensitivity, "run_outputs", spy(sensitivity.run_outputs, "measured"))
    monkeypatch.setattr(search, "_measure_plan", spy(search._measure_plan, "measured"))
    plan = auto_quantize(model, data, target_error=0.02, candidates=GPTQ_CANDS, progress=False, cache=False)
    fit, selection = (frozenset(d.data_ptr() for d in data[s]) for s in (slice(0, None, 2), slice(1, 7, 2)))
    assert set(passes) == {fit, selection} and len(passes) == 2  # item 7: held back
    assert seen["measured"] == {d.data_ptr() for d in data[1::2]}
    assert plan.gptq_fit_every == 2 and plan.held_back == 1  # holdout splits the 4 measured items
    hqq = auto_quantize(model, data, target_error=0.02, candidates=CANDS, progress=False, cache=False)
    assert hqq.gptq_fit_every == 0 and hqq.held_back == 2 and "gptq_fit" not in hqq.config_file()


def test_gptq_fitted_on_a_separate_calibration(model, data, monkeypatch):
    """calibration=: GPTQ's collectors see only the calibration items, every data item is measured, and the plan
    applied with that calibration is the measured model."""
    import lowbit.auto.calibrated as calibrated

    g = torch.Generator().manual_seed(7)
    calib = [torch.randn(16, 32, generator=g) for _ in range(4)]
    passes = []

    def spy(m, cal, *a, **k):
        passes.append(frozenset(item.args[0].data_ptr() for item in cal))
        return run_pass(m, cal, *a, **k)

    run_pass = calibrated.run_pass
    monkeypatch.setattr(calibrated, "run_pass", spy)
    gptq_only = default_candidates(bits=(3, 4), blocks=(32,), methods=("gptq",), data_aware_bits=(3, 4))
    plan = auto_quantize(model, data, target_size=0.13, candidates=gptq_only, progress=False, calibration=calib,
                         cache=False, holdout=0)
    assert passes[0] == {c.data_ptr() for c in calib} and len(passes) == 2  # fit; then the noise proxy's pass
    assert passes[1] == {d.data_ptr() for d in data}
    assert plan.gptq_fit_every == 0 and plan.gptq_calibration and "gptq_fit" not in plan.config_file()
    q = plan.quantize(copy.deepcopy(model), calib, progress=False)
    ref = run_outputs(model, as_calibration(data), None)
    assert as_metric("cosine")(ref, run_outputs(q, as_calibration(data), None)) == pytest.approx(
        plan.measured_error, rel=1e-4, abs=1e-7)
    with pytest.raises(ValueError, match="the calibration it was tuned with"):
        plan.quantize(copy.deepcopy(model))
    with pytest.warns(UserWarning, match="calibration= is used by GPTQ candidates only"):
        auto_quantize(model, data, target_size=0.2, candidates=CANDS, progress=False, calibration=calib)


def test_data_the_model_rejects(model):
    with pytest.raises(CalibrationError, match="rejected calibration item 0"):
        auto_quantize(model, [torch.randn(2, 7)], target_size=0.2, candidates=CANDS, progress=False)


def test_plot_without_matplotlib_says_what_to_install(model, data, tmp_path, monkeypatch):
    import sys

    plan = auto_quantize(model, data, target_size=0.2, candidates=CANDS, progress=False)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plan.plot(tmp_path / "f.png")
    assert not (tmp_path / "f.png").exists()
    svg = plan.plot(tmp_path / "f.svg").read_text()
    assert svg.startswith("<svg") and svg.count("<path") == len(plan.uniform) and "<circle" in svg


def test_anchor_fit_interpolates_in_log_log():
    from lowbit.auto.sensitivity import fit_error_to_noise

    fit = fit_error_to_noise({"a": 1.0, "b": 10.0, "c": 100.0}, {"a": 1e-4, "b": 1e-3, "c": 2e-2})
    assert fit(10.0) == pytest.approx(1e-3) and fit(0.1) == pytest.approx(1e-5)  # below: the first segment's p = 1
    assert 1e-3 < fit(31.6) < 2e-2 and fit(0.0) == 0.0
    assert fit_error_to_noise({"a": 1.0}, {"a": 1e-4})(10.0) == pytest.approx(1e-3)  # one anchor: p = 1


class _Front:
    """A frontier of 8 plans, plan i estimated at error 0.8 - 0.1 i (plan 7: the knapsack's, estimated 0.1)."""
    total_bytes = [100 * (i + 1) for i in range(8)]
    total_error = [0.8 - 0.1 * i for i in range(8)]

    def choice(self, i):
        return [i]


def test_a_smaller_plan_that_fails_on_all_items_walks_up_the_frontier_before_repairs():
    from lowbit.auto.search import _verify_smaller

    selection = object()
    on_selection = [0.9, 0.5, 0.3, 0.19, 0.15, 0.12, 0.1, 0.08]  # plans 3.. hold on the selection items (<= 0.2)
    on_all = [0.9, 0.6, 0.4, 0.25, 0.22, 0.18, 0.12, 0.1]  # but only plans 5.. on all items

    def plan_error(choice, on=None):
        return (on_selection if on is selection else on_all)[choice[0]]

    choice, measured, log = _verify_smaller(_Front(), 7, 0.2, plan_error, selection)
    assert choice == [5] and measured == 0.18
    assert [line.split(":")[0] for line in log] == ["smaller"] * 3 + ["larger"] * 2
    choice, measured, log = _verify_smaller(_Front(), 7, 0.05, plan_error, selection)  # nothing holds: the point
    assert choice == [7] and measured == 0.1 and log == []

