"""auto_quantize walks any Mapping where it walks inputs and outputs: a sentence-transformers model takes and returns
a transformers BatchEncoding (a Mapping that is not a dict), and adds keys to it on every call."""

import pytest
import torch
from torch import nn

from lowbit.auto import auto_quantize, default_candidates
from lowbit.auto.metrics import float_leaves

transformers = pytest.importorskip("transformers")


class FeatureModel(nn.Module):
    """As a SentenceTransformer: features in, the same object out with 'sentence_embedding' added."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(64, 64)
        self.head = nn.Linear(64, 32)

    def forward(self, features):
        assert "sentence_embedding" not in features  # each call must see a fresh copy of its input
        features["sentence_embedding"] = self.head(torch.relu(self.fc(features["x"]))).mean(0, keepdim=True)
        return features


def _items(n):
    g = torch.Generator().manual_seed(1)
    return [transformers.BatchEncoding({"x": torch.randn(6, 64, generator=g)}) for _ in range(n)]


def test_float_leaves_of_a_batch_encoding():
    out = transformers.BatchEncoding({"a": torch.ones(2, 3), "ids": torch.ones(2, dtype=torch.long)})
    leaves = float_leaves(out)
    assert len(leaves) == 1 and torch.equal(leaves[0], torch.ones(2, 3))


def test_auto_quantize_on_a_batch_encoding_model(tmp_path):
    model = FeatureModel().eval()
    cands = default_candidates(bits=(4,), blocks=(32, -1), keep_float=False)
    plan = auto_quantize(model, _items(4), target_size=0.3, candidates=cands, output="sentence_embedding",
                         progress=False, cache=tmp_path, holdout=0.25)
    assert {c.name for c in plan.layers} == {"fc", "head"} and 0 <= plan.measured_error < 0.05


def test_cache_key_covers_a_batch_encoding():
    from lowbit.auto.fakequant import data_hash
    from lowbit.calib import as_calibration

    a = transformers.BatchEncoding({"x": torch.zeros(100, 100)})
    b = transformers.BatchEncoding({"x": torch.zeros(100, 100)})
    b["x"][50, 50] = 1.0  # in the middle, where a tensor's repr shows "..."
    assert data_hash(as_calibration([a])) != data_hash(as_calibration([b]))
