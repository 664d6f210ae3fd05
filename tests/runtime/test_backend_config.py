"""BackendConfig: names, MNN integers, errors, dict round trip."""

import json

import pytest

from lowbit.runtime import BackendConfig, Memory, Precision


@pytest.mark.parametrize("value,expected", [
    ("low", Memory.LOW), ("LOW", Memory.LOW), ("Normal", Memory.NORMAL), ("high", Memory.HIGH),
    (0, Memory.NORMAL), (1, Memory.HIGH), (2, Memory.LOW), (Memory.LOW, Memory.LOW),
])
def test_memory_values(value, expected):
    assert BackendConfig(memory=value).memory is expected


@pytest.mark.parametrize("value,expected", [
    ("normal", Precision.NORMAL), ("High", Precision.HIGH), ("low", Precision.LOW), ("Low_BF16", Precision.LOW_BF16),
    ("low-bf16", Precision.LOW_BF16), (0, Precision.NORMAL), (1, Precision.HIGH), (2, Precision.LOW),
    (3, Precision.LOW_BF16),
])
def test_precision_values(value, expected):
    assert BackendConfig(precision=value).precision is expected


def test_defaults_are_mnn_normal():
    cfg = BackendConfig()
    assert (cfg.memory, cfg.precision) == (Memory.NORMAL, Precision.NORMAL)


@pytest.mark.parametrize("field,value", [("memory", "tiny"), ("memory", 3), ("memory", True), ("memory", None),
                                         ("precision", "fp8"), ("precision", 4), ("precision", -1)])
def test_bad_values_list_valid_ones(field, value):
    with pytest.raises(ValueError, match=rf"{field}=.*'normal'.*'low'"):
        BackendConfig(**{field: value})


def test_frozen():
    with pytest.raises(AttributeError):
        BackendConfig().memory = Memory.LOW


def test_dict_round_trip_through_json():
    cfg = BackendConfig("low", "low_bf16")
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["version"] == 1
    assert BackendConfig.from_dict(d) == cfg


def test_from_dict_errors():
    with pytest.raises(ValueError, match="newer"):
        BackendConfig.from_dict({"memory": "low", "version": 99})
    with pytest.raises(ValueError, match="unknown BackendConfig keys"):
        BackendConfig.from_dict({"memory": "low", "speed": "max"})


def _member_docstrings(enum_cls) -> dict[str, str]:
    """{member name: the string literal right below its assignment} read from the class source (at run time an
    Enum member's __doc__ is only the class docstring, so the source is where a member's own docstring lives)."""
    import ast
    import inspect
    import textwrap

    body = ast.parse(textwrap.dedent(inspect.getsource(enum_cls))).body[0].body
    docs = {}
    for stmt, nxt in zip(body, body[1:], strict=False):
        if isinstance(stmt, ast.Assign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[stmt.targets[0].id] = nxt.value.value
    return docs


def test_members_have_docstrings():
    from lowbit.runtime import Kernel

    for enum_cls in (Memory, Precision, Kernel):
        docs = _member_docstrings(enum_cls)
        missing = [m.name for m in enum_cls if not docs.get(m.name, "").strip()]
        assert not missing, f"{enum_cls.__name__} members without a docstring: {missing}"
        assert len(set(docs.values())) == len(docs)  # each says its own thing, not a copied line
