"""Fused sibling Linears: quantized Linears that read the same input run as one call over their weights
concatenated along N (a Llama / Qwen2 / Mistral layer's q/k/v and gate/up projections: 7 calls become 4).

`fuse_siblings(model, *example_args, **example_kwargs)` finds the groups and fuses them in place:
- Which Linears are siblings: with an example input, one forward is traced and every QuantLinear called exactly
  once, with the same input tensor object as another, joins that tensor's group (any architecture, nothing
  assumed of names); without one, the children of each module named like a known group (`KNOWN_SIBLINGS`:
  q/k/v_proj, gate/up_proj, query/key/value, w1/w3) are taken as siblings (the layout of transformers' decoders,
  where those names do read the same input). Tracing is the check; the table is the convenience.
- Which fuse: QuantLinears of the affine format with equal K, bits, block size, symmetric flag, scale dtype,
  backend, bias presence and dtype, and no AWQ input scale; incompatible members are left as they are.
- How: the packed codes, scales and zeros are concatenated along N (rows are independent in the format: nothing is
  re-quantized) into one QuantLinear, held by a `FusedSiblings` module registered on the first member's parent
  (`fused_<names>`); each member is replaced by a `SiblingOutput` that returns its columns of the fused output, a
  view (..., N_i) of it. The fused output of one input tensor is computed once and shared by the members while
  that tensor is unchanged (same object, same version counter); a member asking twice recomputes.
- Numbers: every output column of the native CPU kernel is computed on its own (the same int8 activations, the
  same order over K), so outputs are bit-identical to the unfused layers at memory Low (tests); at memory Normal
  F.linear on the concatenated float copy may block differently than on the parts (float summation order).
- Run time only: the state_dict of a fused model would not hold the per-Linear tensors, so saving raises and
  `unfuse_siblings(model)` restores the original QuantLinears (exact row slices of the fused buffers). Fuse after
  quantizing or loading.
"""

from __future__ import annotations

import torch
from torch import nn

from ..quant.format import QuantizedWeight
from .identity import version_of as _version
from .linear import QuantLinear

KNOWN_SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"), ("query", "key", "value"),
                  ("w1", "w3"))
_SAVE_ERROR = ("{}: sibling Linears are fused at run time and a state_dict would not hold their own tensors; call "
               "lowbit.nn.unfuse_siblings(model) before saving")


class FusedSiblings(nn.Module):
    """One QuantLinear (`fused`, N = sum of the members' N) standing for sibling Linears; `names` are the members'
    qualified names and `bounds` their [start, stop) columns. forward(x) gives the whole (..., N) output."""

    def __init__(self, fused: QuantLinear, names: list[str], sizes: list[int], methods: list[str]):
        super().__init__()
        self.fused = fused
        self.names, self.methods = tuple(names), tuple(methods)
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        self.bounds = tuple((s, s + n) for s, n in zip(starts, sizes, strict=True))
        self.sizes = list(sizes)
        self._pending = None  # (x, its version, the members' views not yet taken (None once taken))
        self._traced = None  # the same while torch.compile traces: [x, views, taken flags]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fused(x)

    def member_output(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Member i's columns of the fused output for x: computed once per input tensor for all members."""
        if torch.compiler.is_compiling():
            return self._traced_output(i, x)
        pending = self._pending
        if pending is not None and pending[0] is x and pending[1] == _version(x):
            views = pending[2]
            y = views[i]
            if y is not None:
                views[i] = None
                if not any(v is not None for v in views):
                    self.__dict__["_pending"] = None  # every member has its view: nothing kept between calls
                return y
        views = list(self.fused(x).split_with_sizes(self.sizes, -1))  # (..., N) -> a (..., N_i) view per member
        y, views[i] = views[i], None
        # __dict__ directly: nn.Module.__setattr__ costs ~5 us, more than the rest of a member's call
        self.__dict__["_pending"] = (x, _version(x), views) if len(views) > 1 else None
        return y

    def _traced_output(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """member_output while torch.compile traces: the fused op once per input within one graph (dynamo records
        the attribute's changes; it is None again once every member took its view, as guards expect)."""
        state = self._traced
        if state is None or state[0] is not x or state[2][i]:
            state = [x, self.fused(x).split_with_sizes(self.sizes, -1), [False] * len(self.sizes)]
        taken = list(state[2])
        taken[i] = True
        self._traced = None if all(taken) else [state[0], state[1], taken]
        return state[1][i]

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        raise RuntimeError(_SAVE_ERROR.format(prefix.rstrip(".") or "model"))

    def extra_repr(self) -> str:
        return f"members={list(self.names)}"


class SiblingOutput(nn.Module):
    """Stands where a fused member was: forward(x) -> its (..., out_features) columns of the group's output."""

    def __init__(self, group: FusedSiblings, index: int, in_features: int, out_features: int):
        super().__init__()
        object.__setattr__(self, "group", group)  # not a child: the group is registered once, on the parent
        self.index, self.in_features, self.out_features = index, in_features, out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.group.member_output(self.index, x)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        raise RuntimeError(_SAVE_ERROR.format(prefix.rstrip(".") or "model"))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, member {self.index} of " \
               f"{list(self.group.names)}"


def _fuse_key(layer: QuantLinear):
    """Layers fuse only when this matches (None: this layer never fuses)."""
    if type(layer) is not QuantLinear or not layer.is_affine("weight") or "weight_input_scale" in layer._buffers:
        return None
    meta = layer.quant_meta["weight"]
    scale = layer._buffers.get("weight_scale")
    bias = layer.bias
    return (layer.in_features, meta["bits"], meta["block_size"], meta["symmetric"], meta.get("dtype"),
            None if scale is None else scale.dtype, layer.backend, None if bias is None else bias.dtype,
            layer.training, None if scale is None else scale.device)


def traced_groups(model: nn.Module, *args, **kwargs) -> list[list[str]]:
    """Qualified names of the QuantLinears that read one same input tensor in one forward of model(*args,
    **kwargs) (run under no_grad), each called exactly once; groups of two or more, in call order."""
    calls: dict[str, int] = {}
    by_input: dict[int, tuple[torch.Tensor, list[str]]] = {}

    def hook(name):
        def record(_module, inputs):
            calls[name] = calls.get(name, 0) + 1
            x = inputs[0] if inputs else None
            if isinstance(x, torch.Tensor):
                by_input.setdefault(id(x), (x, []))[1].append(name)  # x is kept: its id is not reused
        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in model.named_modules() if type(m) is QuantLinear]
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    groups = [[n for n in names if calls[n] == 1] for _, names in by_input.values()]
    return [g for g in groups if len(g) > 1]


def named_groups(model: nn.Module) -> list[list[str]]:
    """The `KNOWN_SIBLINGS` children of each module that are QuantLinears, groups of two or more."""
    out = []
    for prefix, module in model.named_modules():
        for names in KNOWN_SIBLINGS:
            found = [n for n in names if type(getattr(module, n, None)) is QuantLinear]
            if len(found) > 1:
                out.append([f"{prefix}.{n}" if prefix else n for n in found])
    return out


def fuse_siblings(model: nn.Module, *example_args, **example_kwargs) -> list[tuple[str, ...]]:
    """Fuse sibling QuantLinears of `model` in place (see the module docstring); returns the fused groups' member
    names. With example inputs the siblings are traced from one forward of model(*example_args,
    **example_kwargs); without, they are found by `KNOWN_SIBLINGS`."""
    traced = bool(example_args or example_kwargs)
    groups = traced_groups(model, *example_args, **example_kwargs) if traced else named_groups(model)
    fused = []
    for names in groups:
        layers = [model.get_submodule(n) for n in names]
        by_key: dict = {}
        for name, layer in zip(names, layers, strict=True):
            key = _fuse_key(layer)
            if key is not None:
                by_key.setdefault(key, []).append((name, layer))
        for members in by_key.values():
            if len(members) > 1:
                _fuse(model, members)
                fused.append(tuple(n for n, _ in members))
    return fused


def _concat(layers: list[QuantLinear]) -> tuple[QuantizedWeight, torch.Tensor | None]:
    qws = [lay.quantized_weight("weight") for lay in layers]
    first = qws[0]
    cat = {f: None if getattr(first, f) is None else torch.cat([getattr(q, f) for q in qws])
           for f in ("packed", "scale", "zero")}
    methods = sorted({q.method for q in qws})
    qw = QuantizedWeight(**cat, shape=(sum(q.n for q in qws), first.shape[1]), dtype=first.dtype, bits=first.bits,
                         block_size=first.block_size, symmetric=first.symmetric, method="+".join(methods))
    biases = [lay.bias for lay in layers]
    bias = None if biases[0] is None else nn.Parameter(torch.cat([b.detach() for b in biases]),
                                                       requires_grad=any(b.requires_grad for b in biases))
    return qw, bias


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def _fuse(model: nn.Module, members: list[tuple[str, QuantLinear]]) -> None:
    names, layers = [n for n, _ in members], [lay for _, lay in members]
    qw, bias = _concat(layers)
    fused = QuantLinear(qw, bias, layers[0].backend).train(layers[0].training)
    group = FusedSiblings(fused, names, [lay.out_features for lay in layers],
                          [lay.quant_meta["weight"]["method"] for lay in layers])
    parent = names[0].rpartition(".")[0]
    _set(model, f"{parent}.{_group_attr(names)}" if parent else _group_attr(names), group)
    for i, (name, layer) in enumerate(members):
        _set(model, name, SiblingOutput(group, i, layer.in_features, layer.out_features))


def _group_attr(names: list[str]) -> str:
    return "fused_" + "_".join(n.rpartition(".")[2] for n in names)


def unfuse_siblings(model: nn.Module) -> int:
    """Put back the QuantLinears `fuse_siblings` replaced (their codes, scales, zeros and bias as exact row slices of
    the fused layer's) and remove the groups; returns how many groups were undone."""
    groups = [(n, m) for n, m in model.named_modules() if isinstance(m, FusedSiblings)]
    for group_name, group in groups:
        fused = group.fused
        qw = fused.quantized_weight("weight")
        for name, (lo, hi), method in zip(group.names, group.bounds, group.methods, strict=True):
            part = QuantizedWeight(
                packed=qw.packed[lo:hi].clone(), scale=None if qw.scale is None else qw.scale[lo:hi].clone(),
                zero=None if qw.zero is None else qw.zero[lo:hi].clone(), shape=(hi - lo, qw.shape[1]),
                dtype=qw.dtype, bits=qw.bits, block_size=qw.block_size, symmetric=qw.symmetric, method=method)
            bias = None if fused.bias is None else nn.Parameter(fused.bias.detach()[lo:hi].clone(),
                                                                requires_grad=fused.bias.requires_grad)
            _set(model, name, QuantLinear(part, bias, fused.backend).train(fused.training))
        parent, _, leaf = group_name.rpartition(".")
        delattr(model.get_submodule(parent) if parent else model, leaf)
    return len(groups)
