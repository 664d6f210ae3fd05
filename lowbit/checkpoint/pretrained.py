"""`from_pretrained`: a lowbit checkpoint (or a folder holding one with a Hugging Face config.json) -> a ready model."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch

from .hf_folder import CONFIG_NAME
from .load import load
from .shards import checkpoint_in_folder


def _checkpoint_file(path: Path) -> Path:
    if path.is_dir():
        return checkpoint_in_folder(path)  # model.safetensors, or a sharded index
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    return path


def model_class(config, folder: Path):
    """The transformers class config.json's `architectures` names (LlamaForCausalLM, BertModel, ...); AutoModel,
    the headless base, only when the config names none."""
    import transformers

    names = getattr(config, "architectures", None) or []
    if not names:
        return transformers.AutoModel
    cls = getattr(transformers, names[0], None)
    if cls is None:
        raise ValueError(f"{folder / CONFIG_NAME} names architecture {names[0]!r}, which this transformers "
                         f"{transformers.__version__} does not have; pass model= the float model to load into")
    return cls


def _build_from_config(folder: Path) -> torch.nn.Module:
    """The float architecture from config.json, on the meta device (the load assigns every tensor)."""
    try:
        from transformers import AutoConfig
    except ImportError as e:
        raise ImportError(f"building a model from {folder / CONFIG_NAME} needs transformers (pip install "
                          f"transformers), or pass model= the float model to load into ({e})") from None
    config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    if hasattr(config, "quantization_config"):  # the build is the float model; the file's header says what is packed
        del config.quantization_config
    with _parameters_on_meta():
        return model_class(config, folder)._from_config(config)


@contextmanager
def _parameters_on_meta():
    """Parameters are created on the meta device (the load assigns them), buffers stay real: non-persistent ones
    such as rotary inv_freq are computed in __init__ and are not in the file. (accelerate's init_empty_weights does
    the same; transformers 5 no longer ships it.)"""
    register = torch.nn.Module.register_parameter

    def register_on_meta(module, name, param):
        if param is not None and param.device.type != "meta":
            param = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    torch.nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register


def _folder_backend(folder: Path):
    """The memory / precision a lowbit quantization_config in config.json names (None: the default backend)."""
    from .hf_folder import read_config

    qc = read_config(folder / CONFIG_NAME).get("quantization_config")
    if not isinstance(qc, dict) or qc.get("quant_method") != "lowbit":
        return None
    from ..runtime import BackendConfig

    try:
        return BackendConfig(memory=qc.get("memory", "normal"), precision=qc.get("precision", "normal"))
    except ValueError as e:
        raise ValueError(f"{folder / CONFIG_NAME}: quantization_config: {e}") from None


def _untie(model: torch.nn.Module, file: Path) -> dict[str, str]:
    """Drop the parameters that are tied copies of others (lm_head.weight = embed_tokens.weight) and that the file
    does not hold (save_pretrained leaves them out), so the load does not look for them; returns {target: source}
    for `_retie`."""
    from .safetensors_io import read_header

    tied = dict(getattr(model, "all_tied_weights_keys", None) or {})
    entries = read_header(file)[0] if tied else {}
    for target in [t for t in tied if t not in entries]:
        module_name, _, param = target.rpartition(".")
        module = model.get_submodule(module_name) if module_name else model
        module._parameters.pop(param, None)
    return tied


def from_pretrained(path: str | Path, model: torch.nn.Module | None = None, backend=None) -> torch.nn.Module:
    """Load a lowbit checkpoint into a model and return it ready to run (eval mode).

    path: a lowbit checkpoint file, or a folder holding one as model.safetensors (what `lowbit convert MODEL OUT`
    and a lowbit model's `save_pretrained` write, with the model's config.json beside it). model: the float model
    to load into (any nn.Module, also a wrapper such as a SentenceTransformer around the converted model); when
    None, the class config.json's `architectures` names (AutoModelForCausalLM's LlamaForCausalLM, a
    ForSequenceClassification, ...) is built with transformers (an optional dependency) on the meta device, its tied
    weights (lm_head = embeddings) re-tied after the load. backend: a `lowbit.BackendConfig` (default: the memory
    and precision of the folder's lowbit quantization_config, else BackendConfig()). Every check of `lowbit.load`
    applies.
    """
    path = Path(path)
    file = _checkpoint_file(path)
    if model is not None:
        return load(model, file, backend=backend).eval()
    if not (file.parent / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} next to {file} to build the model from; pass model= the "
                                "float model the checkpoint was made from")
    model = _build_from_config(file.parent)
    backend = backend if backend is not None else _folder_backend(file.parent)
    tied = _untie(model, file)
    model = load(model, file, backend=backend)
    _retie(model, tied)
    return model.eval()


def _retie(model: torch.nn.Module, tied: dict[str, str]) -> None:
    """Point each tied target at its source again (a target the file quantized stays its own packed layer)."""
    for target, source in tied.items():
        module_name, _, param = target.rpartition(".")
        module = model.get_submodule(module_name) if module_name else model
        if not hasattr(module, "quant_meta"):
            setattr(module, param, model.get_parameter(source))
