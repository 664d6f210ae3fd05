"""Fuzzing the checkpoint readers: whatever the bytes, the outcome is a result or a CheckpointError with a message.

Mutated headers and lowbit metadata (random bytes, wrong types, huge and non-integer numbers, NaN, overlapping and
gapped ranges, bad external-data records) go to the header reader, `open_checkpoint`, `lowbit info`'s reader and
`lowbit.load`. Any other exception type fails the test, as does an example slower than the deadline (a hang); a
failed `load` must also leave the model as it was. About 2,700 examples in all, a few seconds to tens of seconds.
"""

import itertools
import json
import re
import struct
from collections import OrderedDict

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import lowbit
from lowbit.checkpoint import CheckpointError, load, open_checkpoint, save
from lowbit.checkpoint.safetensors_io import DTYPES, read_header
from lowbit.cli.info import checkpoint_rows
from lowbit.quant import QuantConfig, quantize_weight

FUZZ = settings(deadline=5000, database=None, suppress_health_check=[HealthCheck.too_slow,
                                                                     HealthCheck.data_too_large])
_RAW_NUMBERS = ["1e999", "-1e999", "4.9", "1E400", "0.0", "-0", "1" * 5000, "true", "NaN", "-Infinity", "[]", "{}",
                '""', "18446744073709551616", "-1"]
_COUNTER = itertools.count()
_NUMBERS = st.sampled_from([0, 1, -1, 2, 3, 4, 8, 16, 40, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -2**63, 10**30])
_STRINGS = st.sampled_from([*DTYPES, "F4", "", "float32", "bfloat16", "lowbit.blocked", "lowbit.checkpoint", "rtn",
                            "fp16", "fc.weight", "fc.weight_packed", "tiny.safetensors.data", "../x", "/etc/passwd"])
_LEAVES = st.none() | st.booleans() | _NUMBERS | st.integers() | st.floats() | _STRINGS | st.text(max_size=4)
_JSON = st.recursive(_LEAVES, lambda c: st.lists(c, max_size=3) | st.dictionaries(_STRINGS, c, max_size=2),
                     max_leaves=4)


def _tiny() -> nn.Module:
    return nn.Sequential(OrderedDict(fc=nn.Linear(40, 16), head=nn.Linear(16, 4))).eval()


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A valid inline checkpoint and a valid external-data one of `_tiny()`, as (path, header object, data bytes)."""
    root = tmp_path_factory.mktemp("fuzz")
    torch.manual_seed(0)
    model = _tiny()
    state = {"fc.weight": quantize_weight(model.fc.weight.detach(), QuantConfig(bits=4, block_size=16)),
             "fc.bias": model.fc.bias.detach(),
             "head.weight": quantize_weight(model.head.weight.detach(), QuantConfig(bits=8, block_size=-1,
                                                                                    symmetric=True)),
             "head.bias": model.head.bias.detach()}
    out = {}
    for kind in ("inline", "external"):
        path = save(state, root / f"{kind}.safetensors", external_data=kind == "external")
        raw = path.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        out[kind] = (path, json.loads(raw[8:8 + n]), raw[8 + n:])
        load(_tiny(), path)  # the unmutated files load
    return out


def _check_all(path) -> None:
    """Every reader either succeeds or raises a CheckpointError with a message; a failed load changes nothing."""
    for read in (read_header, open_checkpoint, lambda p: json.dumps(checkpoint_rows(p))):
        try:
            read(path)
        except CheckpointError as e:
            assert str(e).strip(), type(e)
    model = _tiny()
    modules = dict(model.named_modules())
    try:
        load(model, path)
    except CheckpointError as e:
        assert str(e).strip()
        assert dict(model.named_modules()) == modules
        assert all(isinstance(m, nn.Linear) for m in (model.fc, model.head))


def _fuzz_file(base, raw: bytes):
    """Write raw bytes to a new file next to the base files (a new name each time: rewriting one file in place
    can cost milliseconds on ext4), check every reader on it, then remove it."""
    path = next(iter(base.values()))[0].with_name(f"fuzz{next(_COUNTER)}.safetensors")
    path.write_bytes(raw)
    try:
        _check_all(path)
    finally:
        path.unlink()
    return path


def _mutate(draw, obj, depth: int = 0):
    """Replace, delete or add one node somewhere in a JSON tree; returns the new tree (the input is not changed)."""
    if isinstance(obj, (dict, list)) and obj and depth < 6 and draw(st.booleans()):
        if isinstance(obj, dict):
            key = draw(st.sampled_from(sorted(obj)))
            return {**obj, key: _mutate(draw, obj[key], depth + 1)}
        i = draw(st.integers(0, len(obj) - 1))
        return [*obj[:i], _mutate(draw, obj[i], depth + 1), *obj[i + 1:]]
    action = draw(st.sampled_from(["replace", "delete", "add"])) if isinstance(obj, dict) and obj else "replace"
    if action == "delete":
        key = draw(st.sampled_from(sorted(obj)))
        return {k: v for k, v in obj.items() if k != key}
    if action == "add":
        return {**obj, draw(st.text(max_size=6) | _STRINGS): draw(_JSON)}
    return draw(_JSON)


def _focus_paths(tree, depth: int = 3) -> list[tuple]:
    """Every path of dict keys down to `depth`: mutations start at one of them, so that deep fields (a tensor's
    data_offsets, a quantized weight's bits) are hit as often as the top of the tree."""
    paths = [()]
    if isinstance(tree, dict) and depth:
        for key, value in tree.items():
            paths += [(key, *p) for p in _focus_paths(value, depth - 1)]
    return paths


def _mutate_at(draw, tree, path: tuple):
    if not path:
        return _mutate(draw, tree)
    return {**tree, path[0]: _mutate_at(draw, tree[path[0]], path[1:])}


@st.composite
def _mutated(draw, tree, most: int = 3, elsewhere: str = ""):
    """1..most mutations; `elsewhere`: a key whose subtree another test fuzzes (reached here only from the root)."""
    paths = [p for p in _focus_paths(tree) if not (elsewhere and p[:1] == (elsewhere,))]
    for _ in range(draw(st.integers(1, most))):
        path = draw(st.sampled_from(paths))
        tree = _mutate_at(draw, tree, path) if _has_path(tree, path) else _mutate(draw, tree)
    return tree


def _has_path(tree, path: tuple) -> bool:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return False
        tree = tree[key]
    return True


@st.composite
def _dumped(draw, obj) -> str:
    """JSON text of obj (NaN/Infinity allowed), sometimes with one number swapped for a raw literal (1e999, 4.9...)."""
    text = json.dumps(obj, allow_nan=True)
    numbers = [m.span() for m in re.finditer(r"-?\d+(\.\d+)?([eE][-+]?\d+)?", text)]
    if numbers and draw(st.booleans()):
        a, b = numbers[draw(st.integers(0, len(numbers) - 1))]
        text = text[:a] + draw(st.sampled_from(_RAW_NUMBERS)) + text[b:]
    return text


@st.composite
def _framed(draw, header_text: str, body: bytes, exact: bool = False) -> bytes:
    """The file: length field (sometimes wrong), header, data area (sometimes a byte short or long)."""
    raw = header_text.encode("utf-8", "surrogatepass")
    n = len(raw) if exact or draw(st.sampled_from([True] * 19 + [False])) else draw(st.integers(0, 2**64 - 1))
    cut = None if exact else draw(st.sampled_from([None] * 18 + [-1, 1]))
    tail = body if cut is None else (body[:-1] if cut < 0 else body + b"\0")
    return struct.pack("<Q", n) + raw + tail


@st.composite
def _flipped(draw, valid: bytes) -> bytes:
    """Random bytes, or the valid file with a few bytes of its length field or JSON changed."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))
    raw = bytearray(valid)
    n = 8 + struct.unpack("<Q", valid[:8])[0]
    for _ in range(draw(st.integers(1, 4))):
        raw[draw(st.integers(0, n - 1))] = draw(st.integers(0, 255))
    return bytes(raw)


@settings(FUZZ, max_examples=400)
@given(data=st.data(), kind=st.sampled_from(["inline", "external"]))
def test_random_and_flipped_bytes(base, data, kind):
    _fuzz_file(base, data.draw(_flipped(base[kind][0].read_bytes())))


@settings(FUZZ, max_examples=1000)
@given(data=st.data(), kind=st.sampled_from(["inline", "external"]))
def test_mutated_safetensors_header(base, data, kind):
    _, header, body = base[kind]
    text = data.draw(_mutated(header, elsewhere="__metadata__").flatmap(_dumped))
    _fuzz_file(base, data.draw(_framed(text, body)))


@settings(FUZZ, max_examples=1000)
@given(data=st.data(), kind=st.sampled_from(["inline", "external"]))
def test_mutated_lowbit_metadata(base, data, kind):
    _, header, body = base[kind]
    meta = data.draw(_mutated(json.loads(header["__metadata__"]["lowbit"])).flatmap(_dumped))
    _fuzz_file(base, data.draw(_framed(json.dumps({**header, "__metadata__": {"lowbit": meta}}), body)))


@st.composite
def _moved_ranges(draw, header: dict, size: int) -> dict:
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    moved = dict(header)
    for name in draw(st.lists(st.sampled_from(sorted(tensors)), min_size=1, max_size=3, unique=True)):
        begin, end = tensors[name]["data_offsets"]
        begin2 = draw(st.integers(0, size + 8))
        end2 = begin2 + end - begin if draw(st.booleans()) else draw(st.integers(0, size + 8))
        moved[name] = {**tensors[name], "data_offsets": [begin2, end2]}
    return moved


@settings(FUZZ, max_examples=300)
@given(data=st.data())
def test_overlapping_and_gapped_ranges(base, data):
    _, header, body = base["inline"]
    moved = data.draw(_moved_ranges(header, len(body)))
    path = _fuzz_file(base, data.draw(_framed(json.dumps(moved), body, exact=True)))
    if not _tiles([v["data_offsets"] for k, v in moved.items() if k != "__metadata__"], len(body)):
        path.write_bytes(data.draw(_framed(json.dumps(moved), body, exact=True)))
        try:
            with pytest.raises(CheckpointError, match="overlaps|belong to no tensor|truncated|bytes, but dtype"):
                read_header(path)
        finally:
            path.unlink()


def _tiles(ranges: list[list[int]], size: int) -> bool:
    at = 0
    for begin, end in sorted(ranges):
        if begin != at or end < begin:
            return False
        at = end
    return at == size


def test_fuzz_base_files_round_trip(base):
    """The unmutated files are accepted by every reader (so the fuzz tests start from valid inputs)."""
    for path, _, _ in base.values():
        _check_all(path)
        assert set(open_checkpoint(path).quantized) == {"fc.weight", "head.weight"}
        assert isinstance(load(_tiny(), path).fc, lowbit.nn.QuantLinear)
