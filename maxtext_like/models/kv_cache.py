"""KV cache for autoregressive decoding: a jit-friendly pytree.

Layout: keys/values of all layers stacked on a leading L axis, one row per
sequence, `max_length` slots per row. Row b holds its tokens in slots
0 .. index_B[b]-1; a call writes its T new tokens at slots index_B[b] ..
index_B[b]+T-1 and advances index_B[b] by the number of non-padding tokens
(segment id != 0). Prompts must therefore be right-padded: trailing padding
slots are overwritten by the next tokens, and slot index == position.
Slots never written have segment id 0, so real tokens never attend them.
Callers keep index_B + T <= max_length (writes past the end are clamped).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
  k_LBSKH: jax.Array  # rotated keys
  v_LBSKH: jax.Array
  segment_ids_BS: jax.Array  # int32, 0 = empty slot / padding
  index_B: jax.Array  # int32, next slot to write per row

  @classmethod
  def zeros(cls, num_layers: int, batch_size: int, max_length: int, num_kv_heads: int, head_dim: int,
            dtype, v_head_dim: int | None = None) -> "KVCache":
    """v_head_dim (default head_dim): values may be narrower or wider than keys (MLA)."""
    shape = (num_layers, batch_size, max_length, num_kv_heads, head_dim)
    return cls(
        k_LBSKH=jnp.zeros(shape, dtype),
        v_LBSKH=jnp.zeros(shape[:-1] + (head_dim if v_head_dim is None else v_head_dim,), dtype),
        segment_ids_BS=jnp.zeros((batch_size, max_length), jnp.int32),
        index_B=jnp.zeros((batch_size,), jnp.int32),
    )

  @property
  def max_length(self) -> int:
    return self.k_LBSKH.shape[2]

  def query_indices(self, num_tokens: int) -> jax.Array:
    """Slot indices [B, T] the next `num_tokens` tokens will occupy."""
    return self.index_B[:, None] + jnp.arange(num_tokens, dtype=jnp.int32)[None, :]


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class LayerKV:
  """One layer's view of the cache during a call.

  `segment_ids_BS` already includes the tokens of the current call;
  `index_B` is where they are written (the value before the call).
  """

  k_BSKH: jax.Array
  v_BSKH: jax.Array
  index_B: jax.Array
  segment_ids_BS: jax.Array

  def write(self, k_BTKH: jax.Array, v_BTKH: jax.Array) -> "LayerKV":
    """Stores the new tokens' keys and values at index_B in each row."""
    return dataclasses.replace(
        self,
        k_BSKH=write_rows(self.k_BSKH, k_BTKH.astype(self.k_BSKH.dtype), self.index_B),
        v_BSKH=write_rows(self.v_BSKH, v_BTKH.astype(self.v_BSKH.dtype), self.index_B),
    )


def write_rows(cache_BS: jax.Array, new_BT: jax.Array, index_B: jax.Array) -> jax.Array:
  """cache[b, index[b] : index[b] + T] = new[b] for every row b."""
  return jax.vmap(lambda c, n, i: jax.lax.dynamic_update_slice_in_dim(c, n, i, axis=0))(cache_BS, new_BT, index_B)


def advance(cache: KVCache, segment_ids_BT: jax.Array, k_LBSKH: jax.Array, v_LBSKH: jax.Array) -> KVCache:
  """The cache after a call wrote T tokens with these segment ids."""
  return KVCache(
      k_LBSKH=k_LBSKH,
      v_LBSKH=v_LBSKH,
      segment_ids_BS=write_rows(cache.segment_ids_BS, segment_ids_BT.astype(jnp.int32), cache.index_B),
      index_B=cache.index_B + jnp.sum(segment_ids_BT != 0, axis=1, dtype=jnp.int32),
  )
