"""A decoder model's skeleton without its weights, and its weights read one module at a time from the shards.

`build_skeleton(folder)` builds the transformers causal LM of `config.json` with every parameter on the meta device
(no memory, no initialisation) while buffers stay real: rotary `inv_freq` and similar buffers are computed in
`__init__` and are not in the checkpoint. `decoder_blocks(model)` finds the `ModuleList` of blocks. `ShardReader`
memory-maps the safetensors shards (safetensors' `safe_open`) and `load_module` materialises one module's
parameters from them, so at any time only the module being worked on holds float weights.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import json
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from ..checkpoint.errors import CheckpointError

CONFIG_NAME = "config.json"


@contextlib.contextmanager
def params_on_meta() -> Iterator[None]:
    """Modules built inside get their parameters on the meta device; buffers are created normally."""
    original = nn.Module.register_parameter

    def register(module, name, param):
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        original(module, name, param)

    nn.Module.register_parameter = register
    try:
        yield
    finally:
        nn.Module.register_parameter = original


def is_decoder_folder(path: str | Path) -> bool:
    """A Hugging Face folder whose config.json names a causal-LM architecture (`*ForCausalLM`/`*LMHeadModel`)."""
    config = Path(path) / CONFIG_NAME
    if not (Path(path).is_dir() and config.is_file()):
        return False
    try:
        archs = json.loads(config.read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return False
    return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)


def build_skeleton(folder: str | Path, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The causal LM of `folder/config.json`, parameters on meta, in eval mode."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    with params_on_meta():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def decoder_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(qualified name, ModuleList) of the model's decoder blocks: the longest ModuleList whose length is the
    config's num_hidden_layers (n_layer for GPT-2)."""
    n = getattr(model.config, "num_hidden_layers", None)
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == n]
    if not found:
        raise ValueError(f"{type(model).__name__}: no ModuleList of {n} decoder blocks found; sequential "
                         "quantization needs the blocks in one nn.ModuleList (as Llama's model.layers)")
    return min(found, key=lambda f: f[0].count("."))


class ShardReader:
    """The tensors of a folder's safetensors files (one file or an HF index), memory-mapped by `safe_open`.

    Only one shard is mapped at a time (the one last read): a mapping counts towards the address space, and a
    model larger than a memory limit (RLIMIT_AS) must still be readable."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        else:
            files = [p.name for p in sorted(folder.glob("*.safetensors"))]
        if not files:
            raise FileNotFoundError(f"{folder} holds no .safetensors weights (sequential quantization reads "
                                    "safetensors shards; save the model with safe_serialization=True)")
        self.files = [folder / f for f in files]
        self.where: dict[str, Path] = {}
        self._open: tuple[Path, object] | None = None
        for f in self.files:
            self.where.update(dict.fromkeys(self._handle(f).keys(), f))

    def _handle(self, file: Path):
        from safetensors import safe_open

        if self._open is None or self._open[0] != file:
            self._open = None  # unmap the previous shard first
            self._open = (file, safe_open(str(file), framework="pt"))
        return self._open[1]

    def release(self) -> None:
        """Unmap the open shard. Pages read from a mapping stay in the process's RSS until it is unmapped (one
        fp32 block of the ~1B shape each: 172 MB), so the block walk releases after every block; the next read
        maps the shard again (its header only)."""
        self._open = None

    def slice(self, name: str) -> tuple[torch.dtype, tuple[int, ...]]:
        """(dtype, shape) of a tensor without reading it."""
        from ..checkpoint.safetensors_io import DTYPES

        sl = self._handle(self.where[name]).get_slice(name)
        return DTYPES[sl.get_dtype()], tuple(sl.get_shape())

    def get(self, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The tensor, copied out of the mapping (cast to dtype when floating and given)."""
        if name not in self.where:
            raise CheckpointError(f"tensor {name!r} is missing from {', '.join(str(f) for f in self.files)}")
        t = self._handle(self.where[name]).get_tensor(name)
        if dtype is not None and t.is_floating_point() and t.dtype != dtype:
            return t.to(dtype)
        return t.clone()


def checkpoint_name(reader: ShardReader, name: str) -> str:
    """The checkpoint's name for a model parameter: as is, or without the base-model prefix some files omit."""
    if name in reader.where:
        return name
    short = name.partition(".")[2]
    return short if short in reader.where else name


def load_module(module: nn.Module, prefix: str, reader: ShardReader, dtype: torch.dtype, exclude: str = "") -> None:
    """Replace every meta parameter of `module` (named `prefix` + name in the model) by its checkpoint tensor,
    except those whose name starts with `exclude`. Tied parameters (one Parameter under several names, e.g. a
    tied lm_head) stay one Parameter."""
    names: dict[int, list[str]] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        if param.device.type == "meta" and not (exclude and name.startswith(exclude)):
            names.setdefault(id(param), []).append(name)
    loaded: dict[int, nn.Parameter] = {}
    for name, param in list(module.named_parameters(remove_duplicate=False)):
        if id(param) not in names:
            continue
        if id(param) not in loaded:
            found = [n for n in names[id(param)] if checkpoint_name(reader, prefix + n) in reader.where]
            full = prefix + (found[0] if found else name)
            t = reader.get(checkpoint_name(reader, full), dtype)
            if tuple(t.shape) != tuple(param.shape):
                raise CheckpointError(f"{full}: checkpoint shape {tuple(t.shape)} != model shape "
                                      f"{tuple(param.shape)}")
            loaded[id(param)] = nn.Parameter(t, requires_grad=False)
        owner_name, _, leaf = name.rpartition(".")
        setattr(module.get_submodule(owner_name) if owner_name else module, leaf, loaded[id(param)])


def release_freed_memory() -> None:
    """Hand the allocator's freed pages back to the system (glibc `malloc_trim`; nothing elsewhere).

    Without it the resident set grows by about a block per block: after the first large buffers are freed, glibc
    raises its mmap threshold, later block-sized buffers come from the heap, and the freed heap stays resident."""
    global _TRIM
    if _TRIM is None:
        try:
            _TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    gc.collect()  # shard mappings held in reference cycles are released here
    if _TRIM:
        _TRIM(0)


_TRIM = None
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def fix_mmap_threshold(nbytes: int = 1 << 20) -> None:
    """Serve every allocation above nbytes with its own mapping, returned to the system when freed (glibc
    `mallopt(M_MMAP_THRESHOLD)`, as the MALLOC_MMAP_THRESHOLD_ variable; nothing elsewhere).

    glibc raises the threshold each time a large mapped buffer is freed, after which later block-sized buffers come
    from the heap and freed heap stays resident (benchmarks/llm_memory.py measured +200 MB of address space per 24
    blocks at h512 with the dynamic threshold, flat with a fixed one). The setting is process-wide, as the
    environment variable is."""
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(_M_MMAP_THRESHOLD, nbytes)
    except (OSError, AttributeError):
        pass


def free_module(module: nn.Module) -> None:
    """Put `module`'s parameters back on meta (their memory is released)."""
    for name, param in list(module.named_parameters(recurse=True)):
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        setattr(owner, leaf, nn.Parameter(param.detach().to("meta"), requires_grad=False))
    release_freed_memory()
