"""Gemma 2 decoder block: one scanned "layer" is a [local, global] pair, as in MaxText.

So `num_decoder_layers` (MaxText's base_num_decoder_layers) is HALF the real layer count: gemma2-2b has 26
layers = 13 pairs. HF layer 2i is pair i's `local_layer` (sliding window `sliding_window_size`), HF layer
2i+1 its `global_layer` (full attention); both use RoPE base rope_max_timescale.

Other quirks on top of gemma (1) (see gemma.py for norms, embedding scale and GeGLU):
- post-attention and post-feed-forward RMSNorms (use_post_attn_norm / use_post_ffw_norm in the presets);
- attention logits soft-capped at attn_logits_soft_cap (50), final logits at final_logits_soft_cap (30);
- queries scaled by query_pre_attn_scalar ** -0.5 (gemma2-27b: 144 = emb_dim / heads, not head_dim 128).
KV cache: a pair needs two attention caches, so the cache entry of layer i is [.., K, 2H]: the local
layer's keys/values in [..., :H], the global layer's in [..., H:] (`kv_caches_per_layer = 2`).

HF mapping: as gemma (1) with model.layers.j -> decoder.layers.{j // 2}.{local_layer|global_layer} and
  input_layernorm -> pre_self_attention_norm, post_attention_layernorm -> post_self_attention_norm,
  pre_feedforward_layernorm -> pre_ffw_norm, post_feedforward_layernorm -> post_ffw_norm.
"""

from __future__ import annotations

import re

import jax
from flax import nnx

from maxtext_like.models import blocks
from maxtext_like.models.families.gemma import PROJECTION_ROWS, GemmaHF, GemmaSublayer
from maxtext_like.models.family import Family
from maxtext_like.models.hf_registry import HFConfigError, Table
from maxtext_like.models.kv_cache import LayerKV
from maxtext_like.models.spec import ModelSpec

SUBLAYERS = ("local_layer", "global_layer")


class Gemma2DecoderLayer(nnx.Module):
  """local_layer (sliding window) then global_layer; each a GemmaSublayer with its own parameters."""

  def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs):
    self.head_dim = spec.head_dim
    self.local_layer = GemmaSublayer(spec, rngs=rngs)
    self.global_layer = GemmaSublayer(spec.replace(sliding_window_size=0), rngs=rngs)

  def __call__(self, x_BTD: jax.Array, positions_BT: jax.Array, segment_ids_BT: jax.Array, *,
               dropout_key: jax.Array | None = None,
               cache: LayerKV | None = None) -> tuple[jax.Array, LayerKV | None]:
    keys = blocks.branch_keys(dropout_key)
    caches = (None, None) if cache is None else (cache.part(0, 2), cache.part(1, 2))
    x_BTD, local_kv = self.local_layer(x_BTD, positions_BT, segment_ids_BT, dropout_key=keys[0], cache=caches[0])
    x_BTD, global_kv = self.global_layer(x_BTD, positions_BT, segment_ids_BT, dropout_key=keys[1],
                                         cache=caches[1])
    if cache is not None:
      cache = cache.join([local_kv, global_kv])
    return x_BTD, cache


class Gemma2HF(GemmaHF):
  architectures = ("Gemma2ForCausalLM",)
  model_type = "gemma2"
  layer_table = Table(PROJECTION_ROWS, (
      ("input_layernorm.weight", "pre_self_attention_norm.scale", "copy"),
      ("post_attention_layernorm.weight", "post_self_attention_norm.scale", "copy"),
      ("pre_feedforward_layernorm.weight", "pre_ffw_norm.scale", "copy"),
      ("post_feedforward_layernorm.weight", "post_ffw_norm.scale", "copy"),
  ))

  def our_layer(self, spec, i):  # HF layers 2i, 2i+1 are pair i
    return f"decoder.layers.{i // 2}.{SUBLAYERS[i % 2]}."

  def hf_layer(self, spec, our_path):
    m = re.fullmatch(r"decoder\.layers\.(\d+)\.(local_layer|global_layer)\.(.+)", our_path)
    return (2 * int(m.group(1)) + SUBLAYERS.index(m.group(2)), m.group(3)) if m else None

  def num_hf_layers(self, spec):
    return 2 * spec.num_decoder_layers

  def model_keys_from_hf(self, c):
    keys = super().model_keys_from_hf(c)
    n = c["num_hidden_layers"]
    types = c.get("layer_types") or ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(n)]
    if n % 2 or any(t != ("sliding_attention", "full_attention")[i % 2] for i, t in enumerate(types)):
      raise HFConfigError(f"layer_types={types}: gemma2 needs [sliding, full] pairs")
    keys.update(
        base_num_decoder_layers=n // 2,
        sliding_window_size=c.get("sliding_window") or 4096,
        attn_logits_soft_cap=c.get("attn_logit_softcapping"),
        final_logits_soft_cap=c.get("final_logit_softcapping"),
        use_post_attn_norm=True,
        use_post_ffw_norm=True,
        query_pre_attn_scalar=float(c.get("query_pre_attn_scalar", 256)),
    )
    return keys

  def hf_config_from(self, spec):
    c = super().hf_config_from(spec)
    c.update(
        sliding_window=spec.sliding_window_size,
        attn_logit_softcapping=spec.attn_logits_soft_cap,
        final_logit_softcapping=spec.final_logits_soft_cap,
        query_pre_attn_scalar=int(spec.query_pre_attn_scalar or spec.head_dim),  # HF: an int
        layer_types=["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(2 * spec.num_decoder_layers)],
    )
    return c


FAMILY = Family(names=("gemma2",), block=Gemma2DecoderLayer, hf=Gemma2HF(), scale_embedding=True, norm_scale_offset=1.0,
                kv_caches_per_layer=2, spec_fields=("use_post_attn_norm", "use_post_ffw_norm"))
