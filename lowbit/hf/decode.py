"""Decode-step helpers for transformers' causal LMs with lowbit layers: fewer calls and copies per generated token.

`prepare_decode(model)` does, in place:
- fuses sibling QuantLinears (`lowbit.nn.fuse_siblings`: q/k/v and gate/up as one call each over their codes
  concatenated along N; bit-identical outputs at memory Low; run time only, saving raises until
  `lowbit.nn.unfuse_siblings`);
- sets the attention implementation to `PACKED_SDPA` where the model uses transformers' "sdpa": one query token
  (a decode step) with grouped KV heads runs SDPA on the KV heads with each group's query heads as rows
  (transformers' own `pack_gqa`), also inside a torch.compile'd step, where transformers' "sdpa" instead copies the
  whole KV cache to every query head (`repeat_kv`: 4x the cache bytes per layer and token at 32/8 heads, growing
  with a static cache's max_cache_len). Every other call (prefill, no GQA, a per-head mask, a position bias,
  softcap) is transformers' "sdpa" unchanged;
- installs lean one-token steps on Llama / Mistral / Qwen2 decoder layers (`lowbit.hf.decode_step`: a decode step
  in a dozen torch ops per layer instead of transformers' ~80, bit-identical; every other call is the layer's own).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PACKED_SDPA = "lowbit_packed_sdpa"


def packed_sdpa_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                          is_causal: bool | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention-function contract: query (B, H, q, D), key/value (B, H_kv, L, D), mask (B, 1, q, L)
    or None -> ((B, q, H, D) contiguous, None). At q == 1 with H_kv < H: query heads grouped per KV head,
    (B, H_kv, H/H_kv, D), against the cache as it is; otherwise transformers' sdpa_attention_forward."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    b, heads, q_len, _ = query.shape
    if q_len != 1 or groups == 1 or heads != key.shape[1] * groups or kwargs.get("position_bias") is not None \
            or kwargs.get("softcap") is not None or kwargs.get("output_attentions", False) \
            or (attention_mask is not None and attention_mask.shape[1] != 1):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    packed = query.reshape(b, heads // groups, groups, query.shape[-1])  # one row per query head of the group
    out = F.scaled_dot_product_attention(packed, key, value, attn_mask=attention_mask, dropout_p=dropout,
                                         scale=scaling, is_causal=False)
    return out.reshape(out.shape[0], heads, 1, value.shape[-1]).transpose(1, 2).contiguous(), None


def register_packed_sdpa() -> str:
    """Register `PACKED_SDPA` with transformers' attention and mask interfaces (the mask is sdpa's); its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(PACKED_SDPA, packed_sdpa_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(PACKED_SDPA, sdpa_mask)
    return PACKED_SDPA


def prepare_decode(model: torch.nn.Module, fuse: bool = True, attention: bool = True, lean: bool = True) -> dict:
    """Fuse `model`'s sibling QuantLinears, switch its "sdpa" attention to `PACKED_SDPA` and install lean one-token
    steps on its Llama-family layers (`lowbit.hf.decode_step`; see the module docstring), in place. Returns
    {"fused": the fused groups' member names, "attention": the implementation now set (None: left as it was, the
    model not on "sdpa"), "lean": how many layers took a lean step}."""
    from ..nn import fuse_siblings
    from .decode_step import lean_decode_layers

    done = {"fused": fuse_siblings(model) if fuse else [], "attention": None, "lean": 0}
    config = getattr(model, "config", None)
    if attention and getattr(config, "_attn_implementation", None) == "sdpa":
        model.set_attn_implementation(register_packed_sdpa())
        done["attention"] = PACKED_SDPA
    if lean:
        done["lean"] = lean_decode_layers(model)
    return done
