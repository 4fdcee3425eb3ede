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

Quantized layout (`KVQuant`, config `quantize_kvcache`): k/v hold int8, int4 or fp8 values and k/v_scale hold one
symmetric absmax scale per token per kv head (`kv_quant_axis=dkv`, scale [.., K, J]) or per token over all kv heads
(`heads_and_dkv`, [.., 1, J]), over each of J equal parts of the entry's head_dim (J = 1, or the number of attention
layers of a block sharing one entry, see `Family.kv_caches_per_layer`). `LayerKV.write` quantizes the new tokens;
`keys()`/`values()` return them dequantized, so attention reads float arrays either way. Every cache array (values
and scales) shares the [L, B, S] (or [L, P, page]) leading axes, so code that pads, copies or pages the cache maps
over `arrays()`.

Per-layer, read-only layout (`KVCache.split()`, the serving engine's decode state): each of k, v (and the scales)
is a tuple of L arrays [B, S, K, H] (paged: pools [P, page, K, H]) instead of one [L, ...] array, and a call does not
write them. `LayerKV.write` records the call's entries as `Pending(buffer, new)`; attention reads the buffer's
earlier slots (`keys()`, with `key_segment_ids()` hiding the slots being written) plus the new entries
(`pending()`); `commit` writes them in place later: at the start of the engine's next step, before anything reads
the buffers (or in a program of its own, `Engine.flush`). Why: XLA:CPU gives a layer's slice of a stacked cache,
and a buffer read and then updated in one program, a copy of the whole buffer on every decode step (a third of a
small model's step at a 1k-token cache); a program that updates a buffer in place and only then reads it copies
nothing. Only the unscanned layer loop takes this layout.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from maxtext_like import kernels

KV_QUANT_DTYPES = {"int8": jnp.int8, "int4": jnp.int4, "fp8": jnp.float8_e4m3fn}
KV_QUANT_AXES = ("dkv", "heads_and_dkv")


@dataclasses.dataclass(frozen=True)
class KVQuant:
  """How a quantized cache stores keys and values (config: kv_quant_dtype, kv_quant_axis)."""

  dtype: str = "int8"
  axis: str = "dkv"

  def __post_init__(self):
    if self.dtype not in KV_QUANT_DTYPES or self.axis not in KV_QUANT_AXES:
      raise ValueError(f"KVQuant(dtype={self.dtype!r}, axis={self.axis!r}): dtype is one of {list(KV_QUANT_DTYPES)}, "
                       f"axis one of {list(KV_QUANT_AXES)}")


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Pending:
  """One layer's buffer of a read-only (split) cache, and the entries this call adds at index_B ([B, T, ...], in
  the buffer's dtype: quantized values or their scales), written later by `commit`."""

  buffer: jax.Array
  new: jax.Array


def quantize(x_BTKH: jax.Array, value_dtype, scale_shape_KJ: tuple[int, int],
             scale_dtype) -> tuple[jax.Array, jax.Array]:
  """(values [B, T, K, H] in `value_dtype`, scales [B, T, K or 1, J]): symmetric absmax per token over each of J
  equal parts of head_dim, and over the kv heads too when the scales' K is 1; integers round to nearest."""
  Ks, J = scale_shape_KJ
  B, T, K, H = x_BTKH.shape
  x = x_BTKH.astype(jnp.float32).reshape(B, T, K, J, H // J)
  amax = jnp.max(jnp.abs(x), axis=4)  # [B, T, K, J]
  if Ks == 1:
    amax = jnp.max(amax, axis=2, keepdims=True)
  vt = jnp.dtype(value_dtype)
  qmax = float(jnp.finfo(vt).max if jnp.issubdtype(vt, jnp.floating) else jnp.iinfo(vt).max)
  scale = jnp.where(amax > 0, amax / qmax, 1.0).astype(scale_dtype)
  q = x / scale.astype(jnp.float32)[..., None]
  if not jnp.issubdtype(vt, jnp.floating):
    q = jnp.round(q)
  # clipped: a scale rounded down to a narrow dtype (bfloat16) can put x / scale past qmax (fp8 overflows to NaN)
  return jnp.clip(q, -qmax, qmax).astype(vt).reshape(B, T, K, H), scale


def dequantize(q_BSKH: jax.Array, scale_BSKJ: jax.Array) -> jax.Array:
  """Values times their scales, in the scales' dtype."""
  *lead, K, H = q_BSKH.shape
  J = scale_BSKJ.shape[-1]
  x = q_BSKH.astype(scale_BSKJ.dtype).reshape(*lead, K, J, H // J) * scale_BSKJ[..., None]
  return x.reshape(*lead, K, H)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
  k_LBSKH: jax.Array  # rotated keys
  v_LBSKH: jax.Array
  segment_ids_BS: jax.Array  # int32, 0 = empty slot / padding
  index_B: jax.Array  # int32, next slot to write per row
  page_table_BM: jax.Array | None = None  # paged layout: int32 page ids per row (see the module docstring)
  k_scale_LBSKJ: jax.Array | None = None  # quantized layout: the keys' scales (see the module docstring)
  v_scale_LBSKJ: jax.Array | None = None

  @classmethod
  def zeros(cls, num_layers: int, batch_size: int, max_length: int, num_kv_heads: int, head_dim: int,
            dtype, v_head_dim: int | None = None, quant: KVQuant | None = None, groups: int = 1) -> "KVCache":
    """v_head_dim (default head_dim): values may be narrower or wider than keys (MLA). With `quant`, values are
    stored quantized with scales in `dtype`, one per token per kv head (or per token) per each of `groups` equal
    parts of head_dim."""
    lead = (num_layers, batch_size, max_length)
    Hv = head_dim if v_head_dim is None else v_head_dim
    store = dtype if quant is None else KV_QUANT_DTYPES[quant.dtype]
    scales = {}
    if quant is not None:
      shape = lead + (num_kv_heads if quant.axis == "dkv" else 1, groups)
      scales = {"k_scale_LBSKJ": jnp.zeros(shape, dtype), "v_scale_LBSKJ": jnp.zeros(shape, dtype)}
    return cls(
        k_LBSKH=jnp.zeros(lead + (num_kv_heads, head_dim), store),
        v_LBSKH=jnp.zeros(lead + (num_kv_heads, Hv), store),
        segment_ids_BS=jnp.zeros((batch_size, max_length), jnp.int32),
        index_B=jnp.zeros((batch_size,), jnp.int32),
        **scales,
    )

  def arrays(self) -> tuple[jax.Array, ...]:
    """The arrays with [L, B, S] leading axes: (k, v), and (k_scale, v_scale) when quantized."""
    scales = () if self.k_scale_LBSKJ is None else (self.k_scale_LBSKJ, self.v_scale_LBSKJ)
    return (self.k_LBSKH, self.v_LBSKH) + scales

  def with_arrays(self, arrays: tuple[jax.Array, ...]) -> "KVCache":
    scales = {} if len(arrays) == 2 else {"k_scale_LBSKJ": arrays[2], "v_scale_LBSKJ": arrays[3]}
    return dataclasses.replace(self, k_LBSKH=arrays[0], v_LBSKH=arrays[1], **scales)

  @property
  def is_split(self) -> bool:
    """True in the per-layer layout (see the module docstring)."""
    return isinstance(self.k_LBSKH, tuple)

  def split(self) -> "KVCache":
    """The per-layer layout: each array a tuple of its L layers."""
    return self if self.is_split else self.with_arrays(tuple(tuple(a) for a in self.arrays()))

  def without_arrays(self) -> "KVCache":
    """This cache with its arrays replaced by None (the decode step passes the buffers separately)."""
    return self.with_arrays(tuple(None for _ in self.arrays()))

  def layer0(self) -> "KVCache":
    """Layer 0's arrays with a leading axis of 1, in either layout: shapes and dtypes without the whole cache."""
    pick = (lambda a: a[0][None]) if self.is_split else (lambda a: a[:1])  # noqa: E731
    return self.with_arrays(tuple(pick(a) for a in self.arrays()))

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

  With scales (quantized layout, see the module docstring) `write` quantizes and `keys()`/`values()` dequantize.
  """

  k_BSKH: jax.Array  # paged: the page pool [P, page, K, H]; with `layer`: all layers' arrays
  v_BSKH: jax.Array
  index_B: jax.Array
  segment_ids_BS: jax.Array
  page_table_BM: jax.Array | None = None
  layer: int | None = dataclasses.field(default=None, metadata=dict(static=True))
  k_scale_BSKJ: jax.Array | None = None
  v_scale_BSKJ: jax.Array | None = None

  @classmethod
  def of(cls, arrays: tuple[jax.Array, ...], index_B, segment_ids_BS, page_table_BM=None, *,
         layer: int | None = None) -> "LayerKV":
    """The view of `KVCache.arrays()`-shaped (k, v[, k_scale, v_scale])."""
    return cls(arrays[0], arrays[1], index_B, segment_ids_BS, page_table_BM, layer, *arrays[2:])

  def arrays(self) -> tuple[jax.Array, ...]:
    scales = () if self.k_scale_BSKJ is None else (self.k_scale_BSKJ, self.v_scale_BSKJ)
    return (self.k_BSKH, self.v_BSKH) + scales

  def with_arrays(self, arrays: tuple[jax.Array, ...]) -> "LayerKV":
    scales = {} if len(arrays) == 2 else {"k_scale_BSKJ": arrays[2], "v_scale_BSKJ": arrays[3]}
    return dataclasses.replace(self, k_BSKH=arrays[0], v_BSKH=arrays[1], **scales)

  def part(self, j: int, n: int) -> "LayerKV":
    """The view of the j-th of n equal head_dim parts (a block whose n attention layers share one entry); the
    scales' J axis holds one scale per part. Split layout: only this view's layer is cut."""
    def cut(a):
      if isinstance(a, Pending):
        return Pending(cut(a.buffer), cut(a.new))
      w = a.shape[-1] // n
      return a[..., j * w:(j + 1) * w]
    if self._split:
      return self.with_arrays(tuple(_replace_at(a, self.layer, cut(a[self.layer])) for a in self.arrays()))
    return self.with_arrays(tuple(cut(a) for a in self.arrays()))

  def join(self, parts: list["LayerKV"]) -> "LayerKV":
    """This view with its head_dim parts replaced by `parts` (inverse of `part`). Split layout: the buffer stays
    as it is (nothing was written to it) and the parts' new entries are joined."""
    if self._split:
      def joined(a, p):
        mine = [x[self.layer] for x in p]
        if not isinstance(mine[0], Pending):
          return a
        return _replace_at(a, self.layer, Pending(_unwrap(a[self.layer]), jnp.concatenate([m.new for m in mine], -1)))
      return self.with_arrays(tuple(joined(a, p) for a, p in zip(self.arrays(), zip(*(q.arrays() for q in parts)))))
    return self.with_arrays(tuple(jnp.concatenate(p, -1) for p in zip(*(q.arrays() for q in parts))))

  @property
  def _split(self) -> bool:
    return isinstance(self.k_BSKH, tuple)

  def _mine(self, a: jax.Array) -> jax.Array:
    return a if self.layer is None else _unwrap(a[self.layer])

  def _read(self, a: jax.Array, scale: jax.Array | None) -> jax.Array:
    a = self._mine(a)
    a = a if self.page_table_BM is None else gather_pages(a, self.page_table_BM)
    if scale is None:
      return a
    scale = self._mine(scale)
    return dequantize(a, scale if self.page_table_BM is None else gather_pages(scale, self.page_table_BM))

  def stored(self, k_dtype, v_dtype):
    """(keys, values) [B, S, K, H] for attention, in these dtypes. In a CPU decode step (`kernels.decode_matmuls`,
    the split layout, whose attention takes the few-query path) a float32 paged cache is not gathered: each is a
    `kernels.PagedPool`, which the attention kernels read in place."""
    if (self.page_table_BM is not None and self._split and self.k_scale_BSKJ is None
        and kernels.decode_matmuls_enabled()
        and self._mine(self.k_BSKH).dtype == self._mine(self.v_BSKH).dtype == jnp.float32
        and jnp.dtype(k_dtype) == jnp.dtype(v_dtype) == jnp.float32):
      return (kernels.PagedPool(self._mine(self.k_BSKH), self.page_table_BM),
              kernels.PagedPool(self._mine(self.v_BSKH), self.page_table_BM))
    return self.keys().astype(k_dtype), self.values().astype(v_dtype)

  def keys(self) -> jax.Array:
    """Keys [B, S, K, H] by slot (paged: the row's pages gathered; quantized: dequantized)."""
    return self._read(self.k_BSKH, self.k_scale_BSKJ)

  def values(self) -> jax.Array:
    return self._read(self.v_BSKH, self.v_scale_BSKJ)

  def key_segment_ids(self) -> jax.Array:
    """Segment ids [B, S] of `keys()`: in the split layout the slots this call writes hold stale entries (its new
    ones are in `pending()`), so they get -1, which no query has."""
    if not self._split:
      return self.segment_ids_BS
    S = self.segment_ids_BS.shape[1]
    return jnp.where(jnp.arange(S, dtype=jnp.int32)[None] < self.index_B[:, None], self.segment_ids_BS, -1)

  def pending(self, k_dtype, v_dtype) -> tuple[jax.Array, jax.Array] | None:
    """Split layout after `write`: this call's (keys, values) [B, T, K, H] as attention must see them (quantized
    then dequantized, like the stored ones), in these dtypes; None otherwise."""
    if not self._split:
      return None
    k, v = self.k_BSKH[self.layer], self.v_BSKH[self.layer]
    if not isinstance(k, Pending):
      return None
    k, v = k.new, v.new
    if self.k_scale_BSKJ is not None:
      k, v = dequantize(k, self.k_scale_BSKJ[self.layer].new), dequantize(v, self.v_scale_BSKJ[self.layer].new)
    return k.astype(k_dtype), v.astype(v_dtype)

  def write(self, k_BTKH: jax.Array, v_BTKH: jax.Array) -> "LayerKV":
    """Stores the new tokens' keys and values at index_B in each row (quantized first when the cache has scales)."""
    if self.k_scale_BSKJ is None:
      return dataclasses.replace(self, k_BSKH=self._write(self.k_BSKH, k_BTKH), v_BSKH=self._write(self.v_BSKH, v_BTKH))
    new = []
    for x, store, scale in ((k_BTKH, self.k_BSKH, self.k_scale_BSKJ), (v_BTKH, self.v_BSKH, self.v_scale_BSKJ)):
      q, s = quantize(x, self._mine(store).dtype, self._mine(scale).shape[-2:], self._mine(scale).dtype)
      new.append((self._write(store, q), self._write(scale, s)))
    (k, ks), (v, vs) = new
    return self.with_arrays((k, v, ks, vs))

  def _write(self, cache: jax.Array, new_BTKH: jax.Array) -> jax.Array:
    if isinstance(cache, tuple):  # split layout: recorded, written by `commit`
      buffer = _unwrap(cache[self.layer])
      return _replace_at(cache, self.layer, Pending(buffer, new_BTKH.astype(buffer.dtype)))
    return self._write_one(cache, new_BTKH, () if self.layer is None else (self.layer,))

  def _write_one(self, cache: jax.Array, new_BTKH: jax.Array, lead: tuple) -> jax.Array:
    """Writes into `cache[lead]` (lead: the layer index of a stacked cache, or nothing)."""
    new_BTKH = new_BTKH.astype(cache.dtype)
    if self.page_table_BM is not None:
      return write_pages(cache, new_BTKH, self.index_B, self.page_table_BM, lead[0] if lead else None)
    if self.layer is None:
      return write_rows(cache, new_BTKH, self.index_B)
    B, T = new_BTKH.shape[:2]  # in place into one layer; slots past the row's end are dropped
    rows_BT = jnp.broadcast_to(jnp.arange(B, dtype=jnp.int32)[:, None], (B, T))
    slots_BT = self.index_B[:, None] + jnp.arange(T, dtype=jnp.int32)[None, :]
    return cache.at[(*lead, rows_BT, slots_BT)].set(new_BTKH, mode="drop")


def _replace_at(t: tuple, i: int, x) -> tuple:
  return t[:i] + (x,) + t[i + 1:]


def _unwrap(a):
  return a.buffer if isinstance(a, Pending) else a


def pending_entries(arrays: tuple) -> tuple:
  """The new entries of a split cache's arrays after a call (`Pending.new` per layer; None where a layer wrote
  nothing)."""
  return tuple(tuple(e.new if isinstance(e, Pending) else None for e in layers) for layers in arrays)


def commit(arrays: tuple, new: tuple, index_B: jax.Array, page_table_BM: jax.Array | None = None) -> tuple:
  """Writes a split cache's new entries (`pending_entries`) at index_B, each layer's buffer in place (donate
  `arrays`): `write_rows`, or the rows' pages. A row whose index is past its end writes its last slot (such rows
  are finished; their next insert rewrites them)."""
  def put(buffer, new_BT):
    if new_BT is None:
      return buffer
    new_BT = new_BT.astype(buffer.dtype)
    if page_table_BM is not None:
      return write_pages(buffer, new_BT, index_B, page_table_BM)
    return write_rows(buffer, new_BT, index_B)
  return tuple(tuple(put(b, n) for b, n in zip(layers, news)) for layers, news in zip(arrays, new))


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


def advance(cache: KVCache, segment_ids_BT: jax.Array, arrays: tuple[jax.Array, ...]) -> KVCache:
  """The cache after a call wrote T tokens with these segment ids (`arrays`: its new `KVCache.arrays()`)."""
  return dataclasses.replace(
      cache.with_arrays(arrays),
      segment_ids_BS=write_rows(cache.segment_ids_BS, segment_ids_BT.astype(jnp.int32), cache.index_B),
      index_B=cache.index_B + jnp.sum(segment_ids_BT != 0, axis=1, dtype=jnp.int32),
  )
