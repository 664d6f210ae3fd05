"""A new packed-weight format from this file alone: a toy per-row codebook, registered, used by nn's layers,
saved, loaded and inspected, with no edit anywhere in lowbit (`lowbit.quant.formats`)."""

from __future__ import annotations

import argparse
import json
import math
import warnings
from dataclasses import dataclass, replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lowbit
from lowbit.checkpoint import CheckpointError, open_checkpoint
from lowbit.cli.info import checkpoint_rows
from lowbit.cli.info import run as info_run
from lowbit.nn import QuantConv2d, QuantLinear, QuantLSTM, format_exec, kernel_for, swap_quantized
from lowbit.nn.weight_cache import forced_kernel
from lowbit.quant.formats import (
    AFFINE,
    FormatSpec,
    format_for,
    formats,
    is_packed_weight,
    register_format,
    unregister_format,
)
from lowbit.runtime import BackendConfig, Kernel, KernelRow, register_kernel, unregister_kernel
from lowbit.runtime.dispatch import reset_fallback_warnings

TOY = "toy_codebook"
ENTRIES = 16  # 4-bit indices
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# ------------------------------------------------------------------------------------------- the toy format


@dataclass(frozen=True)
class CodebookWeight:
    """Per-row codebook: w[n, k] = codebook[n, idx[n, k]].

    codes: uint8 (N, ceil(K/2)), index k in the low nibble of byte k // 2 when k is even, the high one when odd;
    codebook: float16 (N, 16); shape: the original weight shape (N, ...), K = prod(shape[1:]); dtype: original.
    """

    codes: torch.Tensor
    codebook: torch.Tensor
    shape: tuple[int, ...]
    dtype: torch.dtype

    format = TOY
    bits = 4

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    def indices(self) -> torch.Tensor:
        """Indices as int64 (N, K)."""
        k = math.prod(self.shape[1:])
        lo, hi = self.codes & 15, self.codes >> 4
        return torch.stack([lo, hi], dim=2).reshape(self.shape[0], -1)[:, :k].long()  # (N, 2*bytes) -> (N, K)

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        w = self.codebook.float().gather(1, self.indices())
        return w.to(dtype or self.dtype).reshape(self.shape)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"codes": self.codes, "codebook": self.codebook}

    def metadata(self) -> dict:
        return {"format": TOY, "version": 1, "shape": list(self.shape),
                "dtype": str(self.dtype).removeprefix("torch."), "bits": 4}

    def to(self, device) -> CodebookWeight:
        return replace(self, codes=self.codes.to(device), codebook=self.codebook.to(device))

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], metadata: dict) -> CodebookWeight:
        expected = expected_tensors(metadata)
        if set(tensors) != set(expected):
            raise ValueError(f"codebook weight needs tensors {sorted(expected)}, got {sorted(tensors)}")
        for name, (shape, dtypes) in expected.items():
            if tuple(tensors[name].shape) != shape or tensors[name].dtype not in dtypes:
                raise ValueError(f"{name!r} is {tensors[name].dtype} {tuple(tensors[name].shape)}, expected {shape}")
        return cls(tensors["codes"], tensors["codebook"], tuple(metadata["shape"]), _DTYPES[metadata["dtype"]])


def expected_tensors(metadata: dict) -> dict:
    if metadata.get("version") != 1 or metadata.get("dtype") not in _DTYPES:
        raise ValueError(f"toy codebook metadata has version={metadata.get('version')!r}, "
                         f"dtype={metadata.get('dtype')!r}")
    n, k = metadata["shape"][0], math.prod(metadata["shape"][1:])
    return {"codes": ((n, (k + 1) // 2), (torch.uint8,)), "codebook": ((n, ENTRIES), (torch.float16,))}


def check_values(tensors: dict[str, torch.Tensor]) -> None:
    if not bool(torch.isfinite(tensors["codebook"].float()).all()):
        raise ValueError("codebook holds a NaN or inf")


def quantize_codebook(w: torch.Tensor, steps: int = 6) -> CodebookWeight:
    """A few k-means (Lloyd) steps per row from the row's quantiles; codebook rounded to float16."""
    w2 = w.detach().float().reshape(w.shape[0], -1)  # (N, K)
    q = torch.linspace(0, 1, ENTRIES)
    centers = torch.quantile(w2, q, dim=1).T.contiguous()  # (N, 16)
    for _ in range(steps):
        idx = (w2[:, :, None] - centers[:, None, :]).abs().argmin(dim=2)  # (N, K)
        sums = torch.zeros_like(centers).scatter_add_(1, idx, w2)
        counts = torch.zeros_like(centers).scatter_add_(1, idx, torch.ones_like(w2))
        centers = torch.where(counts > 0, sums / counts.clamp(min=1), centers)
    book = centers.half()
    idx = (w2[:, :, None] - book.float()[:, None, :]).abs().argmin(dim=2).to(torch.uint8)
    if idx.shape[1] % 2:
        idx = F.pad(idx, (0, 1))
    codes = (idx[:, 0::2] | (idx[:, 1::2] << 4)).contiguous()  # two indices per byte, even index low
    return CodebookWeight(codes, book.contiguous(), tuple(w.shape), w.dtype)


SPEC = FormatSpec(name=TOY, weight_type=CodebookWeight, from_tensors=CodebookWeight.from_tensors,
                  expected_tensors=expected_tensors, check_values=check_values)


@pytest.fixture
def toy_format():
    register_format(SPEC)
    try:
        yield SPEC
    finally:
        unregister_format(TOY)


# ------------------------------------------------------------------------------------------ independent references


def reference_weight(cw: CodebookWeight) -> torch.Tensor:
    """float64 weight from the stored bytes, element by element (no vectorised unpacking shared with the format)."""
    n, k = cw.shape[0], math.prod(cw.shape[1:])
    codes, book = cw.codes.tolist(), cw.codebook.double()
    w = torch.empty(n, k, dtype=torch.float64)
    for r in range(n):
        for c in range(k):
            byte = codes[r][c // 2]
            w[r, c] = book[r, (byte >> 4) if c % 2 else (byte & 15)]
    return w.reshape(cw.shape)


def _close(y: torch.Tensor, ref: torch.Tensor) -> None:
    """fp32 compute against float64: elementwise within 1e-5 of the output scale."""
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double(), ref, rtol=0, atol=1e-5 * float(ref.abs().max()))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 5 * 5, 24)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


# ------------------------------------------------------------------------------------------------------- tests


def test_registry(toy_format):
    assert TOY in formats() and AFFINE in formats() and format_for(TOY) is SPEC
    register_format(SPEC)  # the same spec again: a no-op
    with pytest.raises(ValueError, match="clashes"):
        register_format(replace(SPEC, name="other"))  # same tag and class under another name
    with pytest.raises(ValueError, match="unknown packed-weight format 'nope'"):
        format_for("nope")
    cw = quantize_codebook(torch.randn(4, 33))
    assert is_packed_weight(cw) and cw.nbytes == 4 * 17 + 4 * 16 * 2


def test_quantizer_and_dequantize_match_reference(toy_format):
    w = torch.randn(24, 37, generator=torch.Generator().manual_seed(0))
    cw = quantize_codebook(w)
    assert torch.equal(cw.dequantize(torch.float64), reference_weight(cw))
    err = (cw.dequantize() - w).norm() / w.norm()
    assert err < 0.12  # 16 levels per row: about 4-bit RTN's error


@pytest.mark.parametrize("memory", ["normal", "low", "high"])
def test_linear_memory_modes(toy_format, memory):
    g = torch.Generator().manual_seed(1)
    lin = nn.Linear(37, 24)
    cw = quantize_codebook(lin.weight)
    layer = QuantLinear.from_float(lin, cw, BackendConfig(memory=memory))
    x = torch.randn(5, 37, generator=g)
    ref = x.double() @ reference_weight(cw).T + lin.bias.detach().double()
    reset_fallback_warnings()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = layer(x)
        y2 = layer(x)  # the one warning is not repeated
    _close(y, ref)
    assert torch.equal(y, y2)
    fallback = [w for w in caught if "memory=low" in str(w.message)]
    assert len(fallback) == (1 if memory == "low" else 0)
    if memory == "low":
        assert "running dense instead" in str(fallback[0].message)
    assert torch.equal(layer.weight_codes, cw.codes)  # the codes stay held beside the float copy
    assert torch.equal(layer.quantized_weight("weight").dequantize(), cw.dequantize())
    with forced_kernel(Kernel.EMULATED):
        _close(layer(x), ref)


@pytest.mark.parametrize("memory", ["normal", "low"])
def test_conv2d_memory_modes(toy_format, memory):
    g = torch.Generator().manual_seed(2)
    conv = nn.Conv2d(3, 8, 3, padding=1, stride=2)
    cw = quantize_codebook(conv.weight)
    layer = QuantConv2d.from_float(conv, cw, BackendConfig(memory=memory))
    x = torch.randn(2, 3, 9, 9, generator=g)
    ref = F.conv2d(x.double(), reference_weight(cw), conv.bias.detach().double(), stride=2, padding=1)
    reset_fallback_warnings()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = layer(x)
    _close(y, ref)
    assert len([w for w in caught if "memory=low" in str(w.message)]) == (1 if memory == "low" else 0)


@pytest.mark.parametrize("memory", ["normal", "low"])
def test_lstm(toy_format, memory):
    torch.manual_seed(7)
    lstm = nn.LSTM(6, 5, num_layers=1)
    weights = {n: quantize_codebook(getattr(lstm, n)) for n in ("weight_ih_l0", "weight_hh_l0")}
    layer = QuantLSTM.from_float(lstm, weights, BackendConfig(memory=memory))
    ref_lstm = nn.LSTM(6, 5).double()
    with torch.no_grad():
        for name, p in ref_lstm.named_parameters():
            p.copy_(reference_weight(weights[name]) if name in weights else getattr(lstm, name).double())
    x = torch.randn(4, 2, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        y, (h, c) = layer(x)
    y_ref, (h_ref, c_ref) = ref_lstm(x.double())
    _close(y.detach(), y_ref.detach())
    _close(c.detach(), c_ref.detach())


def _quantized_net(seed: int = 3) -> tuple[Net, dict]:
    torch.manual_seed(seed)
    net = Net()
    weights = {"conv.weight": quantize_codebook(net.conv.weight), "fc.weight": quantize_codebook(net.fc.weight)}
    return net, weights


def test_save_load_and_info(toy_format, tmp_path, capsys):
    net, weights = _quantized_net()
    model = swap_quantized(net, weights)
    x = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(4))
    y = model(x)
    path = lowbit.save(model, tmp_path / "toy.safetensors")

    fresh, _ = _quantized_net(seed=5)  # other float weights: everything must come from the file
    loaded = lowbit.load(fresh, path)
    assert isinstance(loaded.fc, QuantLinear) and isinstance(loaded.conv, QuantConv2d)
    assert torch.equal(loaded(x), y)
    assert torch.equal(loaded.fc.weight_codebook, weights["fc.weight"].codebook)
    low = lowbit.load(_quantized_net(seed=6)[0], path, backend=BackendConfig(memory="low"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert torch.equal(low(x), y)

    body = open_checkpoint(path).body
    assert body["quantized"]["fc.weight"] == weights["fc.weight"].metadata()
    rows, totals = checkpoint_rows(path)
    fc = next(r for r in rows if r["name"] == "fc.weight")
    assert (fc["bits"], fc["method"], fc["bytes"]) == (4, TOY, weights["fc.weight"].nbytes)
    assert totals["quantized"] == 2 and json.dumps(totals)
    assert {g.get("format") for g in totals["scheme"]["groups"]} == {TOY}
    assert "format=toy_codebook" in repr(loaded.fc)
    assert info_run(argparse.Namespace(file=str(path), json=False, system=False)) == 0
    assert f"2 weight(s) of format {TOY}, 4 bits" in capsys.readouterr().out


def test_unknown_or_corrupt_format_in_a_file(toy_format, tmp_path):
    net, weights = _quantized_net()
    path = lowbit.save(swap_quantized(net, weights), tmp_path / "toy.safetensors")
    unregister_format(TOY)
    try:
        with pytest.raises(CheckpointError) as e:
            lowbit.load(_quantized_net()[0], path)
    finally:
        register_format(SPEC)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "'conv'" in msg and f"'{TOY}'" in msg

    bad = {k: v for k, v in weights.items()}
    book = bad["fc.weight"].codebook.clone()
    book[0, 3] = float("nan")
    bad["fc.weight"] = replace(bad["fc.weight"], codebook=book)
    bad_path = lowbit.save(bad, tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match=f"layer 'fc' \\(format '{TOY}'\\): codebook holds a NaN"):
        open_checkpoint(bad_path)


def test_entries_without_a_format_field_are_affine(tmp_path):
    """Files name every weight's format; an entry without one reads as the affine QuantizedWeight."""
    from safetensors.torch import save_file

    from lowbit.checkpoint.header import build_metadata

    torch.manual_seed(8)
    lin = nn.Sequential(nn.Linear(64, 8))
    qw = lowbit.quant.quantize_weight(lin[0].weight.detach(), lowbit.QuantConfig(bits=4, block_size=32))
    model = swap_quantized(lin, {"0.weight": qw})
    path = lowbit.save(model, tmp_path / "affine.safetensors")
    ckpt = open_checkpoint(path)
    metas = {k: {f: v for f, v in m.items() if f != "format"} for k, m in ckpt.quantized.items()}
    tensors = {n: ckpt.tensor(n).clone() for n in ckpt.entries}
    save_file(tensors, str(tmp_path / "bare.safetensors"), metadata=build_metadata(metas))
    x = torch.randn(3, 64)
    loaded = lowbit.load(nn.Sequential(nn.Linear(64, 8)), tmp_path / "bare.safetensors")
    assert loaded[0].quantized_weight("weight").format == AFFINE
    assert torch.equal(loaded(x), model(x))


def test_module_under_two_names(toy_format, tmp_path):
    """torch writes an aliased layer's tensors twice; load checks the repeat against the stored format's tensors."""

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(8, 4)
            self.b = self.a

        def forward(self, x):
            return self.b(x)

    torch.manual_seed(9)
    tied = Tied()
    model = swap_quantized(tied, {"a.weight": quantize_codebook(tied.a.weight)})
    loaded = lowbit.load(Tied(), lowbit.save(model, tmp_path / "tied.safetensors"))
    x = torch.randn(2, 8)
    assert loaded.a is loaded.b and torch.equal(loaded(x), model(x))


# ------------------------------------------------------------------------------- the toy format's own kernel row


def _toy_prepare(_module, cw: CodebookWeight, _dtype):
    """The kernel's layout: indices unpacked once to int64 (N, K), the codebook in float64."""
    k = math.prod(cw.shape[1:])
    idx = torch.stack([cw.codes & 15, cw.codes >> 4], dim=2).reshape(cw.shape[0], -1)[:, :k]
    return idx.long(), cw.codebook.double()


def _toy_run(_module, prepared, x, bias, _activations):
    idx, book = prepared
    y = x.double() @ book.gather(1, idx).T  # a lookup per code, then a float64 product
    return (y if bias is None else y + bias.double()).to(x.dtype)


@pytest.fixture
def toy_kernel(toy_format):
    row = register_kernel(KernelRow("toy_codebook_lookup", device="cpu", formats=(TOY,), priority=0,
                                    available=lambda _module: True, prepare=_toy_prepare, run=_toy_run,
                                    doc="test: codebook lookup + float64 matmul"))
    yield row
    unregister_kernel("linear", row.kernel)


def test_format_with_its_own_kernel_row_runs_packed_at_memory_low(toy_kernel):
    """One format + one kernel row, both from this file: memory Low dispatches to the row (no fall-back warning)."""
    lin = nn.Linear(37, 24)
    cw = quantize_codebook(lin.weight)
    layer = QuantLinear.from_float(lin, cw, BackendConfig(memory="low"))
    x = torch.randn(5, 37, generator=torch.Generator().manual_seed(3))
    ref = x.double() @ reference_weight(cw).T + lin.bias.detach().double()
    reset_fallback_warnings()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = layer(x)
    _close(y, ref)
    assert not [w for w in caught if "memory=low" in str(w.message)]
    _, entry = format_exec.weight_state(layer, "weight")
    assert [d.kernel for d, _ in entry.decisions.values()] == ["toy_codebook_lookup"]
    assert not hasattr(layer, "weight_dense")  # no float copy was built


def test_a_row_registered_after_the_first_call_serves_the_next_one(toy_format):
    """The kernel table's generation is part of a non-affine weight's cache stamp, as for affine weights."""
    lin = nn.Linear(37, 24)
    cw = quantize_codebook(lin.weight)
    layer = QuantLinear.from_float(lin, cw, BackendConfig(memory="low"))
    x = torch.randn(2, 37, generator=torch.Generator().manual_seed(4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer(x)  # falls back to the float copy: no row reads the toy format yet
    assert kernel_for(layer, "weight", 2) is Kernel.DENSE
    row = register_kernel(KernelRow("toy_codebook_late", device="cpu", formats=(TOY,), priority=0,
                                    available=lambda _module: True, prepare=_toy_prepare, run=_toy_run))
    try:
        assert kernel_for(layer, "weight", 2) == "toy_codebook_late"
        _close(layer(x), x.double() @ reference_weight(cw).T + lin.bias.detach().double())
        _, entry = format_exec.weight_state(layer, "weight")
        assert [d.kernel for d, _ in entry.decisions.values()] == ["toy_codebook_late"]
    finally:
        unregister_kernel("linear", row.kernel)


def test_a_row_whose_module_cannot_be_imported_is_refused():
    with pytest.raises(ValueError, match="its module 'no_such_pkg.kernels' cannot be imported"):
        register_kernel(KernelRow("toy_missing", module="no_such_pkg.kernels", prepare=_toy_prepare, run=_toy_run))
