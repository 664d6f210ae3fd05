"""Checkpoint header sections (lowbit.checkpoint.sections): a toy kind registered from this file alone is saved,
checked, prepared and applied; a file with an unregistered kind is refused in one line naming file and section."""

import json

import pytest
import torch
from torch import nn

import lowbit
from lowbit.checkpoint import CheckpointError, open_checkpoint
from lowbit.checkpoint.sections import Section, register_section, sections, unregister_section
from lowbit.quant import QuantConfig


def _tagged_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 64))
    model = lowbit.quantize(model, QuantConfig(bits=4, block_size=16), progress=False)
    model.toy_tag = 7
    return model


def _check_toy(path, obj):
    if not isinstance(obj, dict) or type(obj.get("tag")) is not int:
        raise ValueError(f"{path}: bad toy section {obj!r}")


def _apply_toy(model, obj, quantized):
    model.toy_tag = obj["tag"]
    model.toy_quantized = sorted(quantized)
    return model


@pytest.fixture
def toy():
    calls = []
    section = register_section(Section(
        kind="toy", version=2, check=_check_toy,
        save=lambda m: {"tag": m.toy_tag} if hasattr(m, "toy_tag") else None,
        prepare=lambda m, obj: calls.append(("prepare", obj["tag"])),
        apply=_apply_toy))
    yield section, calls
    unregister_section("toy")


def _header(path) -> dict:
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(json.loads(f.read(n))["__metadata__"]["lowbit"])


def _rewrite_header(path, edit) -> None:
    """Rewrite the lowbit JSON of a safetensors file (same tensors, new header length)."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    body = json.loads(header["__metadata__"]["lowbit"])
    edit(body)
    header["__metadata__"]["lowbit"] = json.dumps(body)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    path.write_bytes(len(new).to_bytes(8, "little") + new + raw[8 + n:])


def test_toy_section_saved_checked_and_loaded(toy, tmp_path):
    _, calls = toy
    model = _tagged_model()
    path = lowbit.save(model, tmp_path / "m.safetensors")
    body = _header(path)
    assert body["toy"] == {"tag": 7} and body["version"] == 2  # the section raises the format version to its own
    fresh = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 64))
    loaded = lowbit.load(fresh, path)
    assert calls == [("prepare", 7)]
    assert loaded.toy_tag == 7 and loaded.toy_quantized == ["0.weight", "2.weight"]
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_toy_section_check_refuses_a_bad_object(toy, tmp_path):
    path = lowbit.save(_tagged_model(), tmp_path / "m.safetensors")
    _rewrite_header(path, lambda body: body.update(toy={"tag": "seven"}))
    with pytest.raises(CheckpointError, match="bad toy section"):
        open_checkpoint(path)


def test_unknown_section_is_one_line_naming_file_and_section(toy, tmp_path):
    path = lowbit.save(_tagged_model(), tmp_path / "m.safetensors")
    unregister_section("toy")
    with pytest.raises(CheckpointError) as e:
        open_checkpoint(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "header section 'toy'" in msg and "'static'" in msg


def test_model_without_the_section_writes_none(toy, tmp_path):
    model = lowbit.quantize(nn.Sequential(nn.Linear(64, 32)), QuantConfig(bits=4, block_size=16), progress=False)
    body = _header(lowbit.save(model, tmp_path / "m.safetensors"))
    assert "toy" not in body and body["version"] == 1


def test_static_is_registered_by_its_provider_and_bad_kinds_are_refused():
    assert "static" in sections() and sections()["static"].version == 2
    with pytest.raises(ValueError, match="core header key"):
        register_section(Section(kind="quantized", check=_check_toy))
    with pytest.raises(ValueError, match="identifier"):
        Section(kind="a-b", check=_check_toy)


def test_export_refuses_a_section_without_an_export_hook(toy, tmp_path):
    path = lowbit.save(_tagged_model(), tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="header section 'toy', which pack-quantized cannot hold"):
        lowbit.export(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_fresh_process_finds_static_through_the_providers():
    import subprocess
    import sys

    code = ("import sys, lowbit.checkpoint as c\n"
            "assert 'lowbit.static' not in sys.modules\n"
            "from lowbit.checkpoint.sections import sections\n"
            "print(sorted(sections()), 'lowbit.static' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("]")[0].startswith("['static'") and out.stdout.strip().endswith("True")
