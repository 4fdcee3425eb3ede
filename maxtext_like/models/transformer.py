"""`Transformer` (token embedder + decoder), `build_model`, `count_params`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from maxtext_like.models import kv_cache as kv_cache_lib
from maxtext_like.models.decoder import Decoder
from maxtext_like.models.embeddings import Embed
from maxtext_like.models.kv_cache import KVCache
from maxtext_like.models.family import family_of
from maxtext_like.models.spec import ModelSpec


class Transformer(nnx.Module):
  """Decoder-only LM. Parameters: token_embedder.embedding, decoder.*.

  Dropout (spec.enable_dropout and dropout_rate > 0, deterministic=False)
  draws keys from the model's own 'dropout' RNG stream, forked from `rngs`
  at construction; otherwise the model state holds parameters only.
  """

  def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs):
    self.spec = spec
    self.scale_embedding = family_of(spec).scale_embedding  # Gemma: x * sqrt(D)
    self.token_embedder = Embed(spec.vocab_size, spec.emb_dim, dtype=spec.dtype, weight_dtype=spec.weight_dtype,
                                precision=spec.matmul_precision, rngs=rngs, use_iota=spec.use_iota_embed)
    if spec.trainable_position_size > 0:  # learned absolute positions (gpt3); MaxText: decoder.position_embedder
      self.position_embedder = Embed(spec.trainable_position_size, spec.emb_dim, dtype=spec.dtype,
                                     weight_dtype=spec.weight_dtype, precision=spec.matmul_precision, rngs=rngs)
    self.decoder = Decoder(spec, rngs=rngs)
    self.dropout = nnx.Dropout(spec.dropout_rate)
    self.uses_dropout = spec.enable_dropout and spec.dropout_rate > 0
    self.dropout_rngs = rngs["dropout"].fork() if self.uses_dropout else None

  def __call__(self, tokens_BT: jax.Array, positions_BT: jax.Array | None = None,
               segment_ids_BT: jax.Array | None = None, *, deterministic: bool = True,
               cache: KVCache | None = None, return_aux: bool = False, logits_at: jax.Array | None = None):
    """logits_BTV, or (logits_BTV, new_cache) when `cache` is given; with `return_aux` one more element, the
    decoder's auxiliary outputs (MoE load-balance loss and routed-bias updates, see decoder.py).

    `logits_at` (int32 [B]): only the logits of that position of each row, [B, 1, V] (a prefill needs its last
    prompt token's; the output projection of a long prompt's other positions costs more than its layers).

    positions default to 0..T-1 (with a cache: the row's next slots);
    segment ids default to 1 (one unpadded sequence per row). Tokens attend
    only to earlier tokens of their own segment; 0 marks padding.
    """
    B, T = tokens_BT.shape
    if segment_ids_BT is None:
      segment_ids_BT = jnp.ones((B, T), jnp.int32)
    if positions_BT is None:
      positions_BT = (jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T)) if cache is None
                      else cache.query_indices(T))
    dropout_key = None
    if self.uses_dropout and not deterministic:
      dropout_key = self.dropout_rngs()
    embed_key, decoder_key = (None, None) if dropout_key is None else tuple(jax.random.split(dropout_key))

    x_BTD = self.token_embedder(tokens_BT)
    if self.scale_embedding:  # in the activation dtype
      x_BTD = x_BTD * jnp.asarray(self.spec.emb_dim ** 0.5, x_BTD.dtype)
    if self.spec.trainable_position_size > 0:
      x_BTD = x_BTD + self.position_embedder(positions_BT)
    x_BTD = self.dropout(x_BTD, deterministic=embed_key is None, rngs=embed_key)
    layer_cache = None
    if cache is not None:
      new_segment_ids_BS = kv_cache_lib.write_rows(cache.segment_ids_BS, segment_ids_BT.astype(jnp.int32),
                                                   cache.index_B)
      layer_cache = (cache.arrays(), cache.index_B, new_segment_ids_BS, cache.page_table_BM)
    logits_BTV, kv, aux = self.decoder(x_BTD, positions_BT, segment_ids_BT, embedder=self.token_embedder,
                                       dropout_key=decoder_key, cache=layer_cache, logits_at=logits_at)
    out = (logits_BTV,) if cache is None else (logits_BTV, kv_cache_lib.advance(cache, segment_ids_BT, kv))
    out += (aux,) if return_aux else ()
    return out[0] if len(out) == 1 else out

  def init_cache(self, batch_size: int, max_length: int | None = None, dtype=None) -> KVCache:
    """Empty cache; max_length defaults to spec.max_target_length, dtype to spec.dtype (with spec.kv_quant: the
    scales' dtype, values stored quantized; models/kv_cache.py).

    A block holding P attention layers (`kv_caches_per_layer = P`, gemma2's [local, global] pair) gets
    P * head_dim per cache entry and splits it (see gemma2.py).
    """
    s, family = self.spec, family_of(self.spec)
    per_layer = family.kv_caches_per_layer
    K, Hk, Hv = s.num_kv_heads, s.head_dim * per_layer, s.head_dim * per_layer
    if family.kv_cache_dims is not None:  # a family whose caches are not [K, H] (MLA: models/mla.py)
      K, Hk, Hv = family.kv_cache_dims(s)
    return KVCache.zeros(s.num_decoder_layers, batch_size, max_length or s.max_target_length, K, Hk,
                         dtype or s.dtype, v_head_dim=Hv, quant=s.kv_quant, groups=per_layer)

  def prefill(self, tokens_BT: jax.Array, segment_ids_BT: jax.Array | None = None, *,
              max_length: int | None = None, cache: KVCache | None = None) -> tuple[jax.Array, KVCache]:
    """Runs right-padded prompts into a fresh (or given) cache: (logits_BTV, cache)."""
    if cache is None:
      cache = self.init_cache(tokens_BT.shape[0], max_length)
    return self(tokens_BT, None, segment_ids_BT, cache=cache)

  def decode_step(self, tokens_BT: jax.Array, cache: KVCache) -> tuple[jax.Array, KVCache]:
    """Appends T >= 1 tokens per row at the row's next position: (logits_BTV, cache)."""
    return self(tokens_BT, cache=cache)


def build_model(spec: ModelSpec, rngs: nnx.Rngs) -> Transformer:
  """The model for spec.decoder_block (ModelSpecError naming the built blocks)."""
  family_of(spec)
  return Transformer(spec, rngs=rngs)


def count_params(spec: ModelSpec) -> int:
  """Number of parameters, from shapes only (nnx.eval_shape, no memory)."""
  abstract = nnx.eval_shape(lambda: build_model(spec, nnx.Rngs(0)))
  leaves = jax.tree.leaves(nnx.state(abstract, nnx.Param))
  return sum(int(x.size) for x in leaves)
