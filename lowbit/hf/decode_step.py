"""One-token decode steps of Llama-family decoder layers in a dozen torch ops instead of transformers' ~80.

At batch 1 a decode step's cost besides the weight bytes is Python and small-op dispatch: transformers' decoder
layer (decorators, module calls, RMSNorm in six ops, rotary in ten, `repeat_kv` or `pack_gqa`, reshapes) costs
~260 us per layer on one Zen 4 core, 4 ms a token at 16 layers, against ~20 ms of kernel time at int4.
`lean_decode_layers(model, native=True)` installs, on each decoder layer whose class is a known Llama-family layer
(`LEAN_LAYERS`: Llama, Mistral, Qwen2: RMSNorm, rotary, grouped-query sdpa, SiLU-gated MLP), a forward that runs
one-token steps as: RMSNorm, the q/k/v projections (one call when `lowbit.nn.fuse_siblings` fused them), rotary on
q and k, the cache's update, one query's attention, o_proj, residual, RMSNorm, gate/up, SiLU * up, down, residual.
Every other call (prefill, training, torch.compile tracing, output_attentions, a mask that is not one row per
batch, attention other than sdpa, layers whose forward someone else replaced) is the layer's own forward.

Numbers: with torch's ops (`native=False`, and every step that is not batch 1 fp32 without autograd) the same ops in
transformers' order, bit-identical. With `native`, the fp32 glue runs in `lowbit.kernels.cpu_decode` (~1e-7
relative to torch) and a DynamicCache grows in place (`lowbit.hf.kv_cache`). `restore_decode_layers(model)` takes
the forwards back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels import cpu_decode
from .kv_cache import append_in_place, valid_length

LEAN_LAYERS = ("LlamaDecoderLayer", "MistralDecoderLayer", "Qwen2DecoderLayer")
_ATTENTION = ("sdpa", "lowbit_packed_sdpa")
_SILU = ("SiLU", "SiLUActivation")
_NORMS = ("LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm")
_F32 = torch.float32


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' Llama RMSNorm, op for op (normalize in fp32, back to x's dtype, then scale)."""
    h = x.to(_F32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """transformers' rotary embedding of x (B, heads, D) by cos/sin (B, 1, D): x * cos + rotate_half(x) * sin."""
    half = x.shape[-1] // 2
    return (x * cos) + (torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin)


def attend(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None,
           scaling: float, packed_always: bool) -> torch.Tensor:
    """One query token's attention, (B, heads, D) against the cache (B, kv_heads, L, D) -> (B, 1, heads * D), as
    transformers' sdpa computes it outside torch.compile: sdpa's own GQA when it would use it (no mask), else the
    query heads packed per KV head as rows (`pack_gqa`); `packed_always`: lowbit_packed_sdpa's rule (always packed)."""
    from transformers.integrations.sdpa_attention import use_gqa_in_sdpa

    b, heads, d = query.shape
    kv_heads = keys.shape[1]
    if kv_heads != heads and not packed_always and use_gqa_in_sdpa(mask, keys, values):
        out = F.scaled_dot_product_attention(query.unsqueeze(2), keys, values, attn_mask=mask, dropout_p=0.0,
                                             scale=scaling, is_causal=False, enable_gqa=True)
    else:
        grouped = query.reshape(b, kv_heads, heads // kv_heads, d)  # one row per query head of the group
        out = F.scaled_dot_product_attention(grouped, keys, values, attn_mask=mask, dropout_p=0.0, scale=scaling,
                                             is_causal=False)
    return out.reshape(out.shape[0], 1, heads * d)


def _siblings(modules: tuple[nn.Module, ...]):
    """The `FusedSiblings` group whose members are exactly `modules` in column order, else None."""
    group = getattr(modules[0], "group", None)
    if group is None or len(group.bounds) != len(modules):
        return None
    members = [getattr(m, "group", None) is group and getattr(m, "index", -1) == i for i, m in enumerate(modules)]
    return group if all(members) else None


class LeanDecodeStep:
    """The installed forward of one decoder layer (see the module docstring); other calls go to its class's forward
    (looked up at each call, so copies and pickles of the layer need nothing of this object but the layer)."""

    def __init__(self, layer: nn.Module, config, native: bool = True):
        self.native = native
        self.layer, self.config = layer, config
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self._groups: dict[str, tuple] = {}  # "qkv"/"gate_up" -> (the modules seen, their fused group or None)

    def __call__(self, *args, **kwargs):
        step = self._lean_inputs(args, kwargs)
        if step is None:
            return type(self.layer).forward(self.layer, *args, **kwargs)
        lib = self._native_library(*step)
        return self._step(*step, kwargs) if lib is None else self._native_step(lib, *step, kwargs)

    def _native_library(self, x, mask, cache, cos, sin):
        """The native library when this step may run its glue there (`native` on, batch 1, fp32 contiguous
        activations and rotary tables, no autograd, head_dim <= 512), else None."""
        if not self.native or x.shape[0] != 1 or torch.is_grad_enabled() \
                or self.layer._modules["self_attn"].head_dim > 512:
            return None
        if not cpu_decode.plain_f32(x, cos, sin):
            return None
        return cpu_decode.decode_library()

    def _lean_inputs(self, args, kwargs):
        """(hidden_states, mask, cache, cos, sin) when this call is a one-token step the lean path serves, else None."""
        x = args[0] if args else kwargs.get("hidden_states")
        if len(args) > 1 or x is None or x.dim() != 3 or x.shape[1] != 1 or self.layer.training:
            return None
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        rope = kwargs.get("position_embeddings")
        mask = kwargs.get("attention_mask")
        if cache is None or rope is None or kwargs.get("output_attentions") or torch.compiler.is_compiling():
            return None
        if mask is not None and (mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[2] != 1):
            return None
        if _attention_of(self.config) not in _ATTENTION:
            return None
        return x, mask, cache, rope[0], rope[1]

    def _project(self, h: torch.Tensor, name: str, modules: tuple[nn.Module, ...]):
        """(each module's output for h, the fused output or None): one fused call sliced when they are fused
        siblings, else one call each. Modules are read from the layer at every call (a later fuse or swap is seen);
        the group test is cached on their identities."""
        seen = self._groups.get(name)
        if seen is None or any(a is not b for a, b in zip(seen[0], modules, strict=True)):
            seen = self._groups[name] = (modules, _siblings(modules))
        group = seen[1]
        if group is None:
            return [m(h) for m in modules], None
        out = group.fused(h)
        return [out[..., a:b] for a, b in group.bounds], out

    def _step(self, x, mask, cache, cos, sin, kwargs):
        layer, b = self.layer, x.shape[0]
        attn, mlp = layer.self_attn, layer.mlp
        d = attn.head_dim
        h = rms_norm(x, layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon)
        (q, k, v), _ = self._project(h, "qkv", (attn.q_proj, attn.k_proj, attn.v_proj))
        q = rotate(q.reshape(b, self.heads, d), cos, sin)
        k = rotate(k.reshape(b, self.kv_heads, d), cos, sin)
        keys, values = cache.update(k.unsqueeze(2), v.reshape(b, self.kv_heads, 1, d), attn.layer_idx,
                                    kwargs=_extra(kwargs))
        packed = _attention_of(self.config) != "sdpa"
        out = attend(q, keys, values, mask, attn.scaling, packed_always=packed)
        x = x + attn.o_proj(out)
        h = rms_norm(x, layer.post_attention_layernorm.weight, layer.post_attention_layernorm.variance_epsilon)
        (gate, up), _ = self._project(h, "gate_up", (mlp.gate_proj, mlp.up_proj))
        return x + mlp.down_proj(F.silu(gate) * up)

    def _native_step(self, lib, x, mask, cache, cos, sin, kwargs):
        """`_step` with its fp32 glue in native calls (`lowbit.kernels.cpu_decode`), batch 1, no autograd."""
        # submodules and parameters through their dicts: nn.Module.__getattr__ costs ~1 us a lookup, ~25 a layer
        heads, kv, mods = self.heads, self.kv_heads, self.layer._modules
        attn, mlp, ln1, ln2 = mods["self_attn"], mods["mlp"], mods["input_layernorm"], mods["post_attention_layernorm"]
        am, mm, d = attn._modules, mlp._modules, attn.head_dim
        h = cpu_decode.rms_norm(lib, x, ln1._parameters["weight"], ln1.variance_epsilon)
        (q, k, v), whole = self._project(h, "qkv", (am["q_proj"], am["k_proj"], am["v_proj"]))
        if whole is not None and cpu_decode.plain_f32(whole):
            cpu_decode.rope_(lib, whole, cos, sin, heads + kv, d)  # q's heads then k's, adjacent in the output
        else:  # copies: a projection's output may be a view someone else holds (a sibling group's shared output)
            q, k = q.clone(memory_format=torch.contiguous_format), k.clone(memory_format=torch.contiguous_format)
            cpu_decode.rope_(lib, q, cos, sin, heads, d)
            cpu_decode.rope_(lib, k, cos, sin, kv, d)
        k, v = k.view(1, kv, 1, d), v.reshape(1, kv, 1, d)
        appended = append_in_place(cache, attn.layer_idx, k, v)
        keys, values = appended or cache.update(k, v, attn.layer_idx, kwargs=_extra(kwargs))
        length = valid_length(mask, keys)
        if length is not None and cpu_decode.rows_f32(keys) and cpu_decode.rows_f32(values) \
                and keys.stride() == values.stride():
            out = cpu_decode.attend_one(lib, q, keys, values, length, attn.scaling, torch.get_num_threads())
        else:
            out = attend(q.reshape(1, heads, d), keys, values, mask, attn.scaling,
                         packed_always=_attention_of(self.config) != "sdpa")
        stream = am["o_proj"](out)
        if not cpu_decode.plain_f32(stream):
            stream = stream.contiguous().float()
        h = cpu_decode.add_rms_norm_(lib, stream, x, ln2._parameters["weight"], ln2.variance_epsilon)  # x + attention
        (gate, up), whole = self._project(h, "gate_up", (mm["gate_proj"], mm["up_proj"]))
        if whole is not None and cpu_decode.plain_f32(whole):
            product = cpu_decode.silu_mul(lib, whole)
        else:
            product = F.silu(gate) * up
        return stream.add_(mm["down_proj"](product))


_CONSUMED = ("hidden_states", "attention_mask", "cache", "past_key_values", "position_embeddings")


def _attention_of(config) -> str | None:
    """config._attn_implementation, read from the instance dict where transformers keeps it (the property costs
    ~3 us, once per layer and token)."""
    stored = vars(config)
    if "_attn_implementation_internal" in stored:
        return stored["_attn_implementation_internal"]
    return getattr(config, "_attn_implementation", None)


def _extra(kwargs: dict) -> dict:
    """The keyword arguments transformers' attention hands on to `cache.update` (position ids, cache position...)."""
    return {key: val for key, val in kwargs.items() if key not in _CONSUMED}


def _eligible(layer: nn.Module, config) -> bool:
    """A transformers Llama-family layer (class and module by name: remote-code look-alikes are left alone) with
    standard RMSNorms, a SiLU-gated MLP and whole query groups per KV head, whose forward nobody else replaced."""
    kind = type(layer)
    if kind.__name__ not in LEAN_LAYERS or not kind.__module__.startswith("transformers.models."):
        return False
    own = vars(layer).get("forward")
    if (own is not None and not isinstance(own, LeanDecodeStep)) or hasattr(layer, "_hf_hook"):
        return False  # someone else's forward (accelerate's offload hooks wrap it): theirs must run
    attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
    norms = (getattr(layer, "input_layernorm", None), getattr(layer, "post_attention_layernorm", None))
    heads, kv_heads = getattr(config, "num_attention_heads", 0), getattr(config, "num_key_value_heads", 0) or 0
    return (attn is not None and mlp is not None and type(getattr(mlp, "act_fn", None)).__name__ in _SILU
            and all(type(n).__name__ in _NORMS for n in norms) and kv_heads > 0 and heads % kv_heads == 0)


def lean_decode_layers(model: nn.Module, native: bool = True) -> int:
    """Install `LeanDecodeStep` on every eligible decoder layer of `model` (fuse siblings first to have one q/k/v
    and one gate/up call); returns how many layers took it. Idempotent: a layer already lean is refreshed.
    native: run the fp32 glue of batch-1 steps in the native library (not bit-identical, ~1e-6); False keeps
    torch's ops, bit-identical to transformers."""
    config = getattr(model, "config", None)
    if config is None:
        return 0
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    done = 0
    for layer in model.modules():
        if _eligible(layer, config):
            restore_layer(layer)
            layer.forward = LeanDecodeStep(layer, config, native)
            done += 1
    return done


def restore_layer(layer: nn.Module) -> None:
    """Give `layer` its own forward back (nothing when it has no lean step)."""
    if isinstance(layer.__dict__.get("forward"), LeanDecodeStep):
        del layer.forward


def restore_decode_layers(model: nn.Module) -> int:
    """Take every lean step off `model`'s layers; returns how many were taken."""
    lean = [m for m in model.modules() if isinstance(m.__dict__.get("forward"), LeanDecodeStep)]
    for layer in lean:
        restore_layer(layer)
    return len(lean)
