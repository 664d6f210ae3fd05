"""lowbit.calib.sentences read from package data: exactly the tuple the module held as Python source before."""

import hashlib
import json
from importlib import resources

from lowbit.calib.sentences import CALIBRATION_SENTENCES

# computed from the Python tuple lowbit/calib/sentences.py held at 30345af (sha256 of its JSON, ensure_ascii=False)
SHA256 = "5bd3e4707eadb85dd601e85c80780654c015e16c5da4ef2174253fc3b4f0e1c7"


def test_same_sentences_in_the_same_order_as_the_python_tuple():
    assert type(CALIBRATION_SENTENCES) is tuple and len(CALIBRATION_SENTENCES) == 1000
    assert CALIBRATION_SENTENCES[0] == "I left my umbrella on the bus this morning."
    assert CALIBRATION_SENTENCES[-1] == ('"Right, listen carefully," said the coach, "because I\'m only going to say '
                                        'this once, and then I want to see you all running."')
    digest = hashlib.sha256(json.dumps(CALIBRATION_SENTENCES, ensure_ascii=False).encode()).hexdigest()
    assert digest == SHA256


def test_the_data_file_is_package_data_with_one_sentence_a_line():
    text = resources.files("lowbit.calib").joinpath("data", "minilm_calibration.txt").read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if not ln.startswith("#")]
    assert tuple(lines) == CALIBRATION_SENTENCES  # no blank line, no padding: what is read is the file
