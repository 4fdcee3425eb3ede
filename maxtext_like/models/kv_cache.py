"""KV cache for autoregressive decoding: a jit-friendly pytree.

Layout: keys/values of all layers stacked on a leading L axis, one row per
sequence, `max_length` slots per row. Row b holds its tokens in slots
0 .. index_B[b]-1; a call writes its T new tokens at slots index_B[b] ..
index_B[b]+T-1 and advances index_B[b] by the number of non-padding tokens
(segment id != 0). Prompts must therefore be right-padded: trailing padding
slots are overwritten by the next tokens, and slot index == position.
Slots never written have segment id 0, so real tokens never attend them.
Callers keep index_B + T <= max_length (writes past the end are clamped; in the layer loop's in-place path,
`LayerKV.layer`, they are dropped).

Paged layout (`page_table_BM` set; built by inference/paging.py): k/v hold a pool of pages [L, P, page, K, H]
shared by all rows, and row b's slot s lives in page page_table_BM[b, s // page] at offset s % page. Slot indices,
segment ids and positions are the same as in the contiguous layout ([B, M * page]); layers read a row's keys
through `LayerKV.keys()`, which gathers its pages. Page 0 is scratch: unassigned table entries point there, so
writes past a row's pages never touch another row's data.
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
  page_table_BM: jax.Array | None = None  # paged layout: int32 page ids per row (see the module docstring)

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
    return self.segment_ids_BS.shape[1]

  def query_indices(self, num_tokens: int) -> jax.Array:
    """Slot indices [B, T] the next `num_tokens` tokens will occupy."""
    return self.index_B[:, None] + jnp.arange(num_tokens, dtype=jnp.int32)[None, :]


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class LayerKV:
  """One layer's view of the cache during a call.

  `segment_ids_BS` already includes the tokens of the current call;
  `index_B` is where they are written (the value before the call).

  With `layer` set, k/v are the whole cache of every layer ([L, B, S, K, H], or [L, P, page, K, H] paged) and this
  view reads and writes layer `layer` of it in place: the layer loop then passes one buffer along instead of
  slicing a copy of each layer's cache and stacking them again on every decode step.
  """

  k_BSKH: jax.Array  # paged: the page pool [P, page, K, H]; with `layer`: all layers' arrays
  v_BSKH: jax.Array
  index_B: jax.Array
  segment_ids_BS: jax.Array
  page_table_BM: jax.Array | None = None
  layer: int | None = dataclasses.field(default=None, metadata=dict(static=True))

  def _mine(self, a: jax.Array) -> jax.Array:
    return a if self.layer is None else a[self.layer]

  def keys(self) -> jax.Array:
    """Keys [B, S, K, H] by slot (paged: the row's pages gathered)."""
    k = self._mine(self.k_BSKH)
    return k if self.page_table_BM is None else gather_pages(k, self.page_table_BM)

  def values(self) -> jax.Array:
    v = self._mine(self.v_BSKH)
    return v if self.page_table_BM is None else gather_pages(v, self.page_table_BM)

  def write(self, k_BTKH: jax.Array, v_BTKH: jax.Array) -> "LayerKV":
    """Stores the new tokens' keys and values at index_B in each row."""
    return dataclasses.replace(self, k_BSKH=self._write(self.k_BSKH, k_BTKH), v_BSKH=self._write(self.v_BSKH, v_BTKH))

  def _write(self, cache: jax.Array, new_BTKH: jax.Array) -> jax.Array:
    new_BTKH = new_BTKH.astype(cache.dtype)
    if self.page_table_BM is not None:
      return write_pages(cache, new_BTKH, self.index_B, self.page_table_BM, self.layer)
    if self.layer is None:
      return write_rows(cache, new_BTKH, self.index_B)
    B, T = new_BTKH.shape[:2]  # in place into layer `layer`; slots past the row's end are dropped
    rows_BT = jnp.broadcast_to(jnp.arange(B, dtype=jnp.int32)[:, None], (B, T))
    slots_BT = self.index_B[:, None] + jnp.arange(T, dtype=jnp.int32)[None, :]
    return cache.at[self.layer, rows_BT, slots_BT].set(new_BTKH, mode="drop")


def write_rows(cache_BS: jax.Array, new_BT: jax.Array, index_B: jax.Array) -> jax.Array:
  """cache[b, index[b] : index[b] + T] = new[b] for every row b."""
  return jax.vmap(lambda c, n, i: jax.lax.dynamic_update_slice_in_dim(c, n, i, axis=0))(cache_BS, new_BT, index_B)


def gather_pages(pool_PpKH: jax.Array, page_table_BM: jax.Array) -> jax.Array:
  """[B, M * page, K, H]: each row's pages in order."""
  g = pool_PpKH[page_table_BM]  # [B, M, page, K, H]
  return g.reshape(g.shape[0], g.shape[1] * g.shape[2], *g.shape[3:])


def page_slots(index_B: jax.Array, T: int, page_table_BM: jax.Array, page: int) -> tuple[jax.Array, jax.Array]:
  """(page id, offset) [B, T] of the slots index_B .. index_B + T - 1; slots past the table go to scratch page 0."""
  s_BT = index_B[:, None] + jnp.arange(T, dtype=jnp.int32)[None, :]
  m_BT = s_BT // page
  M = page_table_BM.shape[1]
  ids = jnp.take_along_axis(page_table_BM, jnp.minimum(m_BT, M - 1), axis=1)
  return jnp.where(m_BT < M, ids, 0), s_BT % page


def write_pages(pool: jax.Array, new_BTKH: jax.Array, index_B: jax.Array, page_table_BM: jax.Array,
                layer: int | None = None) -> jax.Array:
  """pool[page of slot index_B[b] + t, its offset] = new[b, t]; pool is [P, page, K, H], or all layers'
  [L, P, page, K, H] with `layer` naming the one to write."""
  lead = () if layer is None else (layer,)
  ids_BT, off_BT = page_slots(index_B, new_BTKH.shape[1], page_table_BM, pool.shape[len(lead) + 1])
  return pool.at[(*lead, ids_BT, off_BT)].set(new_BTKH)


def advance(cache: KVCache, segment_ids_BT: jax.Array, k_LBSKH: jax.Array, v_LBSKH: jax.Array) -> KVCache:
  """The cache after a call wrote T tokens with these segment ids."""
  return dataclasses.replace(
      cache,
      k_LBSKH=k_LBSKH,
      v_LBSKH=v_LBSKH,
      segment_ids_BS=write_rows(cache.segment_ids_BS, segment_ids_BT.astype(jnp.int32), cache.index_B),
      index_B=cache.index_B + jnp.sum(segment_ids_BT != 0, axis=1, dtype=jnp.int32),
  )
