"""Model folders replaced as a whole (issue 26 item 4): a run killed or failing at any rename leaves the old set or
the new set, two runs never mix, files of an earlier model never survive, killed runs' temporaries are cleaned."""

import errno
import os
import signal
import threading
import time

import pytest
import torch

from lowbit.checkpoint import CheckpointError, export, outputs, save
from lowbit.checkpoint import output_folder as of
from lowbit.quant import QuantConfig, quantize_weight

OLD = {"model.safetensors": b"old weights", "config.json": b'{"old": 1}', "tokenizer.json": b"old tokenizer"}
NEW = {"model.safetensors": b"new weights", "config.json": b'{"new": 1}'}


def _tree(folder) -> dict | None:
    if not folder.exists():
        return None
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _write(folder, files: dict, pause: float = 0.0) -> None:
    with of.replacing_folder(folder) as tmp:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
            time.sleep(pause)


def _leftovers(parent) -> list[str]:
    return sorted(n for n in os.listdir(parent) if n.startswith("."))


@pytest.fixture
def old_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(of, "STALE_AFTER_S", 0.0)  # a killed run's temporaries count as stale at once
    out = tmp_path / "out"
    _write(out, OLD)
    return out


def test_new_set_replaces_the_old_one_whole(old_folder):
    _write(old_folder, NEW)
    assert _tree(old_folder) == NEW  # the old tokenizer.json is gone with the old model
    assert _leftovers(old_folder.parent) == []


def _fail_at(monkeypatch, target, name, step: int):
    """Make the step-th call of target.name raise OSError(EIO) (after the earlier calls ran for real)."""
    real, calls = getattr(target, name), []

    def flaky(*args, **kwargs):
        calls.append(args)
        if len(calls) == step:
            raise OSError(errno.EIO, "injected")
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, flaky)


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two renames"])
@pytest.mark.parametrize("step", [1, 2])
def test_a_failing_rename_leaves_the_old_set(old_folder, monkeypatch, exchange, step):
    if not exchange:
        monkeypatch.setattr(of, "_exchange", lambda a, b: (_ for _ in ()).throw(OSError(errno.ENOSYS, "no")))
        _fail_at(monkeypatch, of.os, "rename", step)
    elif step == 1:
        _fail_at(monkeypatch, of, "_exchange", 1)
    else:
        _fail_at(monkeypatch, of.shutil, "rmtree", 1)  # after the swap: the new set is in, whole
    swapped = exchange and step == 2
    if swapped:
        _write(old_folder, NEW)
    else:
        with pytest.raises(OSError, match="injected"):
            _write(old_folder, NEW)
    assert _tree(old_folder) == (NEW if swapped else OLD)
    monkeypatch.undo()
    monkeypatch.setattr(of, "STALE_AFTER_S", 0.0)
    of.clean_stale(old_folder)  # the next start
    assert _leftovers(old_folder.parent) == []


KILL_STEPS = [("exchange", 1, False), ("exchange", 1, True), ("rename", 1, False), ("rename", 1, True),
              ("rename", 2, True)]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork to SIGKILL a writer")
@pytest.mark.parametrize("call,step,after", KILL_STEPS)
def test_sigkill_at_every_rename_leaves_old_or_new(old_folder, call, step, after):
    """A child process writing the new set is SIGKILLed before or after each rename of the swap; the folder is
    the old set or the new set, and the next start cleans (or, mid two-rename swap, restores) what it left."""
    pid = os.fork()
    if pid == 0:  # the child: no torch, file operations only
        try:
            real = {"exchange": of._exchange, "rename": os.rename}
            calls = []

            def killing(*args):
                calls.append(args)
                if len(calls) == step and not after:
                    os.kill(os.getpid(), signal.SIGKILL)
                result = real[call](*args)
                if len(calls) == step and after:
                    os.kill(os.getpid(), signal.SIGKILL)
                return result

            if call == "exchange":
                of._exchange = killing
            else:
                of._exchange = lambda a, b: (_ for _ in ()).throw(OSError(errno.ENOSYS, "no"))
                of.os.rename = killing
            _write(old_folder, NEW)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    seen = _tree(old_folder)
    assert seen in (OLD, NEW) or (call == "rename" and step == 1 and after and seen is None)
    of.clean_stale(old_folder)  # the next start: restores a set left aside, deletes temporaries
    assert _tree(old_folder) in (OLD, NEW) and _leftovers(old_folder.parent) == []


def test_concurrent_writers_never_mix(tmp_path):
    old_folder = tmp_path / "out"
    _write(old_folder, OLD)
    sets = [{"model.safetensors": f"w{i}".encode(), "config.json": f"c{i}".encode(),
             "vocab.txt": f"v{i}".encode()} for i in range(2)]
    threads = [threading.Thread(target=_write, args=(old_folder, s, 0.05)) for s in sets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _tree(old_folder) in sets
    assert _leftovers(old_folder.parent) == []


def test_foreign_files_and_inputs_are_never_deleted(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="holds 'notes.txt', which is not a file of a model folder"):
        _write(out, NEW)
    assert _tree(out) == {"notes.txt": b"mine"}
    (out / "notes.txt").unlink()
    (out / "model.safetensors").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="holds the input"):
        with of.replacing_folder(out, [out / "model.safetensors"]):
            pass
    assert _tree(out) == {"model.safetensors": b"x"} and _leftovers(tmp_path) == []


def test_export_swaps_and_cleans_a_killed_runs_temporaries(tmp_path, monkeypatch):
    """Through export: an older tokenizer.json never survives; a killed run's temp folder and temp file go."""
    qw = quantize_weight(torch.randn(16, 64), QuantConfig(bits=4, block_size=32, symmetric=True))
    (tmp_path / "src").mkdir()
    save({"fc.weight": qw}, tmp_path / "src" / "model.safetensors")
    out = tmp_path / "out"
    _write(out, OLD)
    stale_dir = tmp_path / ".out.killed1.lowbit.tmpdir"
    stale_dir.mkdir()
    (stale_dir / "model.safetensors").write_bytes(b"half")
    stale_file = tmp_path / "src" / ".model.safetensors.abc123.lowbit.tmp"
    stale_file.write_bytes(b"half")
    old = time.time() - outputs.STALE_AFTER_S - 1
    for p in (stale_dir, stale_file):
        os.utime(p, (old, old))
    export(tmp_path / "src", out, progress=False)
    assert sorted(_tree(out)) == ["config.json", "model.safetensors"]  # OLD's tokenizer.json is gone
    assert not stale_dir.exists() and _leftovers(tmp_path) == []
    save({"fc.weight": qw}, tmp_path / "src" / "model.safetensors")  # the next write there cleans its temp
    assert not stale_file.exists()
