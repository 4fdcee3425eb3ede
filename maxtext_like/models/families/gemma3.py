"""Gemma 3 (text) decoder block: 5 local (sliding window) layers then 1 global layer, repeating.

`num_decoder_layers` is the real layer count (gemma3-4b: 34), as in MaxText. Layer i is global iff
(i + 1) % 6 == 0 (HF's layer_types). All layers have the same parameters, so the block is one layer
type and is told its index (`takes_layer_index`): static in the loop layout, traced under scan, where the
RoPE frequencies and the window are picked with jnp.where (the mask and RoPE cost the same either way).
(MaxText scans blocks of 6 layers plus a remainder; our scan unit is one layer, so parameters stack as
[L, ...] like every other family.)

Quirks on top of gemma2's sublayer (see gemma.py and gemma2.py):
- QK-norm: per-head RMSNorm over H on queries and keys before RoPE, with Gemma's (1 + w) scale;
- RoPE base local_rope_max_timescale (10k) without scaling on local layers, and
  global_rope_max_timescale if > 0, else rope_max_timescale (1M), divided by rope_linear_scaling_factor
  (8 in the 4b/12b/27b presets, HF rope_scaling {linear, factor 8}) on global layers;
- no soft caps; queries scaled by query_pre_attn_scalar ** -0.5 (27b: 168).
Presets keep MaxText's vocab_size 262144 (the tokenizer); HF's multimodal 4b/12b/27b checkpoints carry
262208 embedding rows (64 extra image-token rows); their text model's config says so, and a converted
checkpoint keeps HF's vocab.

HF (Gemma3ForCausalLM, model_type gemma3_text) names as gemma2 plus
  model.layers.i.self_attn.q_norm.weight / k_norm.weight -> decoder.layers.i.self_attention.query_norm.scale /
  key_norm.scale (stored as HF's w, like every Gemma norm).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from maxtext_like.models import rope
from maxtext_like.models.families.gemma import GemmaHF, GemmaSublayer
from maxtext_like.models.families.gemma2 import Gemma2HF
from maxtext_like.models.family import Family
from maxtext_like.models.families.llama import QK_NORM_ROWS
from maxtext_like.models.hf_registry import HFConfigError, Table, TableMapping
from maxtext_like.models.kv_cache import LayerKV
from maxtext_like.models.spec import ModelSpec

ATTENTION_PATTERN = 6  # layers per local...local, global cycle


def is_global_layer(index):
  """Python bool for an int index, traced bool for a traced one."""
  return (index + 1) % ATTENTION_PATTERN == 0


def local_inv_freq(spec: ModelSpec) -> jax.Array:
  base = spec.local_rope_max_timescale if spec.local_rope_max_timescale > 0 else spec.rope_max_timescale
  return rope.default_inv_freq(spec.head_dim, spec.rope_min_timescale, base)


def global_inv_freq(spec: ModelSpec) -> jax.Array:
  base = spec.global_rope_max_timescale if spec.global_rope_max_timescale > 0 else spec.rope_max_timescale
  return rope.inv_freq_from_spec(spec.replace(rope_max_timescale=base))


class Gemma3DecoderLayer(GemmaSublayer):
  """GemmaSublayer with QK-norm whose attention type (local or global) follows its layer index."""

  def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs):
    super().__init__(spec.replace(use_qk_norm=True), rngs=rngs)
    self.spec, self.window = spec, spec.sliding_window_size

  def __call__(self, x_BTD: jax.Array, positions_BT: jax.Array, segment_ids_BT: jax.Array, *,
               layer_index: jax.Array | int, dropout_key: jax.Array | None = None,
               cache: LayerKV | None = None) -> tuple[jax.Array, LayerKV | None]:
    spec = self.spec
    is_global = is_global_layer(layer_index)
    if isinstance(is_global, bool):
      inv_freq = global_inv_freq(spec) if is_global else local_inv_freq(spec)
      window = 0 if is_global else self.window
    else:
      inv_freq = jnp.where(is_global, global_inv_freq(spec), local_inv_freq(spec))
      window = jnp.where(is_global, 0, self.window)
    return super().__call__(x_BTD, positions_BT, segment_ids_BT, dropout_key=dropout_key, cache=cache,
                            inv_freq=inv_freq, window=window)


class Gemma3HF(Gemma2HF):
  architectures = ("Gemma3ForCausalLM",)
  model_type = "gemma3_text"
  layer_table = Table(Gemma2HF.layer_table.rows, QK_NORM_ROWS)

  # one HF layer per layer, as gemma (1)
  our_layer = TableMapping.our_layer
  hf_layer = TableMapping.hf_layer
  num_hf_layers = GemmaHF.num_hf_layers

  def model_keys_from_hf(self, c):
    keys = GemmaHF.model_keys_from_hf(self, c)
    n = c["num_hidden_layers"]
    types = c.get("layer_types") or ["full_attention" if is_global_layer(i) else "sliding_attention"
                                     for i in range(n)]
    if types != ["full_attention" if is_global_layer(i) else "sliding_attention" for i in range(n)]:
      raise HFConfigError(f"layer_types={types}: gemma3 needs the 5 sliding : 1 full pattern")
    if c.get("attn_logit_softcapping") or c.get("final_logit_softcapping"):
      raise HFConfigError("soft caps are not supported for gemma3")
    rp = c.get("rope_parameters") or {}
    full = dict(rp.get("full_attention") or {})
    local = dict(rp.get("sliding_attention") or {})
    if not rp:  # legacy fields
      full = {"rope_theta": c.get("rope_theta", 1_000_000.0), **(c.get("rope_scaling") or {"rope_type": "default"})}
      local = {"rope_type": "default", "rope_theta": c.get("rope_local_base_freq", 10_000.0)}
    full_type = full.get("rope_type", full.get("type", "default"))
    if full_type not in ("default", "linear") or local.get("rope_type", "default") != "default":
      raise HFConfigError(f"rope_parameters={rp}: gemma3 supports linear/default (global), default (local)")
    keys.update(
        sliding_window_size=c.get("sliding_window") or 4096,
        use_post_attn_norm=True,
        use_post_ffw_norm=True,
        query_pre_attn_scalar=float(c.get("query_pre_attn_scalar", 256)),
        rope_max_timescale=int(full.get("rope_theta", 1_000_000.0)),
        local_rope_max_timescale=int(local.get("rope_theta", 10_000.0)),
        rope_linear_scaling_factor=float(full.get("factor", 1.0)) if full_type == "linear" else 1.0,
    )
    return keys

  def hf_config_from(self, spec):
    c = GemmaHF.hf_config_from(self, spec)
    base = spec.global_rope_max_timescale if spec.global_rope_max_timescale > 0 else spec.rope_max_timescale
    full = {"rope_type": "default", "rope_theta": float(base)}
    if spec.rope_linear_scaling_factor != 1.0:
      full = {"rope_type": "linear", "factor": spec.rope_linear_scaling_factor, "rope_theta": float(base)}
    local = spec.local_rope_max_timescale if spec.local_rope_max_timescale > 0 else spec.rope_max_timescale
    c.update(
        sliding_window=spec.sliding_window_size,
        query_pre_attn_scalar=int(spec.query_pre_attn_scalar or spec.head_dim),  # HF: an int
        layer_types=["full_attention" if is_global_layer(i) else "sliding_attention"
                     for i in range(spec.num_decoder_layers)],
        rope_parameters={"full_attention": full, "sliding_attention": {"rope_type": "default",
                                                                       "rope_theta": float(local)}},
        final_logit_softcapping=None,
        attn_logit_softcapping=None,
    )
    return c


FAMILY = Family(names=("gemma3",), block=Gemma3DecoderLayer, hf=Gemma3HF(), scale_embedding=True, norm_scale_offset=1.0,
                layer_index_at_call=True, spec_fields=("use_post_attn_norm", "use_post_ffw_norm", "local_rope_max_timescale",
                                                       "global_rope_max_timescale"))
