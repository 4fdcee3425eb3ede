"""Prefix caching (`enable_prefix_caching`): prompts that share a prefix reuse its cached keys and values.

After a prompt is prefilled its `Prefix` is kept, keyed by its tokens. A new prompt looks up the stored prompt with
the longest common prefix; the engine then prefills only the tokens after it (`Engine.prefill_ids` with
`existing_prefix`), so a repeated system prompt is computed once. The common part is capped one token short of the
new prompt, whose last token must run to give the first sampled token.

Two tiers, each with a byte budget and least-recently-used eviction: `prefix_caching_hbm_byte` of prefixes stay on
the device; evicted ones move to host memory (`prefix_caching_dram_byte`) and come back to the device on a hit;
evicted from there, they are dropped. Lookup compares against every stored prompt (numpy, no trie): fine for the
hundreds of entries a byte budget holds.
"""

from __future__ import annotations

import collections
import dataclasses

import jax
import numpy as np

from maxtext_like.models.ptq import tree_bytes  # packed bytes (int4: half a byte), quantized trees included


@dataclasses.dataclass
class _Entry:
  ids: np.ndarray
  prefix: object  # device arrays (hbm) or numpy (dram)
  nbytes: int
  on_device: bool


def common_prefix_length(a: np.ndarray, b: np.ndarray) -> int:
  n = min(len(a), len(b))
  diff = np.nonzero(a[:n] != b[:n])[0]
  return int(diff[0]) if len(diff) else n


class PrefixCache:
  def __init__(self, hbm_bytes: int, dram_bytes: int, *, min_length: int = 1):
    self.hbm_bytes, self.dram_bytes, self.min_length = hbm_bytes, dram_bytes, min_length
    self._entries: collections.OrderedDict[tuple, _Entry] = collections.OrderedDict()  # LRU first
    self.hits = self.misses = self.tokens_reused = 0

  def _used(self, on_device: bool) -> int:
    return sum(e.nbytes for e in self._entries.values() if e.on_device == on_device)

  def lookup(self, ids) -> tuple[object, int] | None:
    """(stored prefix on device, number of its tokens to reuse) for the longest common prefix, or None."""
    ids = np.asarray(ids, np.int32)
    best, best_m = None, 0
    for key, e in self._entries.items():
      m = min(common_prefix_length(e.ids, ids), len(ids) - 1)
      if m > best_m:
        best, best_m = key, m
    if best is None or best_m < self.min_length:
      self.misses += 1
      return None
    e = self._entries[best]
    self._entries.move_to_end(best)
    if not e.on_device:
      e.prefix, e.on_device = jax.device_put(e.prefix), True
      self._evict()
    self.hits += 1
    self.tokens_reused += best_m
    return e.prefix, best_m

  def put(self, ids, prefix) -> None:
    key = tuple(int(i) for i in ids)
    if key in self._entries:
      self._entries.move_to_end(key)
      return
    nbytes = tree_bytes(prefix)
    if nbytes > self.hbm_bytes and nbytes > self.dram_bytes:
      return
    self._entries[key] = _Entry(np.asarray(key, np.int32), prefix, nbytes, True)
    self._evict()

  def _evict(self) -> None:
    for key in list(self._entries):  # oldest first: device -> host
      if self._used(True) <= self.hbm_bytes:
        break
      e = self._entries[key]
      if e.on_device:
        e.prefix, e.on_device = jax.device_get(e.prefix), False
    for key in list(self._entries):  # host -> dropped
      if self._used(False) <= self.dram_bytes:
        break
      if not self._entries[key].on_device:
        del self._entries[key]

  def __len__(self) -> int:
    return len(self._entries)

  def stats(self) -> dict:
    return {"entries": len(self), "hits": self.hits, "misses": self.misses, "tokens_reused": self.tokens_reused,
            "hbm_bytes": self._used(True), "dram_bytes": self._used(False)}
