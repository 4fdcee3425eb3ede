"""Paged KV cache for the engine (`attention=paged`).

Instead of a [slots, max_target_length] row per slot, keys and values live in one pool of
`pagedattn_num_pages` pages of `pagedattn_tokens_per_page` tokens ([L, pages, page, K, H]); each slot has a page
table of at most `pagedattn_max_pages_per_group` pages (default: enough for max_target_length). Pages are taken from
a free list as a sequence grows (`PageAllocator`, on the host) and returned when its slot finishes, so how many
sequences decode at once is bounded by the tokens actually cached, not by slots x max length.

Page 0 is a scratch page that is never handed out: unassigned table entries point to it, so a write past a slot's
pages (padding, a dead slot) cannot reach another slot's data. Layers read a slot's keys by gathering its pages
(`models/kv_cache.py`: `LayerKV.keys()`); this is plain JAX, identical in result to the contiguous cache.
`pagedattn_pages_per_compute_block` is the block size of accelerator paged-attention kernels; the gather used here
has no blocks and does not read it.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from maxtext_like.models.kv_cache import KVCache, page_slots


def _ceil_div(a: int, b: int) -> int:
  return -(-a // b)


@dataclasses.dataclass(frozen=True)
class PagedLayout:
  num_pages: int  # including the scratch page 0
  page: int  # tokens per page
  max_pages: int  # per slot (M)
  slots: int

  @classmethod
  def from_config(cls, cfg, max_target_length: int, slots: int) -> "PagedLayout":
    a = cfg.attention
    page = a.pagedattn_tokens_per_page
    m = a.pagedattn_max_pages_per_group
    m = _ceil_div(max_target_length, page) if m <= 0 else m
    return cls(num_pages=a.pagedattn_num_pages, page=page, max_pages=m, slots=slots)

  @property
  def slot_length(self) -> int:
    return self.max_pages * self.page

  def empty_cache(self, num_layers: int, K: int, Hk: int, Hv: int, dtype, *, quant=None, groups: int = 1) -> KVCache:
    """Pools [L, pages, page, ...] of keys and values (and their scales with `quant`, see models/kv_cache.py)."""
    P, p, B, M = self.num_pages, self.page, self.slots, self.max_pages
    pools = KVCache.zeros(num_layers, P, p, K, Hk, dtype, v_head_dim=Hv, quant=quant, groups=groups)
    return dataclasses.replace(pools, segment_ids_BS=jnp.zeros((B, M * p), jnp.int32),
                               index_B=jnp.zeros((B,), jnp.int32), page_table_BM=jnp.zeros((B, M), jnp.int32))

  def pages_for(self, num_tokens: int) -> int:
    return _ceil_div(num_tokens, self.page)

  def insert(self, cache: KVCache, prefix: KVCache, slot, pages_M: jax.Array, true_length) -> KVCache:
    """Copies a contiguous batch-1 prefix cache into `slot`'s pages (`pages_M`: the slot's page table row, 0 past
    its pages) and sets the slot's segment ids and length."""
    C = min(prefix.max_length, self.slot_length)
    idx = jnp.zeros((1,), jnp.int32)
    ids_1C, off_1C = page_slots(idx, C, pages_M[None], self.page)
    # slots of the prefix past its true length go to scratch: their pages may not be allocated
    ids_1C = jnp.where(jnp.arange(C)[None] < true_length, ids_1C, 0)

    def put(pools, new_L1CKH):  # per layer (the decode state's layout, KVCache.split) or stacked [L, P, ...]
      if not isinstance(pools, tuple):
        return pools.at[:, ids_1C[0], off_1C[0]].set(new_L1CKH[:, 0, :C].astype(pools.dtype))
      return tuple(pool.at[ids_1C[0], off_1C[0]].set(new_L1CKH[i, 0, :C].astype(pool.dtype))
                   for i, pool in enumerate(pools))

    seg = jnp.zeros((cache.max_length,), jnp.int32).at[:C].set(prefix.segment_ids_BS[0, :C])
    return dataclasses.replace(cache.with_arrays(tuple(map(put, cache.arrays(), prefix.arrays()))),
                               segment_ids_BS=cache.segment_ids_BS.at[slot].set(seg),
                               index_B=cache.index_B.at[slot].set(true_length),
                               page_table_BM=cache.page_table_BM.at[slot].set(pages_M))


class PagesExhausted(RuntimeError):
  """No free page for a sequence that needs one."""


class PageAllocator:
  """Host-side free list and page tables. Page 0 is scratch and never allocated."""

  def __init__(self, layout: PagedLayout):
    self.layout = layout
    self.free_pages = list(range(layout.num_pages - 1, 0, -1))  # pop() hands out 1, 2, ...
    self.owned: dict[int, list[int]] = {}

  @property
  def num_free(self) -> int:
    return len(self.free_pages)

  def can_hold(self, slot: int, num_tokens: int) -> bool:
    need = self.layout.pages_for(num_tokens) - len(self.owned.get(slot, []))
    return need <= len(self.free_pages) and self.layout.pages_for(num_tokens) <= self.layout.max_pages

  def ensure(self, slot: int, num_tokens: int) -> bool:
    """Gives `slot` pages for `num_tokens` tokens; True if its table changed. PagesExhausted if the pool is out."""
    have = self.owned.setdefault(slot, [])
    need = min(self.layout.pages_for(num_tokens), self.layout.max_pages) - len(have)
    if need <= 0:
      return False
    if need > len(self.free_pages):
      raise PagesExhausted(f"slot {slot} needs {need} more page(s) of {self.layout.page} tokens; {len(self.free_pages)} "
                           f"free of pagedattn_num_pages={self.layout.num_pages} (page 0 is scratch)")
    have.extend(self.free_pages.pop() for _ in range(need))
    return True

  def release(self, slot: int) -> None:
    self.free_pages.extend(reversed(self.owned.pop(slot, [])))

  def table(self) -> list[list[int]]:
    """[slots, max_pages] page ids (0 = none) for `Engine.set_page_tables`."""
    return [self.table_row(b) for b in range(self.layout.slots)]

  def table_row(self, slot: int) -> list[int]:
    row = self.owned.get(slot, [])
    return row + [0] * (self.layout.max_pages - len(row))
