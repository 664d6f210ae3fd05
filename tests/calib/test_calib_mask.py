"""Padded positions stay out of calibration statistics: padded and unpadded batches of the same MiniLM sentences give
the same Hessians, GPTQ codes, AWQ scales and static INT8 ranges (lowbit.calib.mask)."""

import pytest
import torch
from conftest import has_minilm

from lowbit.calib import as_calibration, run_pass
from lowbit.calib.mask import item_mask, rows_of
from lowbit.calib.sources import Item
from lowbit.pipeline.stats import LinearCollector
from lowbit.quant import QuantConfig
from lowbit.quant.awq import search_scales
from lowbit.quant.gptq import gptq_rows
from lowbit.quant.static_config import StaticConfig
from lowbit.static.calibrate import channel_absmax, collect_ranges

SENTENCES = ["A cat sat on the warm mat by the door.", "Rain.", "Quantization shrinks the weights of a network.",
             "Where is the nearest train station, please?", "Hello there!", "The results were better than expected."]
LAYERS = ("0.model.encoder.layer.0.attention.self.query", "0.model.encoder.layer.4.intermediate.dense")


def test_item_mask_finds_attention_masks_and_the_hook():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    x = torch.arange(18.0).reshape(2, 3, 3)
    assert torch.equal(item_mask(Item.of(({"input_ids": mask, "attention_mask": mask},)), None), mask.bool())
    assert torch.equal(item_mask(Item.of({"x": x, "attention_mask": mask}), None), mask.bool())
    assert item_mask(Item.of(x), None) is None
    assert item_mask(Item.of({"attention_mask": torch.ones(2, 3)}), None) is None  # nothing padded
    cal = as_calibration([x], mask_fn=lambda t: t[..., 0] < 12)  # the hook for inputs of other kinds
    assert torch.equal(item_mask(next(iter(cal)), cal.mask_fn), x[..., 0] < 12)
    y = x[0]  # (3, 3): not (batch, seq, features) for this mask, so kept whole
    assert torch.equal(rows_of(x, mask.bool()), x[mask.bool()]) and rows_of(y, mask.bool()) is y
    with pytest.raises(ValueError, match=r"\(batch, seq\) tensor"):
        item_mask(Item.of(x), lambda t: t)


@pytest.fixture(scope="module")
def minilm_pair():
    if not has_minilm():
        pytest.skip("needs the bundled MiniLM package")
    from lowbit.models import load_minilm

    model = load_minilm()
    padded = [(model.preprocess(SENTENCES[i:i + 3]),) for i in range(0, len(SENTENCES), 3)]
    assert any(bool((p[0]["attention_mask"] == 0).any()) for p in padded)
    unpadded = [(model.preprocess([s]),) for s in SENTENCES]
    modules = dict(model.named_modules())
    return model, {n: modules[n] for n in LAYERS}, padded, unpadded


def _collect(model, layers, cal):
    cols = {n: LinearCollector(m) for n, m in layers.items()}
    run_pass(model, as_calibration(cal), {n: c.hook for n, c in cols.items()}, layers, progress=False)
    return {n: c.stats for n, c in cols.items()}


def test_padded_and_unpadded_batches_give_the_same_statistics(minilm_pair):
    model, layers, padded, unpadded = minilm_pair
    a, b = _collect(model, layers, padded), _collect(model, layers, unpadded)
    cfg = QuantConfig(bits=4, block_size=64, method="gptq")
    for name in LAYERS:
        assert a[name].count == b[name].count
        torch.testing.assert_close(a[name].xtx, b[name].xtx, rtol=1e-5, atol=1e-5 * float(b[name].xtx.abs().max()))
        torch.testing.assert_close(a[name].abs_mean, b[name].abs_mean, rtol=1e-5, atol=1e-6)
        if name != LAYERS[0]:
            continue  # GPTQ and AWQ on the first layer only: their inputs are the statistics compared above
        w = layers[name].weight.detach()
        codes_a, codes_b = gptq_rows(w, a[name].xtx, cfg)[0], gptq_rows(w, b[name].xtx, cfg)[0]
        # the activations of a padded batch differ from the unpadded ones in float32's last bits (other matmul
        # shapes), and GPTQ's error feedback carries a flipped tie on to later columns: nearly all codes agree
        # (without the mask: the Hessians differ by the padded rows and so do many codes)
        flipped = (codes_a != codes_b).float().mean().item()
        assert flipped < 0.01, (name, flipped)
        awq = QuantConfig(bits=4, block_size=64, method="awq", awq_grid=5)
        s_a = search_scales(w, a[name].xtx, a[name].abs_mean, awq)[0]
        s_b = search_scales(w, b[name].xtx, b[name].abs_mean, awq)[0]
        torch.testing.assert_close(s_a, s_b, rtol=1e-5, atol=0)
    # the unmasked padded statistics differ: what the mask removes matters
    cols = {n: LinearCollector(m) for n, m in layers.items()}
    unmasked = as_calibration([(dict(p[0]),) for p in padded], mask_fn=lambda f: None)
    run_pass(model, unmasked, {n: c.hook for n, c in cols.items()}, layers, progress=False)
    assert cols[LAYERS[0]].stats.count > a[LAYERS[0]].count


def test_static_observers_ignore_padding(minilm_pair):
    model, layers, padded, unpadded = minilm_pair
    padded, unpadded = as_calibration(padded), as_calibration(unpadded)
    a, b = channel_absmax(model, padded, layers, False), channel_absmax(model, unpadded, layers, False)
    for name in LAYERS:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)
    cfg = StaticConfig(activation_method="percentile")
    ra, rb = collect_ranges(model, padded, layers, cfg, False), collect_ranges(model, unpadded, layers, cfg, False)
    for name in LAYERS:
        assert ra[name].absmax == pytest.approx(rb[name].absmax, rel=1e-5)
        assert (ra[name].hist - rb[name].hist).abs().sum() <= 1e-3 * rb[name].hist.sum()  # bin-edge ties only
