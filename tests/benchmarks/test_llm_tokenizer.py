"""The `llm` bench's offline tokenizer: a deterministic SentencePiece model whose special ids are LlamaConfig's."""

import json

import pytest

spm = pytest.importorskip("sentencepiece")

from benchmarks.llm_tokenizer import train_tokenizer, write_tokenizer  # noqa: E402


def test_tokenizer_is_deterministic_with_llama_special_ids(tmp_path):
    path = write_tokenizer(tmp_path, vocab_size=500)
    assert path.read_bytes() == train_tokenizer(vocab_size=500)
    sp = spm.SentencePieceProcessor(model_file=str(path))
    assert sp.vocab_size() == 500
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2)
    text = "Quantize the weights of a decoder, 4 bits per weight: ü"
    assert sp.decode(sp.encode(text)) == text  # byte fallback: no <unk> for characters outside the texts
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "LlamaTokenizer"
