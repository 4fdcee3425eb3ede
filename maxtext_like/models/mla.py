"""Multi-head latent attention (MLA, DeepSeek-V2/V3), `attention_type: mla`.

Extra shape letters: R kv_lora_rank (the kv latent), Q q_lora_rank, Hn qk_nope_head_dim, Hr qk_rope_head_dim,
Hv v_head_dim; a query/key head has Hn + Hr dims, a value head Hv.

  q_BTN(Hn+Hr) = wq_b(q_norm(wq_a(x)))           (or `query(x)` when q_lora_rank == 0)
  [c_BTR, kr_BTHr] = wkv_a(x);  c = kv_norm(c)    (the latent and one RoPE key shared by all heads)
  [k_nope, v]_BTN(Hn+Hv) = wkv_b(c)
  k = [k_nope, rope(kr) broadcast to N heads],  q = [q_nope, rope(q_rope)]
  softmax scale = (Hn + Hr) ** -0.5 * yarn_get_mscale(rope_factor, mscale) ** 2   (rope_type 'yarn')

RoPE acts on the last Hr dims only, with the spec's RoPE type (YaRN for DeepSeek), in DeepSeek's interleaved
pair layout when `rope_interleave` (for any rope_type; so HF weights are copied, not permuted).

KV caches (decode == full forward):
- `mla_naive_kvcache: true`: per-head keys [N, Hn+Hr] and values [N, Hv], as any attention.
- `mla_naive_kvcache: false`: the cache holds the normalised latent c [1, R] (as "k") and the rotated RoPE key
  [1, Hr] (as "v"): R + Hr numbers per token and layer instead of N (Hn + Hr + Hv). wkv_b is absorbed: q_nope . k_nope = (q_nope W_uk^T) . c, so each query head attends the shared [c, kr] as one kv head
  (MQA with K = 1) with queries [q_nope W_uk, q_rope], and the attended latent is mapped by W_uv to values.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from maxtext_like.models import attention_kernels, context_attention, rope
from maxtext_like.models.kv_cache import LayerKV
from maxtext_like.models.linears import DenseGeneral
from maxtext_like.models.norms import RMSNorm
from maxtext_like.models.sharding import ACT_BTD, ACT_BTNH, constrain
from maxtext_like.models.layer_specs import AttentionSpec


def softmax_scale(spec: AttentionSpec) -> float:
  scale = (spec.qk_nope_head_dim + spec.qk_rope_head_dim) ** -0.5
  if spec.rope.rope_type == "yarn":
    scale *= rope.yarn_get_mscale(spec.rope.rope_factor, spec.rope.mscale) ** 2
  return scale


def kv_cache_dims(spec: AttentionSpec) -> tuple[int, int, int]:
  """(cache heads, key width, value width) of one MLA layer's cache entry."""
  if spec.mla_naive_kvcache:
    return spec.num_query_heads, spec.qk_nope_head_dim + spec.qk_rope_head_dim, spec.v_head_dim
  return 1, spec.kv_lora_rank, spec.qk_rope_head_dim


class MLA(nnx.Module):
  """Kernels: query [D,N,Hn+Hr] or wq_a [D,Q] + q_norm [Q] + wq_b [Q,N,Hn+Hr]; wkv_a [D,R+Hr], kv_norm [R],
  wkv_b [R,N,Hn+Hv], out [N,Hv,D]. Logical names 'q_lora'/'kv_lora' for Q/R (not in the default rule
  table: replicated)."""

  def __init__(self, spec: AttentionSpec, *, rngs: nnx.Rngs):
    D, N = spec.emb_dim, spec.num_query_heads
    Hn, Hr, Hv, R, Q = (spec.qk_nope_head_dim, spec.qk_rope_head_dim, spec.v_head_dim, spec.kv_lora_rank,
                        spec.q_lora_rank)
    self.spec = spec
    dense = dict(dtype=spec.dtype, weight_dtype=spec.weight_dtype, precision=spec.matmul_precision,
                 init_scale=spec.dense_init_scale, rngs=rngs)
    norm = dict(epsilon=spec.normalization_layer_epsilon, dtype=spec.dtype, weight_dtype=spec.weight_dtype,
                rngs=rngs)
    if Q == 0:
      self.query = DenseGeneral((D,), (N, Hn + Hr), ("embed", "heads", "kv"), **dense)
    else:
      self.wq_a = DenseGeneral((D,), (Q,), ("embed", "q_lora"), **dense)
      self.q_norm = RMSNorm(Q, **norm)
      self.wq_b = DenseGeneral((Q,), (N, Hn + Hr), ("q_lora", "heads", "kv"), **dense)
    self.wkv_a = DenseGeneral((D,), (R + Hr,), ("embed", "kv_lora"), **dense)
    self.kv_norm = RMSNorm(R, **norm)
    self.wkv_b = DenseGeneral((R,), (N, Hn + Hv), ("kv_lora", "heads", "kv"), **dense)
    self.out = DenseGeneral((N, Hv), (D,), ("heads", "kv", "embed"), **dense)
    self.options = attention_kernels.AttentionOptions(
        window=spec.sliding_window_size, soft_cap=spec.attn_logits_soft_cap,
        float32_qk_product=spec.float32_qk_product, float32_logits=spec.float32_logits,
        precision=spec.matmul_precision, query_scale=softmax_scale(spec))

  def _attend(self, q, k, v, q_idx_BT, segment_ids_BT, kv_seg_BS, new_kv=None):
    return attention_kernels.attend(self.spec.attention, q, k, v, q_idx_BT, segment_ids_BT, kv_seg_BS,
                                    self.options, block_size=self.spec.flash_block_size, new_kv=new_kv)

  def __call__(self, x_BTD: jax.Array, positions_BT: jax.Array, segment_ids_BT: jax.Array,
               cache: LayerKV | None = None) -> tuple[jax.Array, LayerKV | None]:
    s = self.spec
    N, Hn, R = s.num_query_heads, s.qk_nope_head_dim, s.kv_lora_rank
    if s.q_lora_rank == 0:
      q_BTNQ = self.query(x_BTD)
    else:
      q_BTNQ = self.wq_b(self.q_norm(self.wq_a(x_BTD)))
    q_BTNQ = constrain(checkpoint_name(q_BTNQ, "query_proj"), ACT_BTNH)
    inv_freq = rope.inv_freq_from_spec(s.rope, s.qk_rope_head_dim)
    rope_kw = {"interleave": s.rope.rope_interleave, "scale": rope.rope_scale_from_spec(s.rope)}  # MLA: any rope_type
    q_nope_BTNh = q_BTNQ[..., :Hn]
    q_rope_BTNr = rope.apply_rope(q_BTNQ[..., Hn:], positions_BT, inv_freq, **rope_kw)

    kv_a_BTX = checkpoint_name(self.wkv_a(x_BTD), "key_proj")
    c_BTR = self.kv_norm(kv_a_BTX[..., :R])
    k_rope_BT1r = rope.apply_rope(kv_a_BTX[..., None, R:], positions_BT, inv_freq, **rope_kw)

    B, T = segment_ids_BT.shape
    if cache is not None and not s.mla_naive_kvcache:
      context_BTNV, cache = self._absorbed(q_nope_BTNh, q_rope_BTNr, c_BTR, k_rope_BT1r, segment_ids_BT, cache)
    else:
      kv_BTNX = checkpoint_name(self.wkv_b(c_BTR), "value_proj")
      k_nope_BTNh, v_BTNV = kv_BTNX[..., :Hn], kv_BTNX[..., Hn:]
      k_BTNQ = jnp.concatenate([k_nope_BTNh, jnp.broadcast_to(k_rope_BT1r, (*k_rope_BT1r.shape[:2], N,
                                                                             s.qk_rope_head_dim))], axis=-1)
      q_BTNQ = jnp.concatenate([q_nope_BTNh, q_rope_BTNr], axis=-1)
      if cache is None:
        context_BTNV = context_attention.self_attention(q_BTNQ, k_BTNQ, v_BTNV, segment_ids_BT, s, self.options)
      else:
        cache = cache.write(k_BTNQ, v_BTNV)
        q_idx_BT = cache.index_B[:, None] + jnp.arange(T, dtype=jnp.int32)
        context_BTNV = self._attend(q_BTNQ, cache.keys().astype(k_BTNQ.dtype), cache.values().astype(v_BTNV.dtype),
                                    q_idx_BT, segment_ids_BT, cache.key_segment_ids(),
                                    cache.pending(k_BTNQ.dtype, v_BTNV.dtype))
    context_BTNV = checkpoint_name(context_BTNV, "context")
    y_BTD = checkpoint_name(self.out(context_BTNV), "out_proj")
    return constrain(y_BTD, ACT_BTD), cache

  def _absorbed(self, q_nope_BTNh, q_rope_BTNr, c_BTR, k_rope_BT1r, segment_ids_BT, cache: LayerKV):
    """Latent-cache attention: writes (c, k_rope) and attends in the latent space with wkv_b absorbed."""
    s = self.spec
    Hn = s.qk_nope_head_dim
    cache = cache.write(c_BTR[:, :, None, :], k_rope_BT1r)
    w_RNX = self.wkv_b.kernel[...].astype(s.dtype)
    w_uk_RNh, w_uv_RNV = w_RNX[..., :Hn], w_RNX[..., Hn:]
    prec = jax.lax.Precision(s.matmul_precision)
    q_lat_BTNR = jnp.einsum("btnh,rnh->btnr", q_nope_BTNh.astype(s.dtype), w_uk_RNh, precision=prec)
    q_BTNX = jnp.concatenate([q_lat_BTNR, q_rope_BTNr.astype(q_lat_BTNR.dtype)], axis=-1)
    c_BS1R = cache.keys().astype(q_BTNX.dtype)
    k_BS1X = jnp.concatenate([c_BS1R, cache.values().astype(q_BTNX.dtype)], axis=-1)
    T = segment_ids_BT.shape[1]
    q_idx_BT = cache.index_B[:, None] + jnp.arange(T, dtype=jnp.int32)
    new = cache.pending(q_BTNX.dtype, q_BTNX.dtype)  # a read-only cache: this call's (latent, k_rope)
    if new is not None:
      new = (jnp.concatenate(new, axis=-1), new[0])
    ctx_BTNR = self._attend(q_BTNX, k_BS1X, c_BS1R, q_idx_BT, segment_ids_BT, cache.key_segment_ids(), new)
    return jnp.einsum("btnr,rnv->btnv", ctx_BTNR, w_uv_RNV, precision=prec), cache
