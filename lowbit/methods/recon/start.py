"""Where a block's learning starts: its layers' input statistics, their initial packed weights, the learned state.

The statistics (xtx of each weight's inputs, from the block's cached quantized-model inputs on the training items)
feed GPTQ/AWQ starts and the before/after columns of the per-weight error table: before = plain RTN with the same
bits and block, after = the learned weight, both as ‖ΔW x‖/‖W x‖ on the same statistics. LSTM statistics follow
lowbit.pipeline.lstm: weight_ih from the layer inputs, weight_hh from the float recurrence's h_{t-1}.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ...calib.capture import linear_like
from ...calib.mask import rows_of
from ...pipeline.lstm import LSTMCollector
from ...pipeline.registry import method_for
from ...pipeline.stats import collector_for, group_by_call_order
from ...pipeline.weights import WeightResult, grouped_error
from ...quant.config import QuantConfig, QuantMethod
from ...quant.recon import LearnedWeight
from .capture import fresh_args


def gather_statistics(block, layer_modules: dict, inputs: list, train: list[int], masks: list | None = None) -> dict:
    """{layer name: lowbit.pipeline.stats collector} for the layers in layer_modules, filled by running the block
    (with its weights as they are now) on the training items; masks[i]: the rows of item i that count (Linear-like
    layers whose input has the mask's leading dims see only those rows; lowbit.calib.mask)."""
    collectors = {n: collector_for(m) for n, m in layer_modules.items()}
    current = [None]
    handles = [m.register_forward_pre_hook(_hook(collectors[n], current, linear_like(m)), with_kwargs=True)
               for n, m in layer_modules.items()]
    try:
        for i in train:
            if inputs[i] is not None:
                current[0] = masks[i] if masks else None
                _run_block(block, inputs[i])
    finally:
        for h in handles:
            h.remove()
    return collectors


def layer_groups(block, layer_modules: dict, inputs: list, train: list[int]) -> list[list[str]]:
    """The block's layers in the order they run on the first training item; consecutive layers reading the very
    same tensor (query/key/value) form one group, as in the sequential GPTQ walk; layers never called are one group
    each."""
    calls, keep = [], []

    def make(name):
        def pre_hook(_m, args):
            keep.append(args[0] if args else None)  # alive, so ids are not reused within the forward
            calls.append((name, id(keep[-1])))
        return pre_hook

    first = next(i for i in train if inputs[i] is not None)
    handles = [layer_modules[n].register_forward_pre_hook(make(n)) for n in block.layers]
    try:
        _run_block(block, inputs[first])
    finally:
        for h in handles:
            h.remove()
    return group_by_call_order(calls, block.layers, uncalled_alone=True, repeats_set_last=True)


def _run_block(block, item):
    with torch.no_grad():
        out = None
        for j, (_, module) in enumerate(block.modules):
            args, kwargs = fresh_args(*item) if j == 0 else ((out,), {})
            out = module(*args, **kwargs)
    return out


def _hook(collector, current: list, masked: bool):
    def pre_hook(_m, args, kwargs):
        if masked and args:
            args = (rows_of(args[0], current[0]), *args[1:])
        collector.hook(args, kwargs)
    return pre_hook


def init_config(cfg: QuantConfig) -> QuantConfig:
    """The config of the starting point: recon's recon_init method, or a gptq/awq layer's own config."""
    if cfg.method is not QuantMethod.RECON:
        return cfg
    return replace(cfg, method=QuantMethod(start_method(cfg)))


def start_method(cfg: QuantConfig) -> str:
    """recon_init, except "hqq" for symmetric weights: RTN (HQQ optimises a zero, so it is asymmetric only)."""
    return "rtn" if cfg.recon_init == "hqq" and cfg.symmetric else cfg.recon_init


def initial_results(name: str, collector, cfg: QuantConfig) -> list[WeightResult]:
    """The start's packed weights with their RTN (before) and start errors, from the layer's statistics."""
    return collector.quantize(init_config(cfg), name, True)


def learned_state(module, result: WeightResult, cfg: QuantConfig) -> LearnedWeight:
    """The learnable state of one weight: learning only for method='recon' layers (gptq/awq ones stay fixed)."""
    w = getattr(module, result.name.rpartition(".")[2]).detach()
    start = method_for(init_config(cfg).method)
    # data-free (RTN/HQQ) codes are the nearest ones: start from the float weight; GPTQ/AWQ moved codes: from theirs
    w_start = result.qweight.dequantize(torch.float32) if start.needs_calibration else w
    learn = cfg.recon_learn if cfg.method is QuantMethod.RECON else ()
    return LearnedWeight(w_start, result.qweight, learn)


def weight_hessians(name: str, collector) -> dict[str, list[torch.Tensor]]:
    """{full weight name: [xtx per group of rows]} for the error table."""
    if isinstance(collector, LSTMCollector):
        return _lstm_hessians(name, collector)
    return {f"{name}.weight": [s.xtx for s in collector.input_stats()]}


def _lstm_hessians(name: str, col: LSTMCollector) -> dict[str, list[torch.Tensor]]:
    out = {}

    def keep(ih, hh, st_ih, st_hh):
        out[f"{name}.{ih}"], out[f"{name}.{hh}"] = [st_ih.xtx], [st_hh.xtx]  # next layer: float inputs (None)

    col.walk(keep)
    return out


def final_result(w: torch.Tensor, start: WeightResult, learned: LearnedWeight, hessians: list[torch.Tensor] | None):
    """The packed learned weight with its before (RTN) and after errors against the float weight w."""
    qw = learned.pack()
    after = grouped_error(w, qw.dequantize(torch.float64), hessians) if hessians else float("nan")
    return WeightResult(start.name, qw, start.error_before, after)
