"""lowbit.auto_quantize on the conv + BiLSTM test model (tests/seqnet.py): the plan against uniform int4 block 64
HQQ at equal size and at equal error, measured on held-out sequences (run with -s to see the numbers)."""

import copy

import pytest
from seqnet import accuracy, task, train_seqnet

import lowbit
from lowbit.auto import auto_quantize, default_candidates
from lowbit.auto.fakequant import run_outputs
from lowbit.auto.metrics import as_metric
from lowbit.calib import as_calibration
from lowbit.quant import QuantConfig

# HQQ and (opt-in) GPTQ candidates, thinned for test time (GPTQ on the BiLSTM costs ~0.4 s per setting; a fuller
# run is in benchmarks/results/auto_seqnet.md)
CANDS = default_candidates(bits=(2, 3, 4, 8), blocks=(64,), methods=("hqq", "gptq"), data_aware_bits=(3, 4),
                           data_aware_blocks=(64,))


@pytest.fixture(scope="module")
def trained():
    model, gen = train_seqnet(steps=150)
    tune = [task(gen, 16)[0] for _ in range(4)]  # with GPTQ candidates: 0 and 2 fit GPTQ, 1 and 3 measure
    return model, tune, task(gen, 256)


def _errors(model, q, tune, held_out):
    cos, measured = as_metric("cosine"), as_calibration(tune[1::2])  # the items auto measures errors on
    return (cos(run_outputs(model, measured, None), run_outputs(q, measured, None)),
            cos(run_outputs(model, as_calibration([held_out[0]]), None),
                run_outputs(q, as_calibration([held_out[0]]), None)))


def test_plan_against_uniform_int4_at_equal_size_and_error(trained, tmp_path):
    model, tune, held_out = trained
    uniform = lowbit.quantize(copy.deepcopy(model), QuantConfig(bits=4, block_size=64, method="hqq"))
    u_bytes = uniform.lowbit_summary.bytes_after
    u_tune, u_held = _errors(model, uniform, tune, held_out)
    rows = [("uniform int4 b64 hqq", u_bytes, u_tune, u_held, accuracy(uniform, held_out))]
    plans = {}
    for what, target in (("size", {"target_size": u_bytes}), ("error", {"target_error": u_tune})):
        plan = auto_quantize(model, tune, candidates=CANDS, progress=False, cache=tmp_path, **target)
        q = plan.quantize(copy.deepcopy(model), tune, progress=False)
        assert q.lowbit_summary.bytes_after == plan.total_bytes
        p_tune, p_held = _errors(model, q, tune, held_out)
        assert p_tune == pytest.approx(plan.measured_error, rel=1e-3, abs=1e-6)  # applied = measured
        rows.append((f"auto at int4's {what}", plan.total_bytes, p_tune, p_held, accuracy(q, held_out)))
        plans[what] = (plan, p_held)
    print(f"\nSeqNet (conv + grouped conv + 2-layer BiLSTM), fp32 accuracy {accuracy(model, held_out):.4f}; "
          "error = 1 - lowest cosine of the output logits")
    for label, nbytes, e_tune, e_held, acc in rows:
        print(f"{label:22s} {nbytes:7d} bytes ({nbytes / u_bytes:.3f}x)  tuning error {e_tune:.4f}  held-out error "
              f"{e_held:.4f}  held-out accuracy {acc:.4f}")
    size_plan, size_held = plans["size"]
    assert size_plan.total_bytes <= u_bytes and size_held < u_held  # better at equal size, on held-out data
    error_plan, _ = plans["error"]
    assert error_plan.measured_error <= u_tune and error_plan.total_bytes < u_bytes
