"""`export` to compressed-tensors pack-quantized: the layout against a numpy reference packer, the numbers against
the real `compressed-tensors` package, every non-representable case, output safety and the CLI."""

import json
import os
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lowbit.checkpoint import CheckpointError, export, save
from lowbit.checkpoint import compressed_tensors as ct
from lowbit.cli import main as cli_main
from lowbit.quant import QuantConfig, quantize_weight
from lowbit.quant.packing import pack_bits

try:
    import compressed_tensors
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32, unpack_from_int32
    from compressed_tensors.quantization import QuantizationConfig
    from compressed_tensors.quantization.lifecycle.forward import dequantize as ct_dequantize

    CT_REASON = None
except ImportError as e:  # the optional `interop` extra; `make test` installs it
    CT_REASON = f"compressed-tensors is not importable ({e}); install it with `make setup` (the interop extra)"
if CT_REASON is None and tuple(int(x) for x in compressed_tensors.__version__.split(".")[:2]) < (0, 17):
    CT_REASON = f"compressed-tensors {compressed_tensors.__version__} packs differently; export targets >= 0.17"
needs_ct = pytest.mark.skipif(CT_REASON is not None, reason=CT_REASON or "")


def reference_pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Independent packer: element j of a row at global bits [j*b, (j+1)*b) of the row's uint32 words, LSB first."""
    n, k = codes.shape
    words = np.zeros((n, (k * bits + 31) // 32), dtype=np.uint64)
    for j in range(k):
        for t in range(bits):
            pos = j * bits + t
            words[:, pos // 32] |= ((codes[:, j].astype(np.uint64) >> t) & 1) << (pos % 32)
    return words.astype(np.uint32).view(np.int32)


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("k", [1, 7, 31, 32, 33, 100])
def test_lowbit_rows_are_the_pack_quantized_layout(bits, k, rng):
    codes = torch.randint(0, 1 << bits, (5, k), generator=rng, dtype=torch.uint8)
    words = ct._rows_as_words(pack_bits(codes, bits))
    assert words.dtype == torch.int32 and words.shape == (5, ct.packed_words(k, bits))
    np.testing.assert_array_equal(words.numpy(), reference_pack(codes.numpy(), bits))


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("n", [1, 4, 37, 64, 384])
@pytest.mark.parametrize("nb", [1, 3])
def test_zero_point_packed_along_rows(bits, n, nb, rng):
    zero = torch.randint(0, 1 << bits, (n, nb), generator=rng).to(torch.float16)  # (N, nb); nb = 1: per channel
    expected = reference_pack(zero.to(torch.uint8).t().numpy(), bits).T  # packed along N
    packed = ct.pack_zero_point(zero, bits, "vllm")
    assert packed.shape == ct.zero_point_shape(n, nb, bits, "vllm") == expected.shape
    np.testing.assert_array_equal(packed.numpy(), expected)
    padded = ct.pack_zero_point(zero, bits)  # transformers: (N, nb), the packed rows then zero rows
    assert padded.shape == (n, nb) == ct.zero_point_shape(n, nb, bits)
    np.testing.assert_array_equal(padded[: expected.shape[0]].numpy(), expected)
    assert not padded[expected.shape[0]:].any()


# ------------------------------------------------------------------------------------------------ helpers


def _linear(rng, n, k, cfg, dtype=torch.float32):
    return quantize_weight(torch.randn(n, k, generator=rng).to(dtype), cfg)


def _save(tmp_path, weights: dict, extra: dict | None = None, config: dict | None = None):
    folder = tmp_path / "lowbit"
    folder.mkdir()
    state = {**weights, **(extra or {})}
    save(state, folder / "model.safetensors")
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "tokenizer.json").write_text('{"tok": 1}')
    return folder


def _scheme_of(qc: dict, module: str) -> dict:
    return next(g["weights"] for g in qc["config_groups"].values() if module in g["targets"])


def _ct_decode(sd: dict, module: str, weights: dict) -> torch.Tensor:
    """Decode one exported Linear with compressed-tensors' own unpack and dequantize."""
    from compressed_tensors.quantization import QuantizationArgs

    args = QuantizationArgs.model_validate(weights)
    shape = torch.Size(sd[f"{module}.weight_shape"].tolist())
    q = unpack_from_int32(sd[f"{module}.weight_packed"], args.num_bits, shape)
    zp = None
    if not args.symmetric:
        nb = sd[f"{module}.weight_scale"].shape[1]
        # packed_dim=0 is unpacking the transpose along dim 1; done so here because compressed-tensors 0.20.1's own
        # transpose fails for N = 1 at 4 bits (a (nb, 1) view it cannot reinterpret as bytes)
        zp_t = sd[f"{module}.weight_zero_point"].t().flatten().view(nb, -1)  # (nb, rows) with unit strides
        zp = unpack_from_int32(zp_t, args.num_bits, (nb, shape[0]), packed_dim=1).t()
    return ct_dequantize(q, sd[f"{module}.weight_scale"], zp, args)


# ------------------------------------------------------------------------------------------ against the package


@needs_ct
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("block", [32, -1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_symmetric_decodes_bit_exact(tmp_path, rng, bits, block, dtype):
    cfg = QuantConfig(bits=bits, block_size=block, symmetric=True)
    qw = _linear(rng, 48, 96, cfg, dtype)
    folder = _save(tmp_path, {"fc.weight": qw}, {"fc.bias": torch.randn(48, generator=rng)})
    summary = export(folder / "model.safetensors", tmp_path / "out", progress=False)
    assert [p.action for p in summary.plans] == ["packed"]
    # float16 scales are exact in float32/float16 models; a bfloat16 model's scales are rounded, and that is reported
    assert (summary.plans[0].rel_error > 0) == (dtype == torch.bfloat16)
    expected = replace(qw, scale=qw.scale.to(dtype)).dequantize()
    sd = load_file(tmp_path / "out" / "model.safetensors")
    qc = json.loads((tmp_path / "out" / "config.json").read_text())["quantization_config"]
    weights = _scheme_of(qc, "fc")
    assert weights == ct.weights_args(bits, block, True)
    assert sd["fc.weight_scale"].dtype == dtype and sd["fc.weight_shape"].tolist() == [48, 96]
    decoded = _ct_decode(sd, "fc", weights)
    assert decoded.dtype == dtype
    assert torch.equal(decoded, expected)
    if dtype != torch.bfloat16:
        assert torch.equal(decoded, qw.dequantize())
    # and the other direction: compressed-tensors' own packer gives the same int32 words
    signed = (qw.unpack().to(torch.int32) - (1 << (bits - 1))).to(torch.int8)
    assert torch.equal(pack_to_int32(signed, bits), sd["fc.weight_packed"])
    assert torch.equal(sd["fc.bias"], folder_bias(folder))


def folder_bias(folder):
    return load_file(folder / "model.safetensors")["fc.bias"]


@needs_ct
@pytest.mark.parametrize("bits", range(2, 9))
def test_every_width_decodes_through_the_package(tmp_path, rng, bits):
    qw = _linear(rng, 40, 64, QuantConfig(bits=bits, block_size=32, symmetric=True))
    folder = _save(tmp_path, {"fc.weight": qw})
    summary = export(folder, tmp_path / "out", progress=False)
    sd = load_file(tmp_path / "out" / "model.safetensors")
    assert torch.equal(_ct_decode(sd, "fc", _scheme_of(summary.quantization_config, "fc")), qw.dequantize())
    assert any("WNA16" in n for n in summary.notes) == (bits not in (4, 8))


@needs_ct
def test_written_config_is_the_package_schema(tmp_path, rng):
    weights = {"a.weight": _linear(rng, 32, 64, QuantConfig(bits=4, block_size=32, symmetric=True)),
               "b.weight": _linear(rng, 32, 64, QuantConfig(bits=8, block_size=-1, symmetric=True)),
               "c.weight": _linear(rng, 32, 64, QuantConfig(bits=4, block_size=32, symmetric=True))}
    plain = {"small.weight": torch.randn(4, 4, generator=rng), "emb.weight": torch.randn(10, 4, generator=rng)}
    folder = _save(tmp_path, weights, plain, config={"model_type": "lowbit-test", "hidden_size": 64})
    summary = export(folder, tmp_path / "out", progress=False)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"] == "lowbit-test" and config["hidden_size"] == 64
    qc = config["quantization_config"]
    parsed = QuantizationConfig.model_validate(qc)
    assert parsed.format == "pack-quantized" and parsed.quant_method == "compressed-tensors"
    assert set(qc) == {"quant_method", "format", "quantization_status", "config_groups", "ignore"}
    targets = sorted(sorted(g["targets"]) for g in qc["config_groups"].values())
    assert targets == [["a", "c"], ["b"]]
    assert qc["ignore"] == ["emb", "small"]
    assert (tmp_path / "out" / "tokenizer.json").read_text() == '{"tok": 1}'
    assert summary.count("packed") == 3
    assert any("not checked" in n for n in summary.notes)  # transformers does not know this architecture


# ------------------------------------------------------------------------------------------ not representable


def _cases(rng):
    """name -> (weight, why): one per kind of weight pack-quantized cannot hold exactly."""
    sym = QuantConfig(bits=4, block_size=32, symmetric=True)
    return {
        "short.weight": (_linear(rng, 16, 40, sym), "short block"),
        "hqq.weight": (_linear(rng, 16, 64, QuantConfig(bits=4, block_size=32, method="hqq")), "non-integer"),
        "rtn_asym.weight": (_linear(rng, 16, 64, QuantConfig(bits=3, block_size=32)), "non-integer"),
        "conv.weight": (quantize_weight(torch.randn(8, 4, 3, 3, generator=rng), sym), "not a Linear"),
        "rnn.weight_ih_l0": (_linear(rng, 32, 16, QuantConfig(bits=4, block_size=-1)), "not a Linear"),
        "half.weight": (_linear(rng, 16, 64, QuantConfig(bits=16)), "float16"),
    }


@pytest.mark.parametrize("name", ["short.weight", "hqq.weight", "rtn_asym.weight", "conv.weight", "rnn.weight_ih_l0",
                                  "half.weight"])
def test_unrepresentable_is_refused_when_strict(tmp_path, rng, name):
    qw, why = _cases(rng)[name]
    folder = _save(tmp_path, {name: qw})
    with pytest.raises(CheckpointError, match=f"{name.replace('.', '[.]')}: .*{why}"):
        export(folder, tmp_path / "out", strict=True, progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["short.weight", "hqq.weight", "rtn_asym.weight", "conv.weight", "half.weight"])
def test_unrepresentable_is_refused_by_default(tmp_path, rng, name):
    """Nothing is kept in float unless asked: the error names the weight, why, and the ways out."""
    cases = _cases(rng)
    qw, why = cases[name]
    packable = _linear(rng, 16, 64, QuantConfig(bits=4, block_size=32, symmetric=True))
    folder = _save(tmp_path, {name: qw, "fc.weight": packable})
    with pytest.raises(CheckpointError, match=f"only 1 of 2 quantized weights would be packed.*{why}.*allow-float"):
        export(folder, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_float_zeros_refusal_says_how_to_convert(tmp_path, rng):
    folder = _save(tmp_path, {"a.weight": _cases(rng)["rtn_asym.weight"][0]})
    with pytest.raises(CheckpointError, match="--format compressed-tensors .* or --symmetric, pass --requantize"):
        export(folder, tmp_path / "out", progress=False)
    (tmp_path / "e").mkdir()
    empty = _save(tmp_path / "e", {}, {"x.weight": torch.zeros(2, 2)})
    with pytest.raises(CheckpointError, match="no quantized weight"):
        export(empty, tmp_path / "out", progress=False)


def test_unrepresentable_kept_float_and_ignored(tmp_path, rng):
    cases = _cases(rng)
    folder = _save(tmp_path, {n: qw for n, (qw, _) in cases.items()})
    with pytest.warns(UserWarning, match="6 of 6 quantized weights are written in FLOAT"):
        summary = export(folder, tmp_path / "out", progress=False, allow_float=True)
    assert {p.name: p.action for p in summary.plans} == dict.fromkeys(cases, "float")
    assert all(p.reason for p in summary.plans) and all(p.rel_error == 0 for p in summary.plans)
    sd = load_file(tmp_path / "out" / "model.safetensors")
    for name, (qw, _) in cases.items():
        assert torch.equal(sd[name], qw.dequantize()), name
    assert summary.quantization_config["ignore"] == sorted(["short", "hqq", "rtn_asym", "conv", "rnn", "half"])
    assert summary.quantization_config["config_groups"] == {}
    table = summary.table()
    assert all(n in table for n in cases) and "kept float" in table


@needs_ct
def test_requantize_reports_error_and_decodes(tmp_path, rng):
    cases = _cases(rng)
    folder = _save(tmp_path, {n: qw for n, (qw, _) in cases.items()})
    with pytest.raises(CheckpointError, match="only 3 of 6"):  # conv, rnn and half cannot be requantized
        export(folder, tmp_path / "out", requantize=True, progress=False)
    with pytest.warns(UserWarning, match="3 of 6"):
        summary = export(folder, tmp_path / "out", requantize=True, allow_float=True, progress=False)
    plans = {p.name: p for p in summary.plans}
    requantized = {"short.weight", "hqq.weight", "rtn_asym.weight"}
    assert {n for n, p in plans.items() if p.action == "requantized"} == requantized
    assert {n for n, p in plans.items() if p.action == "float"} == {"conv.weight", "rnn.weight_ih_l0", "half.weight"}
    sd = load_file(tmp_path / "out" / "model.safetensors")
    assert plans["short.weight"].group == -1  # 40 has no multiple-of-16 divisor <= 32: per channel
    assert "short.weight_zero_point" not in sd and sd["hqq.weight_zero_point"].dtype == torch.int32
    for name in requantized:
        module, ref = name.removesuffix(".weight"), cases[name][0].dequantize()
        decoded = _ct_decode(sd, module, _scheme_of(summary.quantization_config, module))
        d = (decoded.double() - ref.double())
        p = plans[name]
        assert p.rel_error > 0 and p.rel_error == pytest.approx(float(d.norm() / ref.double().norm()), rel=1e-9)
        assert p.max_abs_error == pytest.approx(float(d.abs().max()), rel=1e-9)
        assert p.rel_error < 0.2  # an RTN of the same width, not garbage
        assert f"{p.rel_error:.3e}" in summary.table()


@needs_ct
@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("block", [-1, 32])
@pytest.mark.parametrize("n", [1, 4, 45, 64, 384])
def test_requantize_every_width_and_n_decodes(bits, block, n, rng):
    """Issue 26 item 5: int8 per channel with N % 4 == 0 failed in pack_zero_point; every width x N x blocking."""
    qw = _linear(rng, n, 64, QuantConfig(bits=bits, block_size=block))  # asymmetric, float zeros
    new = ct.requantize(qw, torch.float32)
    sd = {f"fc.{k}": v for k, v in ct.ct_tensors(new, torch.float32).items()}
    for k, (dtype, shape) in ct.ct_shapes(new, torch.float32).items():
        assert sd[f"fc.{k}"].dtype == dtype and tuple(sd[f"fc.{k}"].shape) == shape
    decoded = _ct_decode(sd, "fc", ct.weights_args(bits, ct.effective_group(new), False))
    assert torch.equal(decoded, new.dequantize())


def test_export_error_names_the_layer(tmp_path, rng, monkeypatch):
    folder = _save(tmp_path, {"enc.fc.weight": _linear(rng, 16, 64, QuantConfig(bits=8, block_size=-1))})

    def broken(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(ct, "ct_tensors", broken)
    with pytest.raises(CheckpointError, match="layer 'enc.fc.weight' .*boom"):
        export(folder, tmp_path / "out", requantize=True, progress=False)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_cli_requantize_int8_per_channel(tmp_path, rng, model_file):
    """`convert --bits 8 --block -1` then `export --requantize`: N = 32 (a multiple of 4) packs."""
    assert cli_main(["convert", str(model_file), str(tmp_path / "q.safetensors"), "--bits", "8", "--block", "-1",
                     "--quiet"]) == 0
    assert cli_main(["export", str(tmp_path / "q.safetensors"), str(tmp_path / "out"), "--requantize",
                     "--quiet"]) == 0
    sd = load_file(tmp_path / "out" / "model.safetensors")
    assert sd["fc.weight_zero_point"].shape == (32, 1) and sd["fc.weight_packed"].shape == (32, 24)


def test_requantize_group_choice():
    assert ct.requantize_group(96, 32) == 32
    assert ct.requantize_group(80, 64) == 16  # largest multiple of 16 below 64 dividing 80 (48 and 32 do not)
    assert ct.requantize_group(40, 32) == -1
    assert ct.requantize_group(40, -1) == -1


def test_one_block_per_row_is_channel(tmp_path, rng):
    qw = _linear(rng, 16, 24, QuantConfig(bits=4, block_size=32, symmetric=True))  # K=24 < block: one block
    summary = export(_save(tmp_path, {"fc.weight": qw}), tmp_path / "out", progress=False)
    assert summary.plans[0].action == "packed" and summary.plans[0].group == -1


def test_scale_cast_to_model_dtype_is_reported(tmp_path, rng):
    qw = _linear(rng, 16, 64, QuantConfig(bits=4, block_size=32, symmetric=True, scale_dtype="float32"),
                 torch.float16)
    summary = export(_save(tmp_path, {"fc.weight": qw}), tmp_path / "out", progress=False)
    p = summary.plans[0]
    assert p.action == "packed" and p.rel_error > 0
    assert any("rounded to the model dtype" in n for n in summary.notes)


# ------------------------------------------------------------------------------------------ outputs and CLI


def test_outputs_never_replace_inputs_or_special_files(tmp_path, rng):
    qw = _linear(rng, 16, 64, QuantConfig(bits=4, block_size=32, symmetric=True))
    folder = _save(tmp_path, {"fc.weight": qw}, config={"model_type": "x"})
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(CheckpointError, match="holds the input"):
        export(folder, folder, progress=False)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    (tmp_path / "afile").write_text("x")
    with pytest.raises(CheckpointError, match="not a directory"):
        export(folder, tmp_path / "afile", progress=False)
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "config.json")
    with pytest.raises(CheckpointError, match="holds 'config.json', which is not a regular file"):
        export(folder, out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]  # nothing written before the refusal
    with pytest.raises(ValueError, match="unknown export format"):
        export(folder, tmp_path / "o2", format="gguf")
    with pytest.raises(ValueError, match="pass one of them"):
        export(folder, tmp_path / "o2", strict=True, requantize=True)


def test_cli_export(tmp_path, rng, capsys):
    cases = _cases(rng)
    folder = _save(tmp_path, {"short.weight": cases["short.weight"][0], "fc.weight": _linear(
        rng, 16, 64, QuantConfig(bits=4, block_size=32, symmetric=True))}, config={"model_type": "x"})
    assert cli_main(["export", str(folder), str(tmp_path / "out"), "--quiet"]) == 1
    assert "short.weight" in capsys.readouterr().err and not (tmp_path / "out").exists()
    assert cli_main(["export", str(folder), str(tmp_path / "out"), "--quiet", "--allow-float"]) == 0
    out, err = capsys.readouterr()
    assert "short.weight" in out and "float" in out and "no config.json" not in out and "FLOAT" in err
    assert cli_main(["export", str(folder), str(tmp_path / "o2"), "--strict", "--quiet"]) == 1
    assert "short.weight" in capsys.readouterr().err
    assert cli_main(["export", str(folder), str(tmp_path / "o3"), "--strict", "--requantize"]) == 2


def test_convert_for_compressed_tensors_packs_every_linear(tmp_path, model_file):
    """`convert --format compressed-tensors`: integer zeros and a group dividing K (96 with --block 64 -> 48), so
    export packs every quantized weight as is; HQQ (float zeros) is refused for that format."""
    out = tmp_path / "q.safetensors"
    assert cli_main(["convert", str(model_file), str(out), "--bits", "4", "--block", "64", "--format",
                     "compressed-tensors", "--quiet"]) == 0
    summary = export(out, tmp_path / "ct", progress=False)
    assert [(p.name, p.action, p.group, p.symmetric) for p in summary.plans] == [("fc.weight", "packed", 48, False)]
    with pytest.raises(ValueError, match="HQQ"):
        from lowbit.checkpoint import convert

        convert(model_file, tmp_path / "h.safetensors", QuantConfig(method="hqq"), exact_for="compressed-tensors")
