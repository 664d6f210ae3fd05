"""A small SentencePiece tokenizer for the `llm` bench's random-weights model, made offline.

llama.cpp's `convert_hf_to_gguf.py` needs a tokenizer in the HF folder it converts. The bench's model has random
weights and no tokenizer of its own, so `write_tokenizer(folder)` trains a SentencePiece BPE model on lowbit's own
text files (lowbit/calib/data/*.txt) and writes `tokenizer.model` and a LlamaTokenizer `tokenizer_config.json`
beside the weights. Its vocabulary is smaller than the model's 32000 rows; the converter pads it up to the config's
`vocab_size` with unused [PAD] tokens, so the GGUF model has exactly the shape of the HF one. The ids of <unk>, <s>
and </s> (0, 1, 2) are LlamaConfig's defaults. Needs the optional `sentencepiece` package (`pip install
lowbit[llm]`); nothing is downloaded.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

TEXTS = Path(__file__).resolve().parents[1] / "lowbit" / "calib" / "data"


def train_tokenizer(vocab_size: int = 1000) -> bytes:
    """The serialized SentencePiece BPE model trained on lowbit/calib/data/*.txt (deterministic: one thread)."""
    import sentencepiece as spm

    lines = [line for f in sorted(TEXTS.glob("*.txt")) for line in f.read_text(encoding="utf-8").splitlines()
             if line.strip()]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size,
                                   model_type="bpe", character_coverage=1.0, byte_fallback=True, num_threads=1,
                                   unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    return model.getvalue()


def write_tokenizer(folder: str | Path, vocab_size: int = 1000) -> Path:
    """Write tokenizer.model and tokenizer_config.json (LlamaTokenizer) into `folder`; returns the model's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tokenizer.model"
    path.write_bytes(train_tokenizer(vocab_size))
    config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
              "add_bos_token": True, "add_eos_token": False, "model_max_length": 2048}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return path
