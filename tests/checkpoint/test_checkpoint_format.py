"""The checkpoint file itself: exact tensor round trip, safetensors interop, strict header checks, atomic writes."""

import json
import os
import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lowbit.checkpoint import CheckpointError, open_checkpoint, save
from lowbit.checkpoint import safetensors_io as sio
from lowbit.checkpoint.external import data_path_for
from lowbit.checkpoint.header import build_metadata
from lowbit.quant import QuantConfig, quantize_weight


@pytest.fixture
def state(rng):
    """Quantized weights of several kinds (odd K, symmetric, fp16 storage, conv) and plain tensors of 4 dtypes."""
    return {
        "fc.weight": quantize_weight(torch.randn(33, 100, generator=rng), QuantConfig(bits=3, block_size=32)),
        "fc.bias": torch.randn(33, generator=rng),
        "sym.weight": quantize_weight(torch.randn(16, 64, generator=rng), QuantConfig(bits=4, symmetric=True)),
        "half.weight": quantize_weight(torch.randn(8, 40, generator=rng), QuantConfig(bits=16)),
        "conv.weight": quantize_weight(torch.randn(6, 4, 3, 3, generator=rng), QuantConfig(bits=5, block_size=-1)),
        "norm.weight": torch.randn(7, generator=rng).to(torch.bfloat16),
        "ids": torch.arange(5, dtype=torch.int64),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
    }


def _assert_same(ckpt, state):
    for name, v in state.items():
        if isinstance(v, torch.Tensor):
            got = ckpt.tensor(name)
            assert got.dtype == v.dtype and torch.equal(got, v), name
        else:
            got = ckpt.quantized_weight(name)
            assert got.metadata() == v.metadata()
            for f, t in v.tensors().items():
                assert torch.equal(got.tensors()[f], t), (name, f)
            assert torch.equal(got.dequantize(torch.float64), v.dequantize(torch.float64))


def test_save_open_round_trip_is_exact(tmp_path, state):
    path = save(state, tmp_path / "m.safetensors")
    ckpt = open_checkpoint(path)
    assert set(ckpt.quantized) == {k for k, v in state.items() if not isinstance(v, torch.Tensor)}
    assert sorted(ckpt.floats) == sorted(k for k, v in state.items() if isinstance(v, torch.Tensor))
    assert ckpt.groups["sym.weight"] == {"packed": "sym.weight_packed", "scale": "sym.weight_scale"}
    assert ckpt.groups["half.weight"] == {"packed": "half.weight_packed"}
    _assert_same(ckpt, state)


def test_file_is_plain_safetensors_with_aligned_tensors(tmp_path, state):
    path = save(state, tmp_path / "m.safetensors")
    ckpt = open_checkpoint(path)
    with safe_open(str(path), framework="pt") as f:
        body = json.loads(f.metadata()["lowbit"])
        assert body["format"] == "lowbit.checkpoint" and body["version"] == 1 and body["external_data"] is None
        assert body["quantized"]["fc.weight"] == state["fc.weight"].metadata()
        for name in f.keys():
            assert torch.equal(f.get_tensor(name), ckpt.tensor(name)), name
    for e in ckpt.entries.values():
        assert e.begin % e.dtype.itemsize == 0, e
    assert os.stat(path).st_mode & 0o777 == 0o644


def test_save_is_deterministic(tmp_path, state):
    a, b = save(state, tmp_path / "a.safetensors"), save(dict(reversed(state.items())), tmp_path / "b.safetensors")
    assert a.read_bytes() == b.read_bytes()


def test_truncated_file_is_refused(tmp_path, state):
    path = save(state, tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(CheckpointError, match="is truncated: tensor .* ends at byte"):
        open_checkpoint(path)
    path.write_bytes(data[:5])
    with pytest.raises(CheckpointError, match="truncated: 5 bytes"):
        open_checkpoint(path)
    path.write_bytes(data[:100])
    with pytest.raises(CheckpointError, match="truncated or not a safetensors file"):
        open_checkpoint(path)


def test_corrupted_header_is_refused(tmp_path, state):
    path = save(state, tmp_path / "m.safetensors")
    data = bytearray(path.read_bytes())
    data[9:14] = b"@@@@@"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted header"):
        open_checkpoint(path)


def _write_raw(path, tensors, body):
    save_file(tensors, str(path), metadata={"lowbit": json.dumps(body)})


def _body(quantized, **kw):
    return {"format": "lowbit.checkpoint", "version": 1, "lowbit_version": "0.1.0", "quantized": quantized,
            "external_data": None, **kw}


def test_newer_version_and_foreign_files_are_refused(tmp_path, state):
    qw = state["fc.weight"]
    tensors = {f"fc.weight_{k}": v for k, v in qw.tensors().items()}
    _write_raw(tmp_path / "v4.safetensors", tensors, _body({"fc.weight": qw.metadata()}, version=4))
    with pytest.raises(CheckpointError, match="format version 4, but this lowbit .* reads versions 1..3; upgrade"):
        open_checkpoint(tmp_path / "v4.safetensors")
    newer_weight = {**qw.metadata(), "version": 9}
    _write_raw(tmp_path / "w9.safetensors", tensors, _body({"fc.weight": newer_weight}))
    with pytest.raises(CheckpointError, match="'fc.weight' has bad metadata: packed-weight format version 9"):
        open_checkpoint(tmp_path / "w9.safetensors")
    save_file({"a": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="not a lowbit checkpoint"):
        open_checkpoint(tmp_path / "plain.safetensors")
    _write_raw(tmp_path / "other.safetensors", {"a": torch.zeros(2)}, {"format": "other"})
    with pytest.raises(CheckpointError, match="metadata format 'other'"):
        open_checkpoint(tmp_path / "other.safetensors")


def test_metadata_contradicting_tensors_is_refused(tmp_path, state):
    qw = state["fc.weight"]  # 3 bits, (33, 100), block 32: packed (33, 38), scale/zero (33, 4)
    tensors = {f"fc.weight_{k}": v for k, v in qw.tensors().items()}
    meta = qw.metadata()
    _write_raw(tmp_path / "a.safetensors", tensors, _body({"fc.weight": {**meta, "bits": 4}}))
    with pytest.raises(CheckpointError, match=r"'fc.weight_packed' has shape \[33, 38\], but the metadata .* "
                                              r"implies \[33, 50\]"):
        open_checkpoint(tmp_path / "a.safetensors")
    del tensors["fc.weight_zero"]
    _write_raw(tmp_path / "b.safetensors", tensors, _body({"fc.weight": meta}))
    with pytest.raises(CheckpointError, match="missing tensor 'fc.weight_zero' of quantized weight 'fc.weight'"):
        open_checkpoint(tmp_path / "b.safetensors")
    tensors["fc.weight_zero"] = qw.zero
    _write_raw(tmp_path / "c.safetensors", tensors, _body({"fc.weight": {**meta, "symmetric": True}}))
    with pytest.raises(CheckpointError, match="'fc.weight_zero' is not used by the metadata of 'fc.weight'"):
        open_checkpoint(tmp_path / "c.safetensors")
    tensors["fc.weight_packed"] = qw.packed.to(torch.int16)
    _write_raw(tmp_path / "d.safetensors", tensors, _body({"fc.weight": meta}))
    with pytest.raises(CheckpointError, match="'fc.weight'.*'packed' has dtype torch.int16"):
        open_checkpoint(tmp_path / "d.safetensors").quantized_weight("fc.weight")


def test_tensor_bytes_must_match_dtype_and_shape(tmp_path):
    path = tmp_path / "m.safetensors"
    header = json.dumps({"__metadata__": build_metadata({}), "a": {"dtype": "F32", "shape": [3],
                                                                   "data_offsets": [0, 8]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))
    with pytest.raises(CheckpointError, match="tensor 'a' has 8 bytes, but dtype F32 and shape \\[3\\] need 12"):
        open_checkpoint(path)


def test_external_data(tmp_path, state):
    path = save(state, tmp_path / "m.safetensors", external_data=True)
    data = data_path_for(path)
    assert data.name == "m.safetensors.data" and data.is_file()
    assert path.stat().st_size < 2048 < data.stat().st_size
    ckpt = open_checkpoint(path)
    assert ckpt.external == data and ckpt.file_bytes == path.stat().st_size + data.stat().st_size
    _assert_same(ckpt, state)
    with safe_open(str(data), framework="pt") as f:  # the data file is a plain safetensors file
        assert torch.equal(f.get_tensor("fc.bias"), state["fc.bias"])
    save({"x": torch.zeros(3)}, tmp_path / "other.safetensors", external_data=True)
    os.replace(data_path_for(tmp_path / "other.safetensors"), data)
    with pytest.raises(CheckpointError, match="does not belong to .*m.safetensors"):
        open_checkpoint(path)
    data.unlink()
    with pytest.raises(FileNotFoundError, match="external data file .*m.safetensors.data .* does not exist"):
        open_checkpoint(path)


@pytest.mark.parametrize("external", [False, True])
def test_failed_save_keeps_old_file_and_leaves_no_temp(tmp_path, state, monkeypatch, external):
    path = save({"old": torch.ones(4)}, tmp_path / "m.safetensors", external_data=external)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    calls = []

    def failing_write(self, name, tensor):
        calls.append(name)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return real_write(self, name, tensor)

    real_write = sio.AtomicWriter.write
    monkeypatch.setattr(sio.AtomicWriter, "write", failing_write)
    with pytest.raises(RuntimeError, match="disk full"):
        save(state, path, external_data=external)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_unwritable_output_and_bad_inputs(tmp_path, state):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(FileNotFoundError, match="output directory .*file does not exist or is not a directory"):
        save(state, blocker / "m.safetensors")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        save(state, tmp_path)
    with pytest.raises(CheckpointError, match="'w' is on the meta device"):
        save({"w": torch.empty(2, device="meta")}, tmp_path / "m.safetensors")
    with pytest.raises(TypeError, match="'n' is a int"):
        save({"n": 3}, tmp_path / "m.safetensors")
    with pytest.raises(TypeError, match="nn.Module or a dict"):
        save([1], tmp_path / "m.safetensors")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_checkpoint(tmp_path / "none.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_format_md_worked_example(tmp_path):
    """The 3-bit row of docs/FORMAT.md: bytes DD 11 8B 0F, values (q - 3.25) * 0.5, through a saved file."""
    from lowbit.quant import QuantizedWeight, pack_bits

    q = torch.tensor([[5, 3, 7, 0, 1, 6, 2, 4, 7, 1]], dtype=torch.uint8)
    packed = pack_bits(q, 3)
    assert packed.tolist() == [[0xDD, 0x11, 0x8B, 0x0F]]
    qw = QuantizedWeight(packed=packed, scale=torch.tensor([[0.5]], dtype=torch.float16),
                         zero=torch.tensor([[3.25]], dtype=torch.float16), shape=(1, 10), dtype=torch.float32,
                         bits=3, block_size=16, symmetric=False, method="rtn")
    save({"fc.weight": qw}, tmp_path / "m.safetensors")
    got = open_checkpoint(tmp_path / "m.safetensors").quantized_weight("fc.weight").dequantize()
    want = [0.875, -0.125, 1.875, -1.625, -1.125, 1.375, -0.625, 0.375, 1.875, -1.125]
    assert got.tolist() == [want]
    row = bytes(packed[0].tolist())  # the decoding recipe given in the document
    codes = [(int.from_bytes(row[j * 3 // 8: j * 3 // 8 + 2], "little") >> (j * 3 % 8)) & 7 for j in range(10)]
    assert codes == q[0].tolist()


def _raw_file(path, header_text: str, data_size: int):
    raw = header_text.encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(data_size))
    return path


_F32 = '"dtype": "F32", "shape": [2], "data_offsets": '


@pytest.mark.parametrize("header, data_size, match", [
    ('{"a": {' + _F32 + '[0, 8]}, "b": {' + _F32 + '[4, 12]}}', 12, "'b' .* overlaps tensor 'a'"),
    ('{"a": {' + _F32 + '[0, 8]}, "b": {' + _F32 + '[0, 8]}}', 8, "overlaps tensor"),
    ('{"a": {' + _F32 + '[0, 8]}, "b": {' + _F32 + '[12, 20]}}', 20, "4 bytes before tensor 'b' belong to no tensor"),
    ('{"a": {' + _F32 + '[0, 8]}}', 16, "last 8 bytes belong to no tensor"),
    ('{"a": {"dtype": "F32", "shape": [4.9], "data_offsets": [0, 16]}}', 16, r"shape \[4.9\]"),
    ('{"a": {"dtype": "F32", "shape": [4.0], "data_offsets": [0, 16]}}', 16, r"shape \[4.0\]"),
    ('{"a": {"dtype": "F32", "shape": [1e999], "data_offsets": [0, 16]}}', 16, r"shape \[inf\]"),
    ('{"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 16]}}', 16, r"shape \[-1\]"),
    ('{"a": {"dtype": "U8", "shape": [true], "data_offsets": [0, 1]}}', 1, r"shape \[True\]"),
    ('{"a": {"dtype": "F32", "shape": [NaN], "data_offsets": [0, 16]}}', 16, "NaN is not a JSON number"),
    ('{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16.0]}}', 16, "data_offsets"),
    ('{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 1e999]}}', 16, "data_offsets"),
    ('{"a": {"dtype": "F32", "shape": [4], "data_offsets": ["0", "16"]}}', 16, "data_offsets"),
    ('{"a": {"dtype": "F32", "shape": [4], "data_offsets": [16, 0]}}', 16, "has -16 bytes"),
    ('{"a": {"dtype": "F33", "shape": [4], "data_offsets": [0, 16]}}', 16, "unknown dtype 'F33'"),
    ('{"a": {"dtype": 4, "shape": [4], "data_offsets": [0, 16]}}', 16, "unknown dtype 4"),
    ('{"a": {"dtype": "F32", "shape": [4]}}', 16, "needs 'dtype', 'shape' and 'data_offsets'"),
    ('{"a": [1, 2]}', 16, "needs 'dtype'"),
    ('{"__metadata__": {"lowbit": 5}}', 0, "'__metadata__' must be an object of strings"),
    ('{"__metadata__": ["lowbit"]}', 0, "'__metadata__' must be an object of strings"),
    ('[1, 2]', 0, "a JSON list, not an object"),
    ('{"a": ' * 100_000, 0, "not valid JSON"),
], ids=["overlap", "alias", "gap", "trailing bytes", "shape 4.9", "shape 4.0", "shape 1e999", "shape -1",
        "shape true", "shape NaN", "offset float", "offset 1e999", "offset strings", "offsets reversed",
        "unknown dtype", "dtype int", "no offsets", "entry a list", "metadata int", "metadata list", "header a list",
        "deep nesting"])
def test_header_is_as_strict_as_safetensors(tmp_path, header, data_size, match):
    """Every header the safetensors library refuses is refused, with a message naming the file and the problem."""
    path = _raw_file(tmp_path / "m.safetensors", header, data_size)
    with pytest.raises(Exception):  # noqa: B017 - the reference: safetensors refuses it too (SafetensorError)
        with safe_open(str(path), framework="pt"):
            pass
    with pytest.raises(CheckpointError, match=f"^{path}.*{match}"):
        sio.read_header(path)
    with pytest.raises(CheckpointError, match=match):
        open_checkpoint(path)


def test_repeated_tensor_names_are_refused(tmp_path):
    """safetensors keeps the last of two entries of one name; lowbit refuses the ambiguity."""
    path = _raw_file(tmp_path / "m.safetensors", '{"a": {' + _F32 + '[0, 8]}, "a": {' + _F32 + '[0, 8]}}', 8)
    with pytest.raises(CheckpointError, match="corrupted header .*key 'a' appears twice"):
        sio.read_header(path)


@pytest.mark.parametrize("field, text", [
    ("bits", "3.9"), ("bits", "3.0"), ("bits", "true"), ("bits", '"3"'), ("bits", "1e999"),
    ("block_size", "32.0"), ("block_size", "1e999"), ("version", "1.0"), ("version", "true"), ("version", "0"),
    ("shape", "[33, 100.0]"), ("shape", "[33, -100]"), ("shape", "[33, true]"), ("shape", "[33]"),
    ("shape", "[3037000500, 3037000500, 2]"), ("symmetric", "0"), ("symmetric", '"false"'), ("dtype", "5"),
    ("method", "null"), ("format", "null"),
])
def test_metadata_numbers_must_be_plain_integers(tmp_path, state, field, text):
    """`bits: 3.9` is refused, not read as 3 (the tensors here are 3-bit, so a truncating reader would accept it)."""
    qw = state["fc.weight"]
    tensors = {f"fc.weight_{k}": v for k, v in qw.tensors().items()}
    entry, value = json.dumps(qw.metadata()), json.dumps(qw.metadata()[field])
    assert entry.count(f'"{field}": {value}') == 1
    entry = entry.replace(f'"{field}": {value}', f'"{field}": {text}')
    body = json.dumps(_body({"fc.weight": "ENTRY"})).replace('"ENTRY"', entry)
    save_file(tensors, str(tmp_path / "m.safetensors"), metadata={"lowbit": body})
    with pytest.raises(CheckpointError, match=f"'fc.weight' has bad metadata: .*{field}"):
        open_checkpoint(tmp_path / "m.safetensors")


@pytest.mark.parametrize("body", ['{"format": "lowbit.checkpoint", "version": true, "quantized": {}}',
                                  '{"format": "lowbit.checkpoint", "version": 1.0, "quantized": {}}',
                                  '{"format": "lowbit.checkpoint", "version": 1, "quantized": {}, "x": NaN}',
                                  '{"format": "lowbit.checkpoint", "version": 1, "quantized": {}, '
                                  '"external_data": false}',
                                  '{"format": "lowbit.checkpoint", "version": 1, "quantized": {}, '
                                  '"external_data": {"file": "m.safetensors.data", "header_sha256": 5}}',
                                  '{"format": "lowbit.checkpoint", "version": 1, "quantized": {}, '
                                  '"lowbit_version": 1}'])
def test_checkpoint_metadata_types_are_checked(tmp_path, body):
    save_file({"a": torch.zeros(2)}, str(tmp_path / "m.safetensors"), metadata={"lowbit": body})
    with pytest.raises(CheckpointError, match=f"^{tmp_path / 'm.safetensors'}"):
        open_checkpoint(tmp_path / "m.safetensors")


def test_every_safetensors_dtype_is_read(tmp_path, rng):
    """float8, uint16..64 and complex tensors are valid safetensors (issue 13): stored and read back bit for bit."""
    raw = torch.randint(0, 255, (4, 8), dtype=torch.uint8, generator=rng)
    tensors = {str(dtype): raw.view(dtype).clone() for dtype in sio.DTYPES.values() if dtype != torch.bool}
    tensors["bool"] = raw > 100
    save_file(tensors, str(tmp_path / "plain.safetensors"))
    entries, _, _ = sio.read_header(tmp_path / "plain.safetensors")
    assert {e.dtype for e in entries.values()} == set(sio.DTYPES.values())
    path = save(tensors, tmp_path / "m.safetensors")
    ckpt = open_checkpoint(path)
    for name, t in tensors.items():
        got = ckpt.tensor(name)
        assert got.dtype == t.dtype and torch.equal(got.view(torch.uint8), t.view(torch.uint8)), name
    with safe_open(str(path), framework="pt") as f:
        assert torch.equal(f.get_tensor("torch.uint16").view(torch.uint8), tensors["torch.uint16"].view(torch.uint8))
    _raw_file(tmp_path / "f4.safetensors", '{"a": {"dtype": "F4", "shape": [4], "data_offsets": [0, 2]}}', 2)
    with pytest.raises(CheckpointError, match="dtype F4 .* which lowbit does not read"):
        sio.read_header(tmp_path / "f4.safetensors")
