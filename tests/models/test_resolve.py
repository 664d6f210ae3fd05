"""The one MODULE:FUNCTION contract (lowbit.models.resolve): a model or (model, example_inputs), each error one line
naming the spec, and every command taking both shapes."""

import pytest
import torch
from torch import nn

from lowbit.cli import main
from lowbit.models import minilm
from lowbit.models.resolve import find_function, load_model

M = __name__  # pytest puts tests/ on sys.path, so this file is importable as a module
NOT_CALLABLE = 3


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32))


def bare():
    return _mlp()


def pair():
    return _mlp(), (torch.ones(2, 64),)


def pair_single_input():
    return _mlp(), torch.ones(2, 64)


def pair_without_inputs():
    return _mlp(), None


def raises():
    raise KeyError("no weights here")


def wrong():
    return [1, 2, 3]


def test_both_shapes():
    model, inputs = load_model(f"{M}:bare")
    assert isinstance(model, nn.Sequential) and inputs is None
    model, inputs = load_model(f"{M}:pair", needs_inputs=True)
    assert len(inputs) == 1 and torch.equal(inputs[0], torch.ones(2, 64))
    assert model(*inputs).shape == (2, 32)
    _, inputs = load_model(f"{M}:pair_single_input")  # one argument becomes a 1-tuple
    assert isinstance(inputs, tuple) and len(inputs) == 1
    assert load_model(f"{M}:pair_without_inputs")[1] is None
    assert find_function("minilm") is minilm.minilm_example  # built-in names go through the same lookup


@pytest.mark.parametrize("spec, needs, kind, text", [
    ("nope", False, ValueError, "unknown model 'nope': use one of ['minilm'] or MODULE:FUNCTION returning a model"),
    ("no_such_module_xyz:f", False, ValueError, "model 'no_such_module_xyz:f': cannot import module"),
    (f"{M}:absent", False, ValueError, f"module '{M}' has no function 'absent' (no callable 'absent' in"),
    (f"{M}:NOT_CALLABLE", False, ValueError, "has no function 'NOT_CALLABLE'"),
    (f"{M}:raises", False, RuntimeError, f"model function '{M}:raises' raised KeyError: 'no weights here'"),
    (f"{M}:wrong", False, TypeError, "must return an nn.Module or (nn.Module, example_inputs), got list"),
    (f"{M}:wrong", True, TypeError, "must return (nn.Module, example_inputs), got list"),
    (f"{M}:bare", True, ValueError, f"model function '{M}:bare' returned a model without example inputs"),
])
def test_errors_name_the_spec(spec, needs, kind, text):
    with pytest.raises(kind) as e:
        load_model(spec, needs_inputs=needs)
    assert text in str(e.value) and "\n" not in str(e.value)


def test_commands_take_either_shape(tmp_path, capsys):
    for fn in ("bare", "pair"):  # convert wanted a model, validate a pair: each takes the other's now
        out = tmp_path / f"{fn}.safetensors"
        assert main(["convert", "--model", f"{M}:{fn}", "--bits", "4", "--block", "32", "--quiet", str(out)]) == 0
        assert out.is_file()
    assert main(["validate", "--model", f"{M}:bare", "--no-memory"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("lowbit: error: model function") and f"'{M}:bare'" in err and "\n" not in err
