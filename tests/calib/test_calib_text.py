"""Calibration from text (lowbit.calib.text): .txt / .jsonl / folders tokenized with the model's tokenizer into
unpadded {input_ids, attention_mask} batches, checked against the tokenizer's own ids; and `lowbit convert` of a
Hugging Face folder with GPTQ calibrated on a text file, loaded back by transformers and by lowbit."""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers is not installed")

from lowbit.calib.text import is_text_source, read_texts, text_calibration  # noqa: E402

TEXTS = ["the cat sat", "on the mat today", "a b", "the cat ran", "hello world, again and again"]


def char_tokenizer():
    """A character-level tokenizer with 96 ids (fits a 128-token test model)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, **{chr(c): c - 31 for c in range(32, 127)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def test_reads_txt_jsonl_and_folders(tmp_path):
    (tmp_path / "a.txt").write_text("\n".join(TEXTS[:3]) + "\n\n")
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in TEXTS[3:]) + "\n")
    assert read_texts(tmp_path / "a.txt") == TEXTS[:3]
    assert read_texts(tmp_path / "b.jsonl") == TEXTS[3:]
    assert read_texts(tmp_path) == TEXTS  # name order
    assert is_text_source(tmp_path) and is_text_source(tmp_path / "a.txt")
    (tmp_path / "t").mkdir()
    torch.save(torch.zeros(2), tmp_path / "t" / "0.pt")
    assert not is_text_source(tmp_path / "t")  # a folder of tensors stays a tensor source


def test_bad_text_sources(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"txt": 3}\n')
    with pytest.raises(ValueError, match="bad.jsonl line 2.*\"text\" field"):
        read_texts(tmp_path / "bad.jsonl")
    (tmp_path / "broken.jsonl").write_text('{"text": \n')
    with pytest.raises(ValueError, match="broken.jsonl line 1 is not JSON"):
        read_texts(tmp_path / "broken.jsonl")
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(ValueError, match="holds no text"):
        read_texts(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_texts(tmp_path / "nope.txt")
    (tmp_path / "a.txt").write_text("x\n")
    with pytest.raises(ValueError, match="--tokenizer DIR"):
        text_calibration(tmp_path / "a.txt", None)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        text_calibration(tmp_path / "a.txt", tmp_path / "missing")
    with pytest.raises(ValueError, match="seq_len=0"):
        text_calibration(tmp_path / "a.txt", char_tokenizer(), seq_len=0)


def test_batches_are_the_tokenizers_ids_without_padding(tmp_path):
    (tmp_path / "c.txt").write_text("\n".join(TEXTS))
    tok = char_tokenizer()
    cal = text_calibration(tmp_path / "c.txt", tok, seq_len=12, samples=4, batch_size=8)
    rows = []
    for item in cal:
        ids, mask = item.kwargs["input_ids"], item.kwargs["attention_mask"]
        assert ids.dtype == torch.long and torch.equal(mask, torch.ones_like(ids))  # one length per batch
        rows += ids.tolist()
    want = [tok(t)["input_ids"][:12] for t in TEXTS[:4]]
    assert sorted(rows) == sorted(want)
    assert len(cal) == 3  # lengths 11, 12 (two texts), 3: three unpadded batches
    one_arg = text_calibration(tmp_path / "c.txt", tok, seq_len=12, samples=4, one_argument=True)
    assert all(len(i.args) == 1 and "input_ids" in i.args[0] for i in one_arg)


def test_convert_hf_folder_gptq_from_text(tmp_path):
    """`lowbit convert HF_DIR OUT --method gptq --calib FILE.txt`: the folder's own tokenizer, a folder out that
    transformers and lowbit.from_pretrained load to the same logits, weights different from plain RTN."""
    import lowbit
    from lowbit.cli import main
    from lowbit.nn import quantized_weights

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=128, max_position_embeddings=64,
                                   tie_word_embeddings=True)
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path / "fp")
    char_tokenizer().save_pretrained(tmp_path / "fp")
    (tmp_path / "c.txt").write_text("\n".join(f"sentence {i}: the cat sat on the mat" for i in range(24)))
    args = ["convert", str(tmp_path / "fp"), str(tmp_path / "gptq"), "--method", "gptq", "--calib",
            str(tmp_path / "c.txt"), "--seq-len", "32", "--samples", "16", "--block", "32", "--quiet"]
    assert main(args) == 0
    assert json.loads((tmp_path / "gptq" / "config.json").read_text())["quantization_config"]["method"] == "gptq"
    assert (tmp_path / "gptq" / "tokenizer.json").is_file()
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "gptq")
    ours = lowbit.from_pretrained(tmp_path / "gptq")
    x = torch.tensor([char_tokenizer()("the cat")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(hf(x).logits, ours(x).logits)
    assert ours.lm_head.weight is ours.model.embed_tokens.weight  # tied lm_head kept float and re-tied
    rtn = lowbit.nn.quantize(transformers.LlamaForCausalLM.from_pretrained(tmp_path / "fp"),
                             lowbit.QuantConfig(block_size=32), skip=["lm_head"])
    gptq_w, rtn_w = quantized_weights(ours), quantized_weights(rtn)
    assert sorted(gptq_w) == sorted(rtn_w)
    assert any(not torch.equal(gptq_w[n].packed, rtn_w[n].packed) for n in gptq_w)


def test_auto_and_quant_take_text_calibration(tmp_path):
    """The --calib of `lowbit auto` and `lowbit quant` goes through the same text path (the --model folder's
    tokenizer by default; one-argument items for a model that tokenizes itself)."""
    import argparse

    from lowbit.cli.convert_model import calibration_source, text_options
    from lowbit.cli.quant import calibration_for

    char_tokenizer().save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in TEXTS))
    args = argparse.Namespace(model=str(tmp_path / "m"), tokenizer=None, seq_len=8, samples=3)
    assert text_options(args)["tokenizer"] == str(tmp_path / "m")
    cal = calibration_source(str(tmp_path / "c.jsonl"), 2, args.model, torch.nn.Linear(2, 2), text_options(args))
    assert len(cal) == 2 and all(i.kwargs["input_ids"].shape[1] <= 8 for i in cal)
    static = calibration_for(str(tmp_path / "c.jsonl"), args.model, torch.nn.Linear(2, 2), None, {},
                             text_options(args))
    assert sum(i.kwargs["input_ids"].shape[0] for i in static) == 3
    no_tok = argparse.Namespace(model="pkg:fn", tokenizer=None, seq_len=8, samples=3)
    with pytest.raises(ValueError, match="--tokenizer DIR"):
        calibration_source(str(tmp_path / "c.jsonl"), None, "pkg:fn", torch.nn.Linear(2, 2), text_options(no_tok))
