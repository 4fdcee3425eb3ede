"""Self-attention layer: q/k/v projections, RoPE, optional KV cache, kernel, out proj."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from maxtext_like.models import attention_kernels, context_attention, rope
from maxtext_like.models.kv_cache import LayerKV
from maxtext_like.models.linears import DenseGeneral, apply_together
from maxtext_like.models.norms import RMSNorm, rms_normalize
from maxtext_like.models.sharding import ACT_BSKH, ACT_BSKH_ATTEND, ACT_BTD, ACT_BTNH, constrain
from maxtext_like.models.layer_specs import AttentionSpec


class Attention(nnx.Module):
  """Kernels: query [D,N,H], key/value [D,K,H] (or one qkv_proj [D,3,N,H] with fused_qkv), out [N,H,D];
  optional biases [N,H]/[K,H] (attention_bias) and per-head RMSNorm scales query_norm/key_norm [H] (use_qk_norm)."""

  def __init__(self, spec: AttentionSpec, *, rngs: nnx.Rngs, out_bias: bool = False, qk_norm_offset: float = 0.0,
               nope: bool = False, rope_interleave: bool = False, qk_l2_norm: bool = False, chunk: int = 0,
               temperature_tuning: tuple[float, float] | None = None):
    """out_bias: a learned bias on the output projection too (gpt-oss, gpt3); `nope` also serves families with
    absolute position embeddings (gpt3); qk_norm_offset: the QK-norms compute
    x * (offset + w) (Gemma's 1). Llama 4: `nope` skips RoPE in this layer; `rope_interleave` rotates adjacent
    pairs (x[2i], x[2i+1]) instead of halves; `qk_l2_norm` divides each query and key head by its RMS
    (no learned scale, eps normalization_layer_epsilon) after RoPE; `chunk` > 0 is chunked attention (a query sees
    the keys of its own chunk of that many positions, `AttentionOptions.chunk`); `temperature_tuning` =
    (floor_scale, attn_scale) multiplies the queries at position p by
    1 + attn_scale * log(1 + floor((p + 1) / floor_scale))."""
    D, N, K, H = spec.emb_dim, spec.num_query_heads, spec.num_kv_heads, spec.head_dim
    self.spec = spec
    dense = dict(dtype=spec.dtype, weight_dtype=spec.weight_dtype, precision=spec.matmul_precision,
                 init_scale=spec.dense_init_scale, rngs=rngs)
    qkv = dict(dense, use_bias=spec.attention_bias)
    if spec.fused_qkv:  # one projection for q, k and v (needs K == N)
      if K != N:
        raise ValueError(f"fused_qkv needs num_kv_heads == num_query_heads, got {K} and {N}")
      self.qkv_proj = DenseGeneral((D,), (3, N, H), ("embed", None, "heads", "kv"), **qkv)
    else:
      self.query = DenseGeneral((D,), (N, H), ("embed", "heads", "kv"), **qkv)
      self.key = DenseGeneral((D,), (K, H), ("embed", "kv_heads", "kv"), **qkv)
      self.value = DenseGeneral((D,), (K, H), ("embed", "kv_heads", "kv"), **qkv)
    if spec.use_qk_norm:
      norm = dict(epsilon=spec.normalization_layer_epsilon, dtype=spec.dtype, weight_dtype=spec.weight_dtype,
                  rngs=rngs, scale_offset=qk_norm_offset)
      self.query_norm = RMSNorm(H, **norm)
      self.key_norm = RMSNorm(H, **norm)
    self.out = DenseGeneral((N, H), (D,), ("heads", "kv", "embed"), **dict(dense, use_bias=out_bias))
    if spec.attention_sink:  # gpt-oss: one learned sink logit per query head
      self.sinks = nnx.Param(jnp.zeros((N,), spec.weight_dtype), out_sharding=("heads",), eager_sharding=False)
    self.options = attention_kernels.AttentionOptions(
        window=spec.sliding_window_size,
        soft_cap=spec.attn_logits_soft_cap,
        float32_qk_product=spec.float32_qk_product,
        float32_logits=spec.float32_logits,
        precision=spec.matmul_precision,
        query_scale=None if spec.query_pre_attn_scalar is None else spec.query_pre_attn_scalar ** -0.5,
        chunk=chunk,
    )
    if nope:
      self.use_rope = False
    self.rope_interleave, self.qk_l2_norm, self.temperature_tuning = rope_interleave, qk_l2_norm, temperature_tuning

  use_rope = True  # False: a NoPE layer (constructor argument `nope`)

  def project(self, x_BTD: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """q_BTNH, k_BTKH, v_BTKH before RoPE (with per-head QK-norm); olmo overrides it (QK-norm over all heads)."""
    if self.spec.fused_qkv:
      qkv_BT3NH = checkpoint_name(self.qkv_proj(x_BTD), "qkv_proj")
      q_BTNH, k_BTKH, v_BTKH = qkv_BT3NH[:, :, 0], qkv_BT3NH[:, :, 1], qkv_BT3NH[:, :, 2]
    else:
      q_BTNH, k_BTKH, v_BTKH = apply_together((self.query, self.key, self.value), x_BTD)
      q_BTNH = checkpoint_name(q_BTNH, "query_proj")
      k_BTKH = checkpoint_name(k_BTKH, "key_proj")
      v_BTKH = checkpoint_name(v_BTKH, "value_proj")
    q_BTNH, k_BTKH, v_BTKH = constrain(q_BTNH, ACT_BTNH), constrain(k_BTKH, ACT_BSKH), constrain(v_BTKH, ACT_BSKH)
    if self.spec.use_qk_norm:
      q_BTNH, k_BTKH = self.query_norm(q_BTNH), self.key_norm(k_BTKH)
    return q_BTNH, k_BTKH, v_BTKH

  def __call__(self, x_BTD: jax.Array, positions_BT: jax.Array, segment_ids_BT: jax.Array,
               cache: LayerKV | None = None, *, inv_freq: jax.Array | None = None,
               window: jax.Array | int | None = None,
               query_scale: jax.Array | float | None = None) -> tuple[jax.Array, LayerKV | None]:
    """Returns (y_BTD, cache with this call's keys/values written, or None).

    inv_freq [H/2] and window (0 = global) override the spec's RoPE frequencies and sliding window for
    this call; either may be traced (gemma3 picks local or global per layer inside a scan). query_scale
    overrides the queries' factor (default head_dim ** -0.5; olmo3 folds YaRN's attention factor into it).
    """
    q_BTNH, k_BTKH, v_BTKH = self.project(x_BTD)
    if self.use_rope:
      inv_freq = rope.inv_freq_from_spec(self.spec.rope) if inv_freq is None else inv_freq
      q_BTNH, k_BTKH = rope.rotate_qk(q_BTNH, k_BTKH, positions_BT, inv_freq, interleave=self.rope_interleave)
    if self.qk_l2_norm:
      eps = self.spec.normalization_layer_epsilon
      q_BTNH, k_BTKH = rms_normalize(q_BTNH, eps), rms_normalize(k_BTKH, eps)
    if self.temperature_tuning is not None:
      q_BTNH = (q_BTNH * temperature_scale(positions_BT, *self.temperature_tuning)).astype(q_BTNH.dtype)

    opts = dataclasses.replace(self.options, **{k: v for k, v in (("window", window), ("query_scale", query_scale))
                                                if v is not None})
    sinks_N = self.sinks[...] if self.spec.attention_sink else None
    if cache is None:
      k_BSKH, v_BSKH = constrain(k_BTKH, ACT_BSKH_ATTEND), constrain(v_BTKH, ACT_BSKH_ATTEND)
      context_BTNH = context_attention.self_attention(q_BTNH, k_BSKH, v_BSKH, segment_ids_BT, self.spec, opts, sinks_N)
    else:
      cache = cache.write(k_BTKH, v_BTKH)
      q_idx_BT = cache.index_B[:, None] + jnp.arange(segment_ids_BT.shape[1], dtype=jnp.int32)
      stored_k, stored_v = cache.stored(k_BTKH.dtype, v_BTKH.dtype)
      context_BTNH = attention_kernels.attend(
          self.spec.attention, q_BTNH, stored_k, stored_v, q_idx_BT, segment_ids_BT, cache.key_segment_ids(), opts,
          block_size=self.spec.flash_block_size, sinks_N=sinks_N, new_kv=cache.pending(k_BTKH.dtype, v_BTKH.dtype))
    context_BTNH = constrain(checkpoint_name(context_BTNH, "context"), ACT_BTNH)
    y_BTD = checkpoint_name(self.out(context_BTNH), "out_proj")
    return constrain(y_BTD, ACT_BTD), cache


def temperature_scale(positions_BT: jax.Array, floor_scale: float, attn_scale: float) -> jax.Array:
  """[B, T, 1, 1] query factors of attention temperature tuning (Llama 4 NoPE layers, arXiv 2501.19399):
  1 + attn_scale * log(1 + floor((p + 1) / floor_scale)); 1 for positions below floor_scale - 1."""
  p = positions_BT.astype(jnp.float32)
  return (jnp.log1p(jnp.floor((p + 1.0) / floor_scale)) * attn_scale + 1.0)[:, :, None, None]
