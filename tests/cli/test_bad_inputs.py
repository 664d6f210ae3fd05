"""Bad files and values given to the commands end as one line naming the file (no traceback), before any output:
garbage calibration files, image bombs and sizes, metadata with an unknown method; and an aliased module loads."""

import json
import struct
import textwrap
import zlib

import pytest
import torch
from torch import nn

import lowbit
from lowbit.checkpoint import CheckpointError, open_checkpoint, save
from lowbit.cli import main
from lowbit.quant import QuantConfig, quantize_weight

_MODEL = textwrap.dedent("""
    import torch
    from torch import nn

    def make():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 16))

    def conv():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
""")


@pytest.fixture
def work(tmp_path, monkeypatch):
    (tmp_path / "bi_model.py").write_text(_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _one_line_error(capsys, argv, *needles):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = err.splitlines()  # warnings (one line each) may come first; the error is the last line
    assert code == 1 and lines[-1].startswith("lowbit: error:") and all(x.startswith("lowbit: ") for x in lines), err
    for n in needles:
        assert str(n) in err, err


@pytest.mark.parametrize("command", ["convert", "quant", "auto"])
def test_garbage_safetensors_in_a_calibration_folder(work, capsys, command):
    data = work / "DATA"
    data.mkdir()
    torch.save(torch.randn(4, 32), data / "00.pt")
    (data / "01.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    out = work / "out.safetensors"
    argv = {"convert": ["convert", "--model", "bi_model:make", "--calib", data, "--method", "gptq", "--quiet", out],
            "quant": ["quant", "--model", "bi_model:make", "--calib", data, "--quiet", out],
            "auto": ["auto", "--model", "bi_model:make", "--data", data, "--size", "30%", "--quiet", "--no-cache",
                     "--bits", "4", "--blocks", "32", "--out", work / "plan.json"]}[command]
    _one_line_error(capsys, argv, data / "01.safetensors", "cannot be read as tensors")
    assert not out.exists() and not (work / "plan.json").exists()


def _image_folder(work, size=(8, 8)):
    from PIL import Image

    folder = work / "IMG"
    folder.mkdir()
    Image.new("RGB", size, (10, 20, 30)).save(folder / "a.png")
    return folder


@pytest.mark.parametrize(("fields", "needle"), [({"width": 16.9, "height": 16}, "'width'=16.9"),
                                                 ({"width": 100000, "height": 100000}, "'width'=100000"),
                                                 ({"width": 16000, "height": 16000}, "more than"),
                                                 ({"width": 16, "height": True}, "'height'=True"),
                                                 ({"width": 16, "height": 16, "mean": "x"}, "'mean'")])
def test_image_sizes_refused_naming_the_config(work, capsys, fields, needle):
    pytest.importorskip("PIL.Image")
    folder = _image_folder(work)
    (work / "q.json").write_text(json.dumps(fields))
    _one_line_error(capsys, ["quant", "--model", "bi_model:conv", "--calib", folder, "--config", work / "q.json",
                             "--quiet", work / "o.safetensors"], needle)
    assert not (work / "o.safetensors").exists()


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels (signature, IHDR, empty IDAT, IEND): nothing to decode."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize(("size", "needle"), [((6000, 6000), "6000x6000"), ((40000, 40000), "decompression bomb"),
                                              (None, "cannot be used")])
def test_decompression_bomb_and_broken_image(work, capsys, size, needle):
    pytest.importorskip("PIL.Image")
    folder = _image_folder(work)
    (folder / "bomb.png").write_bytes(_png_header(*size) if size else b"\x89PNG\r\n\x1a\n garbage")
    (work / "q.json").write_text('{"width": 8, "height": 8}')
    argv = ["quant", "--model", "bi_model:conv", "--calib", folder, "--config", work / "q.json", "--quiet",
            work / "o.safetensors"]
    _one_line_error(capsys, argv, folder / "bomb.png", needle)
    assert not (work / "o.safetensors").exists()


def test_unknown_method_in_metadata_refused(tmp_path):
    qw = quantize_weight(torch.randn(16, 64), QuantConfig(bits=4, block_size=32))
    path = save({"fc.weight": qw}, tmp_path / "m.safetensors")
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    body = json.loads(header["__metadata__"]["lowbit"])
    for method, bits in (("bogus", 4), ("fp16", 4), ("rtn", 16)):
        body["quantized"]["fc.weight"].update(method=method, bits=bits)
        header["__metadata__"]["lowbit"] = json.dumps(body)
        text = json.dumps(header).encode()
        path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])
        with pytest.raises(CheckpointError, match=f"m.safetensors: quantized tensor 'fc.weight'.*method='{method}'"):
            open_checkpoint(path)


class Aliased(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(64, 32)
        self.b = self.a  # one module under two names: state_dict writes both
        self.c = nn.Linear(32, 8)

    def forward(self, x):
        return self.c(self.b(x))


@pytest.mark.parametrize("how", ["save", "convert"])
def test_aliased_module_saves_and_loads_back(tmp_path, how):
    torch.manual_seed(0)
    model, x = Aliased().eval(), torch.randn(3, 64)
    if how == "save":
        torch.manual_seed(0)
        path = save(lowbit.quantize(Aliased().eval(), QuantConfig(bits=8, block_size=-1)), tmp_path / "q.safetensors")
    else:
        from safetensors.torch import save_file

        from lowbit.checkpoint import convert

        save_file({k: v.clone() for k, v in model.state_dict().items()}, tmp_path / "f.safetensors")
        convert(tmp_path / "f.safetensors", tmp_path / "q.safetensors", QuantConfig(bits=8, block_size=-1),
                progress=False)
        path = tmp_path / "q.safetensors"
    torch.manual_seed(0)
    loaded = lowbit.load(Aliased().eval(), path)
    assert loaded.a is loaded.b and isinstance(loaded.a, lowbit.nn.QuantLinear)
    ref = model(x)
    cos = torch.nn.functional.cosine_similarity(loaded(x).flatten(), ref.flatten(), dim=0)
    assert cos > 0.999


def test_alias_tensors_must_repeat_the_canonical_ones(tmp_path):
    torch.manual_seed(0)
    q = lowbit.quantize(Aliased().eval(), QuantConfig(bits=8, block_size=-1))
    sd = {**lowbit.nn.quantized_weights(q), "a.bias": q.a.bias.detach(), "c.weight": q.c.weight.detach(),
          "c.bias": q.c.bias.detach(), "b.bias": torch.zeros(5)}
    path = save(sd, tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match="'b.bias' belongs to an alias of module 'a'"):
        lowbit.load(Aliased().eval(), path)


def test_npy_header_larger_than_its_file_is_refused_without_allocating(tmp_path):
    """A .npy whose header claims 80 GB: read mapped, so the claim fails against the file size (no allocation)."""
    import numpy as np

    from lowbit.calib.sources import load_file

    path = tmp_path / "huge.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (100000, 100000)})
        f.write(b"\0" * 64)
    with pytest.raises(ValueError, match=r"calibration file .*huge.npy cannot be read as tensors"):
        load_file(path)


@pytest.mark.parametrize("how", ["--block", "--config"])
def test_block_wider_than_every_layer_is_one_block_per_row(tmp_path, capsys, how):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    w = torch.randn(64, 128)
    save_file({"fc.weight": w}, tmp_path / "f.safetensors")
    big = str(2**34)
    extra = ["--block", big] if how == "--block" else ["--config", tmp_path / "c.json"]
    (tmp_path / "c.json").write_text(f'{{"fc": {{"bits": 4, "block_size": {big}}}}}')
    assert main([str(a) for a in ["convert", tmp_path / "f.safetensors", tmp_path / "q.safetensors", "--quiet",
                                  *extra]]) == 0
    capsys.readouterr()
    ckpt = open_checkpoint(tmp_path / "q.safetensors")
    qw = ckpt.quantized_weight("fc.weight")
    assert ckpt.quantized["fc.weight"]["block_size"] == 2**34 and qw.group_size == 128 and qw.num_blocks == 1
    per_row = quantize_weight(w, QuantConfig(bits=4, block_size=-1))
    assert torch.equal(qw.dequantize(), per_row.dequantize())
    layer = lowbit.load(nn.Sequential(__import__("collections").OrderedDict(fc=nn.Linear(128, 64, bias=False))),
                        tmp_path / "q.safetensors")
    x = torch.randn(2, 128)
    torch.testing.assert_close(layer(x), x @ per_row.dequantize().t(), rtol=1e-4, atol=1e-4)
