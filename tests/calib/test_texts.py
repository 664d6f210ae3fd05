"""The text sets shipped as package data (lowbit.calib.texts) and the padded batches built from them."""

import importlib.util
import re
from pathlib import Path

import pytest
import torch
from conftest import has_minilm

from lowbit.calib.sentences import CALIBRATION_SENTENCES
from lowbit.calib.texts import TEXT_SETS, padded_batches, spread, text_set
from lowbit.models import SENTENCES

ROOT = Path(__file__).resolve().parents[2]


def test_sets_are_large_distinct_and_disjoint_from_the_projects_own():
    varied, docs = text_set("heldout_varied"), text_set("docstrings")
    assert len(varied) >= 100 and len(docs) >= 256
    for s in (varied, docs):
        assert len(set(s)) == len(s), "duplicate sentences"
        assert all(line == line.strip() and line and not line.startswith("#") for line in s)
    own = set(CALIBRATION_SENTENCES) | set(SENTENCES)
    assert not (set(varied) & own) and not (set(docs) & own) and not (set(varied) & set(docs))


def test_heldout_set_is_varied():
    varied = text_set("heldout_varied")
    assert sum(s.endswith("?") for s in varied) >= 10  # questions
    assert sum(bool(re.search(r"[äöüßéèàçñ¿¡]", s)) for s in varied) >= 15  # other languages
    assert sum(bool(re.search(r"\d", s)) for s in varied) >= 15  # numbers
    assert any("SELECT" in s for s in varied) and any("range(" in s for s in varied)  # code-ish lines


def test_docstring_file_matches_its_extractor_rules():
    spec = importlib.util.spec_from_file_location("extract", ROOT / "tools" / "extract_docstring_sentences.py")
    extract = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(extract)
    assert all(extract.is_prose(s) for s in text_set("docstrings"))
    doc = ("Return the sum of the two numbers given here.\n\nParameters:\n    a: first\n\n>>> add(1, 2)\n3\n\n"
           "This is a second paragraph spread over\ntwo lines. It has two sentences in it. Too short here.")
    assert extract.prose_sentences(doc) == ["Return the sum of the two numbers given here.",
                                            "This is a second paragraph spread over two lines.",
                                            "It has two sentences in it."]


def test_unknown_set_and_bad_limits_raise():
    with pytest.raises(ValueError, match="unknown text set 'nope'"):
        text_set("nope")
    with pytest.raises(ValueError, match="limit=0"):
        spread(["a", "b"], 0)
    assert spread(list("abcdef"), 3) == ["a", "c", "e"] and spread(["a"], None) == ["a"]
    assert set(TEXT_SETS) == {"heldout_varied", "docstrings"}


@pytest.mark.skipif(not has_minilm(), reason="needs the bundled MiniLM package (its tokenizer)")
def test_padded_batches_pad_like_the_tokenizer_and_mask_real_tokens():
    from transformers import AutoTokenizer

    from lowbit.models import minilm_path

    tok = AutoTokenizer.from_pretrained(str(minilm_path()))
    sentences = spread(text_set("heldout_varied"), 10)
    cal = padded_batches(tok, sentences, batch_size=4)
    assert len(cal) == 3 and "10 sentences in 3 padded batches of 4" in cal.source
    masks = [item.args[0]["attention_mask"] for item in cal]
    lengths = torch.cat([m.sum(1) for m in masks]).tolist()
    assert lengths == [len(tok(s)["input_ids"]) for s in sentences]  # the mask counts each sentence's own tokens
    assert any((m == 0).any() for m in masks)  # and the batches do carry padding
    with pytest.raises(ValueError, match="batch_size=0"):
        padded_batches(tok, sentences, batch_size=0)
