"""Peer packages in the cross-domain bench (benchmarks.xdomain): each one's own algorithm on the same MiniLM weights,
bits, block and calibration sentences, judged the same way (the `peers` extra installs them).

  llm-compressor GPTQ: `oneshot` with a GPTQModifier (its defaults: act-order "static", damping 0.01), asymmetric int
      groups of 64, sequential over BertLayer, on a DataLoader of the same padded batches lowbit gets.
  AutoRound: SignRound on each BertLayer (iters=50, its "light" setting: the default 200 takes 4x as long); the same
      sentences padded to the longest of all (it concatenates samples, so they need one length), batches of 8.
  hqq: HQQLinear(nbits, group_size=64) per Linear, its dequantize() written back as the weight.
  torchao HQQ: torchao's `_choose_qparams_and_quantize_affine_hqq` (what Int4WeightOnlyConfig's "hqq" choice calls),
      dequantized the same way.
Peers leave float weights that hold their quantized values (checked: at most 2**bits values per group); they have no
memory Low of lowbit's to run, so their rows fill the memory Normal cells only. A peer that is not installed, or that
fails, gives a row saying why.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator

import torch

from .harness import Row
from .xdomain import BLOCK, Setup, judge, make_row

AUTOROUND_ITERS = 50


class PeerUnavailable(Exception):
    """The peer cannot run here; the message says why."""


def _require(module: str, package: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise PeerUnavailable(f"{package} is not installed ({e}); pip install 'lowbit[peers]'") from None


def _linears(model) -> list[torch.nn.Linear]:
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.in_features % BLOCK == 0]


def check_quantized(model, bits: int) -> None:
    """Every group of the encoder's Linears (what the embeddings depend on: MiniLM's pooler is unused) holds at most
    2**bits distinct values: the row really is the peer's quantization."""
    for m in _linears(model[0].auto_model.encoder):
        groups = m.weight.detach().reshape(-1, BLOCK)[:64]
        worst = max(torch.unique(g).numel() for g in groups)
        if worst > 2 ** bits:
            raise RuntimeError(f"peer left a weight with {worst} values in a group of {BLOCK} (> 2**{bits})")


def hqq_package(setup: Setup, bits: int, sentences) -> object:
    """The `hqq` package's HQQLinear quantize + dequantize on every Linear."""
    _require("hqq", "hqq")
    from hqq.core.quantize import BaseQuantizeConfig, HQQLinear

    q = copy.deepcopy(setup.model)
    with torch.no_grad():
        for m in _linears(q):
            hl = HQQLinear(m, BaseQuantizeConfig(nbits=bits, group_size=BLOCK), compute_dtype=torch.float16,
                           device="cpu", del_orig=False)
            m.weight.copy_(hl.dequantize().float().reshape(m.weight.shape))
    return q


def torchao_hqq(setup: Setup, bits: int, sentences) -> object:
    """torchao's HQQ quantization primitive on every Linear, dequantized as (q - zero) * scale per group."""
    _require("torchao", "torchao")
    from torchao.quantization.quant_primitives import _choose_qparams_and_quantize_affine_hqq

    q = copy.deepcopy(setup.model)
    with torch.no_grad():
        for m in _linears(q):
            n, k = m.weight.shape
            wq, scale, zero, _ = _choose_qparams_and_quantize_affine_hqq(
                m.weight, nbits=bits, group_size=BLOCK, axis=1, compute_dtype=torch.float16, device="cpu",
                raw_output=True)
            # (N, K) -> (N, K/block, block), scale and zero (N, K/block)
            w = (wq.float().reshape(n, k // BLOCK, BLOCK) - zero.float()[..., None]) * scale.float()[..., None]
            m.weight.copy_(w.reshape(n, k))
    return q


def llmcompressor_gptq(setup: Setup, bits: int, sentences, batch: int) -> object:
    """llm-compressor's GPTQModifier via `oneshot`, sequential over BertLayer, on the same padded batches."""
    _require("llmcompressor", "llmcompressor")
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier

    from lowbit.calib.texts import padded_batches

    q = copy.deepcopy(setup.model)
    batches = [item.args[0] for item in padded_batches(q.tokenizer, sentences, batch)]
    scheme = QuantizationScheme(targets=["Linear"], weights=QuantizationArgs(
        num_bits=bits, type="int", symmetric=False, strategy="group", group_size=BLOCK))
    oneshot(model=q[0].auto_model, dataset=torch.utils.data.DataLoader(batches, batch_size=None),
            recipe=GPTQModifier(config_groups={"group_0": scheme}), pipeline="sequential",
            sequential_targets=["BertLayer"], num_calibration_samples=len(sentences))
    return q


def autoround(setup: Setup, bits: int, sentences, batch: int) -> object:
    """AutoRound (SignRound) on the encoder's BertLayers, asymmetric, group 64."""
    _require("auto_round", "auto-round")
    from auto_round import AutoRound

    q = copy.deepcopy(setup.model)
    full = dict(q.tokenizer(list(sentences), padding=True, truncation=True, max_length=256, return_tensors="pt"))
    batches = [{k: v[i:i + batch] for k, v in full.items()} for i in range(0, len(sentences), batch)]
    seqlen = int(full["input_ids"].shape[1])
    try:
        ar = AutoRound(q[0].auto_model, tokenizer=q.tokenizer, bits=bits, group_size=BLOCK, sym=False,
                       dataset=torch.utils.data.DataLoader(batches, batch_size=None), iters=AUTOROUND_ITERS,
                       nsamples=len(sentences), seqlen=seqlen, batch_size=batch, device_map="cpu",
                       enable_torch_compile=False)
        ar.quantize()
    except SystemExit as e:  # auto_round calls sys.exit when it caches no data
        raise RuntimeError(f"auto_round exited ({e.code})") from None
    return q


# (label, function, takes calibration data, bits it runs at)
PEERS = [("peer hqq", hqq_package, False, (3, 4)), ("peer torchao hqq", torchao_hqq, False, (3, 4)),
         ("peer llm-compressor gptq", llmcompressor_gptq, True, (3, 4)),
         ("peer autoround", autoround, True, (4,))]


def peer_rows(setup: Setup, bits_list, batch: int, peers=PEERS) -> Iterator[Row]:
    """One row per peer, bits and calibration kind (data-free peers: one per bits), memory Normal cells only."""
    threads = torch.get_num_threads()
    for bits in bits_list:
        for label, fn, data_aware, peer_bits in peers:
            if bits not in peer_bits:
                continue
            for kind in (list(setup.calibrations) if data_aware else ["none"]):
                row = peer_row(label, fn, data_aware, bits, kind, setup, batch)
                torch.set_num_threads(threads)  # a peer may change it
                print(row.values, flush=True)
                yield row


def peer_row(label, fn, data_aware, bits, kind, setup, batch) -> Row:
    t0 = time.perf_counter()
    try:
        if data_aware:
            q = fn(setup, bits, setup.calibrations[kind], batch)
        else:
            q = fn(setup, bits, None)
        seconds = time.perf_counter() - t0
        check_quantized(q, bits)
    except PeerUnavailable as e:
        return make_row(label, bits, kind, {}, 0.0, setup, f"skipped: {e}"[:200])
    except Exception as e:  # noqa: BLE001 - a peer's failure here is a result to report, whatever its type
        return make_row(label, bits, kind, {}, time.perf_counter() - t0, setup,
                        f"failed: {type(e).__name__}: {e}"[:200])
    return make_row(label, bits, kind, judge(q, setup, memories=(None,)), seconds, setup,
                    "memory normal only (float weights holding the peer's quantized values)")
