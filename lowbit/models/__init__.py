"""Models by name: the bundled example model and the one MODULE:FUNCTION contract of every command.

- `lowbit.models.minilm`: the bundled MiniLM sentence encoder (found, loaded, fed, judged); its public names are
  re-exported here (`SENTENCES`, `load_minilm`, `minilm_path`, `embed`).
- `lowbit.models.resolve`: `load_model(spec, needs_inputs=False) -> (model, inputs | None)` for a built-in name
  ("minilm") or MODULE:FUNCTION, and its contract (the function returns a model, or `(model, example_inputs)`).
"""

from .minilm import SENTENCES, embed, load_minilm, minilm_path
from .resolve import BUILTIN_MODELS, find_function, load_model

__all__ = ["BUILTIN_MODELS", "SENTENCES", "embed", "find_function", "load_minilm", "load_model", "minilm_path"]
