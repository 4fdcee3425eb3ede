"""OLMo 2 / OLMo 3 decoder block (decoder_block 'olmo3', MaxText's presets olmo3-{7b,7b-pt,32b}) and its
Hugging Face mappings onto `Olmo3ForCausalLM` and `Olmo2ForCausalLM`.

The block (transformers' Olmo2/Olmo3DecoderLayer): norms on the sublayer OUTPUTS, none on the inputs:
  x + post_self_attention_norm(attn(x)), then + post_ffw_norm(mlp(.));   RMSNorm (weights w, init 1)
- QK-norm over the whole projected query / key (`use_qk_norm`): one RMSNorm over N*H and one over K*H
  (scales query_norm [N*H], key_norm [K*H]), not per head as qwen3/gemma3; then RoPE (rotate-half layout).
- SwiGLU MLP, no biases, untied output logits (`logits_dense`).
- OLMo 3 attention pattern: layer i uses full attention iff (i + 1) % 4 == 0, else the sliding window
  `sliding_window_size` (HF layer_types; MaxText `inhomogeneous_layer_cycle_interval: 4`, which this family
  fixes at 4). The block takes its layer index (static in the loop layout, traced under scan) like gemma3.
  With `sliding_window_size: 0` every layer is global: that is OLMo 2 (same parameters), which converts to and
  from `Olmo2ForCausalLM`.
- RoPE (rotate-half): sliding layers plain RoPE with base rope_max_timescale; full layers the spec's RoPE,
  i.e. YaRN for `rope_type: yarn` (olmo3-7b / 32b), as HF applies `rope_scaling` to full layers only. HF's
  YaRN attention factor m (cos/sin * m, `rope_attention_scaling`) is folded into the query scale as m ** 2.

HF names -> ours (W.T = transposed torch Linear weight):
  model.embed_tokens.weight                       token_embedder.embedding
  model.layers.i.self_attn.q_proj / k_proj / v_proj  decoder.layers.i.self_attention.query/key/value.kernel
                                                  = W.T -> [D, N, H] / [D, K, H]
  model.layers.i.self_attn.o_proj                 ....self_attention.out.kernel = W.T -> [N, H, D]
  model.layers.i.self_attn.q_norm / k_norm        ....self_attention.query_norm/key_norm.scale [N*H] / [K*H]
  model.layers.i.post_attention_layernorm         ....post_self_attention_norm.scale
  model.layers.i.mlp.gate/up/down_proj            ....mlp.wi_0 / wi_1 / wo .kernel = W.T
  model.layers.i.post_feedforward_layernorm       ....post_ffw_norm.scale
  model.norm.weight                               decoder.decoder_norm.scale
  lm_head.weight                                  decoder.logits_dense.kernel = W.T (tied: dropped)
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from maxtext_like.models import blocks, rope
from maxtext_like.models.attention import Attention
from maxtext_like.models.family import Family
from maxtext_like.models.hf_registry import HFConfigError, Table
from maxtext_like.models.kv_cache import LayerKV
from maxtext_like.models.families.llama import QK_NORM_ROWS, QKVO_ROWS, LlamaHF, mlp_rows
from maxtext_like.models.mlp import MlpBlock
from maxtext_like.models.norms import RMSNorm
from maxtext_like.models.layer_specs import AttentionSpec
from maxtext_like.models.spec import ModelSpec

ATTENTION_PATTERN = 4  # layers per sliding, sliding, sliding, full cycle


def is_global_layer(index):
  """Python bool for an int index, traced bool for a traced one."""
  return (index + 1) % ATTENTION_PATTERN == 0


def layer_types(num_layers: int, window: int) -> list[str]:
  return ["full_attention" if not window or is_global_layer(i) else "sliding_attention" for i in range(num_layers)]


def _base_query_scale(spec: ModelSpec) -> float:
  return (spec.query_pre_attn_scalar or spec.head_dim) ** -0.5


def full_rope(spec: ModelSpec) -> tuple[jax.Array, float]:
  """(inv_freq [H/2], query scale) of full-attention layers: the spec's RoPE; for YaRN with
  rope_attention_scaling, HF's cos/sin factor m on q and k is folded into the query scale as m ** 2."""
  if spec.rope_type != "yarn":
    return rope.inv_freq_from_spec(spec), _base_query_scale(spec)
  inv_freq = rope.yarn_inv_freq(spec.head_dim, spec.rope_max_timescale, spec.rope_factor,
                                spec.original_max_position_embeddings, spec.beta_fast, spec.beta_slow,
                                spec.rope_truncate)
  m = rope.yarn_get_mscale(spec.rope_factor) if spec.rope_attention_scaling else 1.0
  return inv_freq, _base_query_scale(spec) * m * m


def sliding_rope(spec: ModelSpec) -> tuple[jax.Array, float]:
  """Sliding-window layers: plain RoPE with base rope_max_timescale (HF scales only full layers)."""
  return rope.default_inv_freq(spec.head_dim, spec.rope_min_timescale, spec.rope_max_timescale), \
      _base_query_scale(spec)


class OlmoAttention(Attention):
  """`Attention` whose QK-norm normalises all heads of q (and of k) together."""

  def __init__(self, spec: AttentionSpec, *, rngs: nnx.Rngs):
    super().__init__(spec.replace(use_qk_norm=False), rngs=rngs)
    self.full_qk_norm = spec.use_qk_norm
    if spec.use_qk_norm:
      N, K, H = spec.num_query_heads, spec.num_kv_heads, spec.head_dim
      norm = dict(epsilon=spec.normalization_layer_epsilon, dtype=spec.dtype, weight_dtype=spec.weight_dtype,
                  rngs=rngs)
      self.query_norm = RMSNorm(N * H, **norm)
      self.key_norm = RMSNorm(K * H, **norm)

  def project(self, x_BTD: jax.Array):
    q_BTNH, k_BTKH, v_BTKH = super().project(x_BTD)
    if self.full_qk_norm:
      q_BTNH = self.query_norm(q_BTNH.reshape(*q_BTNH.shape[:2], -1)).reshape(q_BTNH.shape)
      k_BTKH = self.key_norm(k_BTKH.reshape(*k_BTKH.shape[:2], -1)).reshape(k_BTKH.shape)
    return q_BTNH, k_BTKH, v_BTKH


class OlmoDecoderLayer(nnx.Module):
  """x + norm(attn(x)), then + norm(mlp(.)); sliding window unless (layer_index + 1) % 4 == 0."""

  def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs):
    if spec.rope_type == "yarn" and spec.rope_interleave:
      raise ValueError("decoder_block 'olmo3' rotates halves (HF OLMo): set rope_interleave=false")
    norm = dict(epsilon=spec.normalization_layer_epsilon, dtype=spec.dtype, weight_dtype=spec.weight_dtype,
                rngs=rngs)
    self.spec, self.window = spec, spec.sliding_window_size
    self.self_attention = OlmoAttention(spec.attention_spec, rngs=rngs)
    self.post_self_attention_norm = RMSNorm(spec.emb_dim, **norm)
    self.mlp = MlpBlock(spec.mlp_spec, rngs=rngs)
    self.post_ffw_norm = RMSNorm(spec.emb_dim, **norm)
    self.dropout = nnx.Dropout(spec.dropout_rate)

  def __call__(self, x_BTD: jax.Array, positions_BT: jax.Array, segment_ids_BT: jax.Array, *,
               layer_index: jax.Array | int, dropout_key: jax.Array | None = None,
               cache: LayerKV | None = None) -> tuple[jax.Array, LayerKV | None]:
    x_BTD = blocks.layer_input(x_BTD)
    spec = self.spec
    is_global = is_global_layer(layer_index) if self.window else True
    if isinstance(is_global, bool):
      window = 0 if is_global else self.window
      inv_freq, query_scale = full_rope(spec) if is_global else sliding_rope(spec)
    else:
      window = jnp.where(is_global, 0, self.window)
      (full_f, full_s), (slide_f, slide_s) = full_rope(spec), sliding_rope(spec)
      inv_freq, query_scale = jnp.where(is_global, full_f, slide_f), jnp.where(is_global, full_s, slide_s)
    attn_BTD, cache = self.self_attention(x_BTD, positions_BT, segment_ids_BT, cache=cache, window=window,
                                          inv_freq=inv_freq, query_scale=query_scale)
    x_BTD = x_BTD + self.post_self_attention_norm(attn_BTD)
    mlp_key, out_key = blocks.branch_keys(dropout_key)
    mlp_BTD = self.post_ffw_norm(self.mlp(x_BTD, dropout_key=mlp_key))
    mlp_BTD = blocks.drop(self.dropout, mlp_BTD, out_key)
    return blocks.layer_output(x_BTD + mlp_BTD), cache


# ---- Hugging Face mapping ----------------------------------------------------------------------------------

class OlmoHF(LlamaHF):
  """Olmo3ForCausalLM (sliding window on 3 of 4 layers) and Olmo2ForCausalLM (no window)."""

  architectures = ("Olmo3ForCausalLM", "Olmo2ForCausalLM")
  layer_table = Table(QKVO_ROWS, QK_NORM_ROWS, mlp_rows(), (  # norms on the sublayer outputs only
      ("post_attention_layernorm.weight", "post_self_attention_norm.scale", "copy"),
      ("post_feedforward_layernorm.weight", "post_ffw_norm.scale", "copy"),
  ))

  def decoder_block_for(self, hf: dict) -> str:
    return "olmo3"

  def model_keys_from_hf(self, hf: dict) -> dict:
    hf = dict(hf)
    rp = dict(hf.get("rope_parameters") or {})
    sliding = None
    if isinstance(rp.get("full_attention"), dict):  # OLMo 3 in transformers 5: per layer type
      full, sliding = dict(rp["full_attention"]), dict(rp.get("sliding_attention") or rp["full_attention"])
    else:
      full = rp or {**(hf.get("rope_scaling") or {}), "rope_theta": hf.get("rope_theta", 10000.0)}
    theta = float(full.get("rope_theta", hf.get("rope_theta", 500000.0)))
    kind = full.get("rope_type", full.get("type", "default"))
    problems = []
    if sliding is not None and (sliding.get("rope_type", "default") != "default"
                                or float(sliding.get("rope_theta", theta)) != theta):
      problems.append(f"sliding-layer rope_parameters {sliding}: only plain RoPE with the full layers' theta")
    if kind not in ("default", "yarn"):
      problems.append(f"rope_type {kind!r} is not supported for olmo (default, yarn)")
    if problems:
      raise HFConfigError("Hugging Face config not supported: " + "; ".join(problems))
    hf.pop("rope_scaling", None)
    hf["rope_theta"] = theta
    hf["rope_parameters"] = {"rope_type": "default", "rope_theta": theta}
    keys = super().model_keys_from_hf(hf)
    if kind == "yarn":
      factor = float(full["factor"])
      m = rope.yarn_get_mscale(factor)
      attention_factor = full.get("attention_factor")
      if full.get("mscale") or full.get("mscale_all_dim") or (
          attention_factor is not None and not np.isclose(attention_factor, m) and attention_factor != 1.0):
        raise HFConfigError(f"yarn attention_factor {attention_factor} / mscale: only 1 or 0.1 ln(factor) + 1")
      keys.update(rope_type="yarn", rope_factor=factor,
                  original_max_position_embeddings=int(full["original_max_position_embeddings"]),
                  beta_fast=float(full.get("beta_fast", 32.0)), beta_slow=float(full.get("beta_slow", 1.0)),
                  rope_truncate=bool(full.get("truncate", True)), rope_interleave=False,
                  rope_attention_scaling=attention_factor is None or bool(np.isclose(attention_factor, m)),
                  max_position_embeddings=int(hf.get("max_position_embeddings") or 0) or
                  int(factor * full["original_max_position_embeddings"]))
    return keys

  def family_keys(self, hf: dict, keys: dict) -> list[str]:
    keys["use_qk_norm"] = True
    problems = []
    n = hf["num_hidden_layers"]
    olmo3 = hf.get("model_type") == "olmo3" or "Olmo3ForCausalLM" in (hf.get("architectures") or [])
    window = int(hf.get("sliding_window") or 0) if olmo3 else 0
    types = hf.get("layer_types") or layer_types(n, window)
    if olmo3 and types != layer_types(n, window):
      if all(t == "full_attention" for t in types):
        window = 0
      else:
        problems.append(f"layer_types={types}: olmo3 needs 3 sliding : 1 full (or all full)")
    keys["sliding_window_size"] = window
    if keys["rope_type"] != "default":  # LlamaHF maps llama3 scaling; OLMo uses none or yarn
      problems.append(f"rope_type {keys['rope_type']!r} is not supported for olmo")
    return problems

  def hf_config_from(self, spec: ModelSpec) -> dict:
    if not spec.use_qk_norm:
      raise HFConfigError("OLMo 2/3 always normalise q and k: set use_qk_norm=true")
    if spec.rope_type not in ("default", "yarn"):
      raise HFConfigError(f"rope_type={spec.rope_type!r}: OLMo configs have default or yarn RoPE")
    common = self._common_config(spec.replace(rope_type="default"))
    for k in ("rope_scaling", "rope_theta", "rope_parameters"):
      common.pop(k)
    plain = {"rope_type": "default", "rope_theta": float(spec.rope_max_timescale)}
    full = plain
    if spec.rope_type == "yarn":
      full = {"rope_type": "yarn", "rope_theta": float(spec.rope_max_timescale), "factor": spec.rope_factor,
              "original_max_position_embeddings": spec.original_max_position_embeddings,
              "beta_fast": spec.beta_fast, "beta_slow": spec.beta_slow, "truncate": spec.rope_truncate,
              "attention_factor": rope.yarn_get_mscale(spec.rope_factor) if spec.rope_attention_scaling else 1.0}
      common["max_position_embeddings"] = spec.max_position_embeddings
    if not spec.sliding_window_size:
      return {"architectures": ["Olmo2ForCausalLM"], "model_type": "olmo2", **common, "attention_bias": False,
              "rope_parameters": full, "pad_token_id": None, "eos_token_id": None}
    return {"architectures": ["Olmo3ForCausalLM"], "model_type": "olmo3", **common, "attention_bias": False,
            "sliding_window": spec.sliding_window_size,
            "layer_types": layer_types(spec.num_decoder_layers, spec.sliding_window_size),
            "rope_parameters": {"full_attention": full, "sliding_attention": dict(plain)},
            "pad_token_id": None, "eos_token_id": None}


FAMILY = Family(names=("olmo3",), block=OlmoDecoderLayer, hf=OlmoHF(), layer_index_at_call=True)
