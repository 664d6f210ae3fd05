"""The `llm` bench on its tiny model: every cell of a quick run, and a compiled static-cache decode step with lowbit's
layers in it gives eager's logits (the step the +static+compile rows time)."""

import json

import pytest
import torch

pytest.importorskip("transformers")
pytestmark = pytest.mark.slow  # torch.compile of a 2-block model: ~20 s on 2 cores

from benchmarks import llm  # noqa: E402
from benchmarks.llm_decode import generate_kwargs  # noqa: E402


class _Scores:
    def __init__(self):
        self.scores = []

    def __call__(self, input_ids, scores):
        self.scores.append(scores.clone())
        return scores


def _decode_scores(model, prompt, setting):
    """(tokens, logits of each step (steps, vocab)) of an 8-token greedy decode, min_new_tokens' -inf zeroed."""
    from transformers import LogitsProcessorList

    rec = _Scores()
    with torch.inference_mode():
        out = model.generate(prompt, max_new_tokens=8, min_new_tokens=8, do_sample=False,
                             logits_processor=LogitsProcessorList([rec]), **generate_kwargs(setting, 16))
    s = torch.cat(rec.scores)
    return out[0, prompt.shape[1]:], torch.where(torch.isfinite(s), s, 0)


def _sqnr_db(ref, x):
    return (20 * torch.log10(ref.norm(dim=-1) / (ref - x).norm(dim=-1))).min().item()


def test_compiled_static_decode_matches_eager():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        base = llm.build_model("tiny")
        prompt = torch.randint(0, 32000, (1, 8), generator=torch.Generator().manual_seed(2))
        tokens, ref = _decode_scores(base, prompt, "")
        for setting in ("+static", "+static+compile"):
            got_tokens, got = _decode_scores(base, prompt, setting)
            assert torch.equal(got_tokens, tokens) and torch.allclose(got, ref, atol=1e-5, rtol=1e-5), setting
        q = llm.variant(base, "int4-b128")
        q_tokens, q_ref = _decode_scores(q, prompt, "+static")
        got_tokens, got = _decode_scores(q, prompt, "+static+compile")
        # int8 activations round a ulp apart differently once inductor fuses the norms: close, not equal
        assert _sqnr_db(q_ref[:3], got[:3]) > 30 and torch.equal(got_tokens[:2], q_tokens[:2])
        assert 8 < _sqnr_db(ref[:1], q_ref[:1]) < 40  # the quantized model is not the float one
    finally:
        torch.set_num_threads(threads)


def test_quick_run_writes_every_cell(tmp_path):
    threads = torch.get_num_threads()
    rows = ["fp32", "int4-b128", "int4-b128/prepared", "int4-b128+static+compile"]
    try:
        assert llm.main(["--model", "tiny", "--quick", "--rows", *rows, "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    saved = json.loads((tmp_path / "llm_tiny.json").read_text())
    got = {r["row"]: r for r in saved["rows"]}
    assert list(got) == rows and saved["env"]["load average"]
    eager_us, compiled_us = map(float, saved["env"]["o_proj call int4-b128 eager/compiled us"].split("/"))
    assert eager_us > 0 and compiled_us > 0
    for row, r in got.items():
        assert r["decode 32 tok/s"] > 0 and r["decode cpu 32 tok/s"] > 0
        assert r["non-linear ms/token"] > 0 and r["non-linear cpu ms/token"] > 0
        assert ("prefill 128 tok/s" in r) == ("+" not in row)
    # 4-bit codes plus a scale and zero per 128 weights, every Linear (lm_head too): (4 + 2 * 16 / 128) / 32 of fp32
    fp32 = sum(m.weight.nbytes for m in llm.build_model("tiny").modules() if isinstance(m, torch.nn.Linear))
    assert got["fp32"]["weights MB"] * 2**20 == fp32
    assert got["int4-b128"]["weights MB"] == pytest.approx(got["fp32"]["weights MB"] * 4.25 / 32, rel=0.02)
    assert got["int4-b128"]["floor tok/s"] == pytest.approx(got["fp32"]["floor tok/s"] * 32 / 4.25, rel=0.02)
    assert got["int4-b128/prepared"]["weights MB"] == got["int4-b128"]["weights MB"]  # fused: the same bytes
