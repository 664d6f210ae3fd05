"""Calibration sentences for the built-in MiniLM: the project's own, none of them in `lowbit.models.SENTENCES`
(the sentences accuracy is measured on). Varied topics, lengths and styles, written for this purpose.

The 1000 sentences are package data, lowbit/calib/data/minilm_calibration.txt (one per line, headed by topic
comments), read once at import."""

from .texts import read_sentences

CALIBRATION_SENTENCES: tuple[str, ...] = read_sentences("minilm_calibration.txt")
