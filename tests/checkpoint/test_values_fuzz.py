"""The stored numbers a forward uses, fuzzed: a file `lowbit info` and `lowbit.load` accept computes finite outputs,
and one they refuse is refused by both with a message naming the file, the layer and the tensor.

Each example sets one element of a weight scale, a weight zero (RTN and HQQ files), an AWQ input-scale vector, a
static activation step or a smoothing vector to a value drawn from NaN, +-inf, 0, negatives, float32 subnormals and
ordinary values; the oracle says independently which values must be refused (lowbit/checkpoint/values.py). Also
fuzzed: block sizes in the metadata and in QuantConfig, and `--config` / plan JSON (load_overrides, quant's config).
"""

import json
import math
import struct
from collections import OrderedDict

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from torch import nn

from lowbit.checkpoint import CheckpointError, load, open_checkpoint, save
from lowbit.checkpoint.overrides import load_overrides
from lowbit.cli.info import checkpoint_rows
from lowbit.quant import QuantConfig, quantize_weight

FUZZ = settings(deadline=5000, database=None, max_examples=40,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
TINY32 = torch.finfo(torch.float32).tiny
VALUES = st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, -1.0, -1e-3, 1e-40, 1e-45, 1e-39, 2.0**-24,
                          TINY32, 1e-3, 0.05, 1.0, 3.0])


def _model():
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(fc=nn.Linear(64, 32), head=nn.Linear(32, 8))).eval()


def _bad(value: float, kind: str, dtype=torch.float32) -> bool:
    """The oracle: which stored values (once in the tensor's dtype) a forward cannot use (checkpoint/values.py)."""
    v32 = float(torch.tensor(value, dtype=torch.float64).to(dtype))
    if not math.isfinite(v32):
        return True
    if kind == "zero":
        return False
    if kind == "input_scale" or kind == "step":
        return not v32 >= TINY32
    return not v32 > 0  # weight scale, smoothing vector


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("values")
    m = _model()
    f32 = QuantConfig(bits=4, block_size=32, scale_dtype="float32")
    rtn = {"fc.weight": quantize_weight(m.fc.weight.detach(), f32),
           "fc.bias": m.fc.bias.detach(),
           "head.weight": quantize_weight(m.head.weight.detach(), QuantConfig(bits=4, block_size=32, method="hqq")),
           "head.bias": m.head.bias.detach(),
           "fc.weight_input_scale": torch.rand(64) + 0.5}
    out = {"rtn": save(rtn, root / "rtn.safetensors")}
    from lowbit.static import quantize_static

    static = quantize_static(_model(), [torch.randn(4, 64) for _ in range(2)], progress=False)
    out["static"] = save(static, root / "static.safetensors")
    return root, out


def _rewrite(src, dst, tensor: str, index: int, value: float) -> torch.dtype:
    tensors = load_file(src)
    t = tensors[tensor].clone()
    t.view(-1)[index % t.numel()] = value
    tensors[tensor] = t
    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    save_file(tensors, dst, metadata=json.loads(raw[8:8 + n])["__metadata__"])
    return t.dtype


def _check(path, bad: bool, layer: str, what: str) -> None:
    for read in (open_checkpoint, checkpoint_rows):
        if bad:
            with pytest.raises(CheckpointError) as e:
                read(path)
            assert str(path) in str(e.value) and repr(layer) in str(e.value) and what in str(e.value), str(e.value)
        else:
            read(path)
    model = _model()
    if bad:
        with pytest.raises(CheckpointError):
            load(model, path)
        assert isinstance(model.fc, nn.Linear)  # untouched
    else:
        out = load(model, path)(torch.randn(3, 64) * 0.01)
        assert torch.isfinite(out).all()


@FUZZ
@given(tensor=st.sampled_from(["fc.weight_scale", "fc.weight_zero", "head.weight_scale", "head.weight_zero",
                               "fc.weight_input_scale"]), index=st.integers(0, 10**6), value=VALUES)
def test_stored_weight_numbers(files, tensor, index, value):
    root, paths = files
    path = root / "mutated.safetensors"
    dtype = _rewrite(paths["rtn"], path, tensor, index, value)
    kind = "input_scale" if tensor.endswith("input_scale") else tensor.rpartition("_")[2]
    _check(path, _bad(value, kind, dtype), tensor.partition(".")[0], repr(tensor))


def _static_meta(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    return header, json.loads(header["__metadata__"]["lowbit"]), raw[8 + n:]


@FUZZ
@given(layer=st.sampled_from(["fc", "head"]), field=st.sampled_from(["input_scale", "input_smooth"]),
       index=st.integers(0, 100), value=VALUES)
def test_static_steps_and_smoothing(files, layer, field, value, index):
    root, paths = files
    header, body, data = _static_meta(paths["static"])
    spec = body["static"]["layers"][layer]
    if field == "input_scale":
        spec["input_scale"] = value
        kind = "step"
    else:
        width = 64 if layer == "fc" else 32
        smooth = spec.get("input_smooth") or [1.0] * width
        smooth[index % width] = value
        spec["input_smooth"] = smooth
        kind = "smooth"
    header["__metadata__"]["lowbit"] = json.dumps(body)  # NaN/inf written as JSON's NaN literals: refused as JSON
    text = json.dumps(header).encode()
    path = root / "static_mutated.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    bad = _bad(value, kind) or not math.isfinite(value)
    model_check = layer if math.isfinite(value) else ""
    for read in (open_checkpoint, checkpoint_rows):
        if bad:
            with pytest.raises(CheckpointError) as e:
                read(path)
            assert str(path) in str(e.value) and model_check in str(e.value)
        else:
            read(path)
    if not bad:
        assert torch.isfinite(load(_model(), path)(torch.randn(3, 64))).all()


@FUZZ
@given(block=st.sampled_from([-1, 16, 32, 48, 64, 80, 2**20, 2**34, 2**62, 10**23]), k=st.sampled_from([16, 40, 64]))
def test_block_sizes_wider_than_the_row(block, k):
    """A block wider than K is one block per row (group_size K), with no allocation sized by the block."""
    w = torch.randn(8, k)
    if block != -1 and block % 16:
        with pytest.raises(ValueError, match="block_size"):
            QuantConfig(block_size=block)
        return
    qw = quantize_weight(w, QuantConfig(bits=8, block_size=block))
    per_row = quantize_weight(w, QuantConfig(bits=8, block_size=-1))
    if block == -1 or block > k:
        assert qw.group_size == k and qw.num_blocks == 1 and torch.equal(qw.packed, per_row.packed)
        assert torch.equal(qw.dequantize(), per_row.dequantize())
    else:
        assert qw.block_size == block


_JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=5)
                     | st.sampled_from(["skip", "rtn", "hqq", "gptq", "float16", "fc", "fc.weight", "*"]),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(
                         st.sampled_from(["version", "layers", "gptq_fit", "fc", "bits", "block_size", "method",
                                          "symmetric", "scale_dtype", "every", "x"]) | st.text(max_size=3), c,
                         max_size=4), max_leaves=8)


@settings(FUZZ, max_examples=80)
@given(doc=_JSON)
def test_config_and_plan_json(tmp_path_factory, doc):
    """Any JSON as a --config / plan file: rules or one CheckpointError; as quant's MNN config: a ValueError."""
    path = tmp_path_factory.getbasetemp() / "cfg_fuzz.json"
    path.write_text(json.dumps(doc))
    try:
        rules = load_overrides(path, QuantConfig())
    except CheckpointError as e:
        assert str(path) in str(e) or "overrides" in str(e)
    else:
        for r in rules:
            assert r.cfg is None or isinstance(r.cfg, QuantConfig)
    from lowbit.cli.quant import read_config
    from lowbit.static.images import check_image_fields

    try:
        _, fields = read_config(str(path))
        if fields:
            check_image_fields(fields)
    except ValueError as e:
        assert str(e).strip()


@FUZZ
@given(block=st.sampled_from([-1, 1, 16, 17, 32, 64, 2**20, 2**34, 2**62, 2**63 - 1, 10**23]))
def test_metadata_block_sizes(files, block):
    """A stored block_size wider than K reads as one block per row (no allocation sized by it); one that implies
    other scale shapes is refused naming the tensor."""
    root, paths = files
    header, body, data = _static_meta(paths["rtn"])  # fc: K=64, block 32 (2 blocks); head: K=32, block 32 (1 block)
    body["quantized"]["head.weight"]["block_size"] = block
    header["__metadata__"]["lowbit"] = json.dumps(body)
    text = json.dumps(header).encode()
    path = root / "block_mutated.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    if block == -1 or block >= 32:
        ref = load(_model(), paths["rtn"])
        x = torch.randn(3, 64) * 0.01
        assert torch.equal(load(_model(), path)(x), ref(x))
    else:
        with pytest.raises(CheckpointError, match="head.weight"):
            open_checkpoint(path)
