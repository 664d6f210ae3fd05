"""Files: no input lost, no non-regular file replaced, nothing read from outside, no half-published pair.

Every refusal is checked the way a user meets it: `lowbit ...` exits 1 with one `lowbit: error:` line naming the
file, and every file that was there before is left byte for byte (and kind for kind) as it was.
"""

import contextlib
import errno
import importlib
import os
import stat
import struct
import subprocess
import sys
import threading
import time

import pytest
import torch

from lowbit.checkpoint import CheckpointError, convert, open_checkpoint, save
from lowbit.checkpoint import safetensors_io as sio
from lowbit.checkpoint.outputs import STALE_AFTER_S, name_max
from lowbit.cli import main
from lowbit.quant import QuantConfig


@pytest.fixture
def no_rename_outside(monkeypatch, tmp_path):
    """A guard, not part of the check: a regression must fail the test, not replace /dev/null on this machine."""
    real = os.replace

    def guarded(src, dst, *args, **kwargs):
        if not os.path.abspath(dst).startswith(str(tmp_path)):
            raise AssertionError(f"test guard: refused to rename over {dst}")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", guarded)


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _error_line(code: int, err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("lowbit: error: "), (code, err)
    return lines[0]


def _tree(root) -> dict:
    """Every entry under root: file bytes, or the kind of a non-regular file (compared before and after)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            mode = os.lstat(p).st_mode
            if stat.S_ISREG(mode):
                with open(p, "rb") as f:
                    out[p] = f.read()
            else:
                out[p] = (stat.S_IFMT(mode), os.readlink(p) if stat.S_ISLNK(mode) else None)
    return out


# ------------------------------------------------------------------------------------------- OUT is IN


@pytest.mark.parametrize("how", ["same path", "symlink", "hard link", "relative path", "shard as data file"])
def test_convert_refuses_to_write_over_its_input(tmp_path, capsys, monkeypatch, model_file, how):
    src, extra = model_file, []
    if how == "same path":
        out = model_file
    elif how == "symlink":
        out = tmp_path / "link.safetensors"
        out.symlink_to(model_file)
    elif how == "hard link":
        out = tmp_path / "hard.safetensors"
        os.link(model_file, out)
    elif how == "relative path":
        monkeypatch.chdir(tmp_path)
        out = "./sub/../model.safetensors"
        (tmp_path / "sub").mkdir()
    else:  # the index names a shard that --external-data would write as OUT.data
        os.replace(model_file, tmp_path / "q.safetensors.data")
        (tmp_path / "model.safetensors.index.json").write_text(
            '{"weight_map": {"fc.weight": "q.safetensors.data", "fc.bias": "q.safetensors.data"}}')
        src, out, extra = tmp_path / "model.safetensors.index.json", tmp_path / "q.safetensors", ["--external-data"]
    before = _tree(tmp_path)
    code, stdout, err = _cli(capsys, "convert", src, out, "--quiet", *extra)
    assert "is the input file" in _error_line(code, err) and stdout == ""
    assert _tree(tmp_path) == before


# ------------------------------------------------------------------------------------------- non-regular outputs


@pytest.mark.parametrize("kind", ["fifo", "directory", "symlink to fifo", "fifo as data file"])
def test_convert_never_replaces_a_non_regular_output(tmp_path, capsys, model_file, kind):
    out, extra = tmp_path / "q.safetensors", []
    if kind == "fifo":
        os.mkfifo(out)
    elif kind == "directory":  # an existing folder OUT means OUT/model.safetensors: make that one a directory
        out.mkdir()
        (out / "model.safetensors").mkdir()
    elif kind == "symlink to fifo":
        os.mkfifo(tmp_path / "pipe")
        out.symlink_to(tmp_path / "pipe")
    else:
        os.mkfifo(tmp_path / "q.safetensors.data")
        extra = ["--external-data"]
    before = _tree(tmp_path)
    code, _, err = _cli(capsys, "convert", model_file, out, "--quiet", *extra)
    line = _error_line(code, err)
    assert "q.safetensors" in line and ("not a regular file" in line or "is a directory" in line), line
    assert _tree(tmp_path) == before


def test_convert_to_dev_null_is_refused_before_writing(tmp_path, capsys, model_file, no_rename_outside):
    st = os.stat("/dev/null")
    code, _, err = _cli(capsys, "convert", model_file, "/dev/null", "--quiet")
    assert "/dev/null exists and is a character device, not a regular file" in _error_line(code, err)
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (st.st_ino, st.st_rdev)
    assert not [n for n in os.listdir("/dev") if n.startswith(".null.")]


def test_output_turned_into_a_fifo_while_writing_is_not_replaced(tmp_path, capsys, model_file, monkeypatch):
    out = tmp_path / "q.safetensors"
    save({"old": torch.ones(2)}, out)
    real_write = sio.AtomicWriter.write

    def write(self, name, tensor):
        if out.is_file() and not out.is_symlink():
            out.unlink()
            os.mkfifo(out)  # someone else's FIFO appears at OUT between the start and the final rename
        return real_write(self, name, tensor)

    monkeypatch.setattr(sio.AtomicWriter, "write", write)
    code, _, err = _cli(capsys, "convert", model_file, out, "--quiet")
    assert "exists and is a FIFO" in _error_line(code, err)
    assert stat.S_ISFIFO(os.lstat(out).st_mode)
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors", "q.safetensors"]


# ------------------------------------------------------------------------------------------- names and leftovers


@pytest.mark.parametrize("stem", ["m", "é"])  # NAME_MAX counts bytes: a 2-byte character must not push it over
def test_output_names_up_to_name_max_work(tmp_path, model_file, stem):
    limit = name_max(tmp_path)
    pad = limit - len(".safetensors")
    name = stem * (pad // len(stem.encode())) + "x" * (pad % len(stem.encode())) + ".safetensors"
    assert len(name.encode()) == limit
    convert(model_file, tmp_path / name, QuantConfig(bits=4, block_size=32), progress=False)
    assert set(open_checkpoint(tmp_path / name).quantized) == {"fc.weight"}
    assert sorted(os.listdir(tmp_path)) == sorted(["model.safetensors", name])
    data_name = "d" * (limit - len(".safetensors.data")) + ".safetensors"  # OUT.data is exactly NAME_MAX
    convert(model_file, tmp_path / data_name, progress=False, external_data=True)
    assert open_checkpoint(tmp_path / data_name).external.name == data_name + ".data"


def test_names_too_long_are_refused_before_writing(tmp_path, capsys, model_file):
    limit = name_max(tmp_path)
    before = _tree(tmp_path)
    code, _, err = _cli(capsys, "convert", model_file, tmp_path / ("n" * (limit + 1)), "--quiet")
    assert f"is {limit + 1} bytes, longer than the {limit}" in _error_line(code, err)
    name = "d" * (limit - 3)  # fits, but its external data file name would not
    code, _, err = _cli(capsys, "convert", model_file, tmp_path / name, "--quiet", "--external-data")
    assert f"{name}.data' is {limit + 2} bytes" in _error_line(code, err)
    assert _tree(tmp_path) == before


def test_stale_temporary_files_are_removed_only_when_ours_unlocked_and_old(tmp_path, model_file):
    import fcntl

    out = tmp_path / "q.safetensors"
    old = time.time() - STALE_AFTER_S - 60
    names = {"stale": ".q.safetensors.k3j_x9a2.lowbit.tmp", "fresh": ".q.safetensors.a1b2c3d4.lowbit.tmp",
             "held": ".q.safetensors.zz99zz99.lowbit.tmp", "foreign": ".q.safetensors.k3j_x9a2.tmp",
             "other output": ".other.safetensors.k3j_x9a2.lowbit.tmp",
             "other data file": ".q.safetensors.data.k3j_x9a2.lowbit.tmp"}
    for key, name in names.items():
        (tmp_path / name).write_bytes(b"partial")
        if key != "fresh":
            os.utime(tmp_path / name, (old, old))
    held = os.open(tmp_path / names["held"], os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX)  # a live writer in another process holds its temporary file
    try:
        convert(model_file, out, progress=False)
        convert(tmp_path, tmp_path / "again.safetensors", progress=False)  # a directory input ignores leftovers
    finally:
        os.close(held)
    left = set(os.listdir(tmp_path))
    assert names["stale"] not in left
    assert {n for k, n in names.items() if k != "stale"} <= left
    assert open_checkpoint(out).quantized.keys() == open_checkpoint(tmp_path / "again.safetensors").quantized.keys()


# ------------------------------------------------------------------------------------------- racing writers


def test_racing_external_data_writers_never_both_succeed_with_a_mismatched_pair(tmp_path, model_file, monkeypatch):
    """A stops between publishing its data file and its main file until B has finished or waits for A's lock."""
    out = tmp_path / "q.safetensors"
    save_mod = importlib.import_module("lowbit.checkpoint.save")
    real_commit, real_lock = sio.AtomicWriter.commit, getattr(save_mod, "pair_lock", None)
    a_data_published, b_finished, b_at_lock = threading.Event(), threading.Event(), threading.Event()

    def commit(self):
        real_commit(self)
        if threading.current_thread().name == "A" and self.path.name.endswith(".data"):
            a_data_published.set()
            deadline = time.monotonic() + 30
            while not (b_finished.is_set() or b_at_lock.is_set()) and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(0.05)  # B is now blocked on the lock (or done)

    @contextlib.contextmanager
    def lock(directory):
        if threading.current_thread().name == "B":
            b_at_lock.set()
        with real_lock(directory):
            yield

    monkeypatch.setattr(sio.AtomicWriter, "commit", commit)
    monkeypatch.setattr(save_mod, "pair_lock", lock, raising=False)
    results = {}

    def run(bits):
        try:
            convert(model_file, out, QuantConfig(bits=bits, block_size=32), external_data=True, progress=False)
            results[bits] = "ok"
        except CheckpointError as e:
            results[bits] = str(e)
        finally:
            if threading.current_thread().name == "B":
                b_finished.set()

    a = threading.Thread(target=run, args=(4,), name="A")
    b = threading.Thread(target=run, args=(8,), name="B")
    a.start()
    assert a_data_published.wait(timeout=30)
    b.start()
    a.join(timeout=60)
    b.join(timeout=60)
    assert sorted(results) == [4, 8] and "ok" in results.values()
    if list(results.values()) == ["ok", "ok"]:
        bits = open_checkpoint(out).quantized["fc.weight"]["bits"]  # the pair on disk is one run's, whole
        assert bits == 8  # B waited for A's pair, then published its own


# ------------------------------------------------------------------------------------------- errors name the file


def test_disk_full_names_the_output_and_keeps_the_old_file(tmp_path, capsys, model_file, monkeypatch):
    out = tmp_path / "q.safetensors"
    save({"old": torch.ones(2)}, out)
    before = _tree(tmp_path)
    calls = []

    def full(fd, data, offset):
        calls.append(offset)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", full)
    code, _, err = _cli(capsys, "convert", model_file, out, "--quiet")
    assert f"cannot write {out}: No space left on device" in _error_line(code, err) and calls
    assert _tree(tmp_path) == before


def test_non_utf8_config_and_index_name_the_file(tmp_path, capsys, model_file):
    (tmp_path / "layers.json").write_bytes(b'{"fc": {"bits": 8}, "\xff": 1}')
    code, _, err = _cli(capsys, "convert", model_file, tmp_path / "o.safetensors", "--config",
                        tmp_path / "layers.json")
    assert f"overrides file {tmp_path / 'layers.json'} is not UTF-8 text" in _error_line(code, err)
    (tmp_path / "m.safetensors.index.json").write_bytes(b'{"weight_map": {"\xfe": "model.safetensors"}}')
    code, _, err = _cli(capsys, "convert", tmp_path / "m.safetensors.index.json", tmp_path / "o.safetensors")
    assert "m.safetensors.index.json is not UTF-8 text" in _error_line(code, err)
    assert not (tmp_path / "o.safetensors").exists()


# ------------------------------------------------------------------------------------------- reading from outside


@pytest.mark.parametrize("shard", ["../elsewhere/model.safetensors", "{abs}", "sub/../../elsewhere/model.safetensors"])
def test_index_shards_outside_its_directory_are_refused(tmp_path, capsys, model_file, shard):
    (tmp_path / "elsewhere").mkdir()
    os.replace(model_file, tmp_path / "elsewhere" / "model.safetensors")
    (tmp_path / "idx").mkdir()
    shard = shard.format(abs=tmp_path / "elsewhere" / "model.safetensors")
    (tmp_path / "idx" / "model.safetensors.index.json").write_text(f'{{"weight_map": {{"fc.weight": "{shard}"}}}}')
    code, _, err = _cli(capsys, "convert", tmp_path / "idx" / "model.safetensors.index.json",
                        tmp_path / "idx" / "o.safetensors")
    assert "is outside the index's directory" in _error_line(code, err)
    assert sorted(os.listdir(tmp_path / "idx")) == ["model.safetensors.index.json"]


def test_index_shards_in_a_subdirectory_are_read(tmp_path, model_file):
    (tmp_path / "shards").mkdir()
    os.replace(model_file, tmp_path / "shards" / "a.safetensors")
    (tmp_path / "model.safetensors.index.json").write_text(
        '{"weight_map": {"fc.weight": "shards/a.safetensors", "fc.bias": "shards/a.safetensors"}}')
    convert(tmp_path / "model.safetensors.index.json", tmp_path / "o.safetensors", progress=False)
    assert set(open_checkpoint(tmp_path / "o.safetensors").entries) >= {"fc.weight_packed", "fc.bias"}


def test_external_data_length_field_past_the_file_is_refused_before_reading(tmp_path, capsys, model_file):
    out = tmp_path / "q.safetensors"
    convert(model_file, out, external_data=True, progress=False)
    data = tmp_path / "q.safetensors.data"
    raw = data.read_bytes()
    data.write_bytes(struct.pack("<Q", 1 << 62) + raw[8:])
    code, _, err = _cli(capsys, "info", out)
    assert f"external data file {data} is truncated or not a safetensors file" in _error_line(code, err)


# ------------------------------------------------------------------------------------------- torch files


def test_torch_files_legacy_read_foreign_refused(tmp_path, capsys, model_file):
    from safetensors.torch import load_file

    state = load_file(model_file)
    torch.save(state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    code, _, err = _cli(capsys, "convert", tmp_path / "legacy.pt", tmp_path / "a.safetensors", "--quiet")
    assert code == 0 and err.strip().startswith("lowbit: warning: ") and len(err.strip().splitlines()) == 1, err
    convert(model_file, tmp_path / "b.safetensors", progress=False)
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    legacy = (tmp_path / "legacy.pt").read_bytes()
    bad = {"junk.pt": b"not a torch file at all", "empty.bin": b"", "cut.pt": legacy[: len(legacy) // 2],
           "zip_cut.pth": (tmp_path / "b.safetensors").read_bytes()[:64]}
    for name, content in bad.items():
        (tmp_path / name).write_bytes(content)
        code, _, err = _cli(capsys, "convert", tmp_path / name, tmp_path / "o.safetensors", "--quiet")
        assert name in _error_line(code, err), err
    assert not (tmp_path / "o.safetensors").exists()


# ------------------------------------------------------------------------------------------- python -m lowbit


def test_python_m_lowbit_is_the_cli(tmp_path):
    run = [sys.executable, "-m", "lowbit"]
    ok = subprocess.run([*run, "--version"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert ok.returncode == 0 and ok.stdout.strip().startswith("lowbit "), ok
    bad = subprocess.run([*run, "info", "missing.safetensors"], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == ["lowbit: error: checkpoint missing.safetensors does not exist"]
