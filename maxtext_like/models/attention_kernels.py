"""Attention kernels: pure functions of (q, k, v, mask inputs).

All kernels take queries q_BTNH, keys/values k_BSKH, v_BSKH (GQA: N = K * G,
query head n uses kv head n // G) and the same mask description:

  q_idx_BT   slot index of each query in the key sequence (causality, window)
  q_seg_BT   segment id of each query
  kv_seg_BS  segment id of each key slot
  kv_idx_S   index of each key slot (optional; default: key slot s has index s). Load-balanced context
             parallelism (models/load_balance.py) passes the original token order here and as q_idx.

Query t may attend key s iff kv_idx[s] <= q_idx[t], q_seg[t] == kv_seg[s], when
window > 0, q_idx[t] - kv_idx[s] < window, and when chunk > 0 (llama4's chunked attention),
q_idx[t] // chunk == kv_idx[s] // chunk. Chunks are counted by index, so a packed document that starts mid-chunk
shares its chunk boundaries with the row (as MaxText). Segment 0 marks padding (it only matches
padding). Softmax is in float32; masked logits get a large negative finite
value, so no row is ever NaN.

Values may have their own head size (v_BSKH [..., Hv], MLA); the output is then out_BTNHv. Optional
`sinks_N` (gpt-oss attention sinks): one learned logit per query head that joins every row's softmax
denominator with a zero value vector.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from maxtext_like import kernels

MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)
AUTOSELECT_FLASH_MIN_LENGTH = 1024


@dataclasses.dataclass(frozen=True)
class AttentionOptions:
  """Static knobs shared by all kernels."""

  window: int = 0  # sliding window size, 0 = global
  chunk: int = 0  # chunked attention: a query sees only keys of its own chunk of this many indices; 0 = off
  soft_cap: float | None = None  # logits -> soft_cap * tanh(logits / soft_cap)
  float32_qk_product: bool = False  # cast q, k to fp32 before q.k
  float32_logits: bool = False  # accumulate q.k in fp32
  precision: str = "default"  # jax.lax.Precision name for the einsums
  query_scale: float | None = None  # queries multiplied by this (None: head_dim ** -0.5)


def _static(x) -> bool:
  return isinstance(x, (int, np.integer))


def make_mask(q_idx_BT, q_seg_BT, kv_idx_S, kv_seg_BS, window: int, chunk: int = 0) -> jax.Array:
  """Boolean mask [B, T, S]: True where the query may attend the key (kv_idx_S: [S], or per row [B, S])."""
  q_idx = q_idx_BT[:, :, None]
  kv_idx = kv_idx_S[None, None, :] if kv_idx_S.ndim == 1 else kv_idx_S[:, None, :]
  mask = (kv_idx <= q_idx) & (q_seg_BT[:, :, None] == kv_seg_BS[:, None, :])
  if not _static(window):  # traced per-layer window (gemma3 under scan); 0 = global
    mask &= (window <= 0) | ((q_idx - kv_idx) < window)
  elif window > 0:
    mask &= (q_idx - kv_idx) < window
  if not _static(chunk):  # traced per-layer chunk size; 0 = unchunked
    size = jnp.maximum(chunk, 1)
    mask &= (chunk <= 0) | (q_idx // size == kv_idx // size)
  elif chunk > 0:
    mask &= q_idx // chunk == kv_idx // chunk
  return mask


def _scores(q_BTKGH, k_BSKH, opts: AttentionOptions) -> jax.Array:
  """Scaled, soft-capped logits [B, K, G, T, S] in float32."""
  if opts.float32_qk_product:
    q_BTKGH, k_BSKH = q_BTKGH.astype(jnp.float32), k_BSKH.astype(jnp.float32)
  scale = q_BTKGH.shape[-1] ** -0.5 if opts.query_scale is None else opts.query_scale
  q_BTKGH = q_BTKGH * jnp.asarray(scale, q_BTKGH.dtype)
  s = jnp.einsum("btkgh,bskh->bkgts", q_BTKGH, k_BSKH, precision=jax.lax.Precision(opts.precision),
                 preferred_element_type=jnp.float32 if opts.float32_logits else None)
  s = s.astype(jnp.float32)
  if opts.soft_cap:
    s = opts.soft_cap * jnp.tanh(s / opts.soft_cap)
  return s


DECODE_MAX_QUERIES = 4  # rows with at most this many queries take `_few_queries` (decode, short chunks)


def _few_queries(q_BTKGH, k_BSKH, v_BSKH, mask_BTS, opts: AttentionOptions, sinks_N, new=None) -> jax.Array:
  """out_BTKGH for a few queries against a long cache, with the cache read in its stored [B, S, K, H] order.

  The usual batched dots (batch b, k) make XLA transpose every layer's whole cache to [B, K, S, H] on each decode
  step, which costs more than the attention itself. Here the queries go into a block-diagonal matrix
  Q [B, K*H, T*K*G] (head k's queries only against head k's key features), so the logits are one plain matmul
  keys[B, S, K*H] @ Q, and the context p[B, T*K*G, S] @ values[B, S, K*Hv] keeps its diagonal blocks: K times the
  (tiny) arithmetic, no cache transposes.

  `new` = (k_BUKH, v_BUKH, mask_BTU): keys and values not in the cache arrays (a read-only cache's entries of this
  call, models/kv_cache.py), in the same softmax."""
  B, T, K, G, H = q_BTKGH.shape
  S, Hv = k_BSKH.shape[1], v_BSKH.shape[-1]
  f32 = jnp.float32
  prec = jax.lax.Precision(opts.precision)
  if opts.float32_qk_product:
    q_BTKGH, k_BSKH = q_BTKGH.astype(f32), k_BSKH.astype(f32)
  scale = H ** -0.5 if opts.query_scale is None else opts.query_scale
  q_BTKGH = q_BTKGH * jnp.asarray(scale, q_BTKGH.dtype)
  # In the engine's decode step on a CPU device, float32 attention runs as one kernel (kernels/decode_kernels.cc)
  # that reads each row's filled positions only; a paged cache comes as kernels.PagedPool, read in place.
  table_BM = k_BSKH.table_BM if isinstance(k_BSKH, kernels.PagedPool) else None
  all_f32 = q_BTKGH.dtype == k_BSKH.dtype == v_BSKH.dtype == f32
  if table_BM is not None or (kernels.decode_matmuls_enabled() and all_f32):
    # rows are read up to their last position any query may attend
    limit_B = jnp.max(jnp.where(jnp.any(mask_BTS, axis=1), jnp.arange(1, S + 1, dtype=jnp.int32), 0), axis=-1)
    keys, values = (k_BSKH, v_BSKH) if table_BM is None else (k_BSKH.pool, v_BSKH.pool)
    return kernels.decode_attention(q_BTKGH.astype(f32), keys, values, limit_B, mask_BTS, table_BM, new=new,
                                    sinks_N=sinks_N, soft_cap=opts.soft_cap)
  eye_KK = jnp.eye(K, dtype=q_BTKGH.dtype)
  logits_type = f32 if opts.float32_logits else None
  q_BXY = jnp.einsum("btkgh,jk->bjhtkg", q_BTKGH, eye_KK).reshape(B, K * H, T * K * G)
  s_BSY = jnp.einsum("bsx,bxy->bsy", k_BSKH.reshape(B, S, K * H), q_BXY, precision=prec,
                     preferred_element_type=logits_type).astype(f32)
  def capped_and_masked(s_BSTKG, mask_BTS):
    if opts.soft_cap:
      s_BSTKG = opts.soft_cap * jnp.tanh(s_BSTKG / opts.soft_cap)
    return jnp.where(jnp.swapaxes(mask_BTS, 1, 2)[:, :, :, None, None], s_BSTKG, MASK_VALUE)

  s_BSTKG = capped_and_masked(s_BSY.reshape(B, S, T, K, G), mask_BTS)
  m_B1TKG = jnp.max(s_BSTKG, axis=1, keepdims=True)
  if new is not None:  # the new entries' logits share the softmax; kept apart (a concatenation made XLA:CPU slower)
    k_BUKH, v_BUKH, mask_BTU = new
    k_BUKH = k_BUKH.astype(f32) if opts.float32_qk_product else k_BUKH
    s_BUTKG = jnp.einsum("btkgh,bukh->butkg", q_BTKGH, k_BUKH.astype(q_BTKGH.dtype), precision=prec,
                         preferred_element_type=logits_type).astype(f32)
    s_BUTKG = capped_and_masked(s_BUTKG, mask_BTU)
    m_B1TKG = jnp.maximum(m_B1TKG, jnp.max(s_BUTKG, axis=1, keepdims=True))
  if sinks_N is not None:
    sink_11KG = sinks_N.astype(f32).reshape(1, 1, 1, K, G)
    m_B1TKG = jnp.maximum(m_B1TKG, sink_11KG)
  e_BSTKG = jnp.exp(s_BSTKG - m_B1TKG)
  denom_B1TKG = jnp.sum(e_BSTKG, axis=1, keepdims=True)
  if new is not None:
    e_BUTKG = jnp.exp(s_BUTKG - m_B1TKG)
    denom_B1TKG = denom_B1TKG + jnp.sum(e_BUTKG, axis=1, keepdims=True)
  if sinks_N is not None:
    denom_B1TKG = denom_B1TKG + jnp.exp(sink_11KG - m_B1TKG)
  p_BYS = jnp.transpose(e_BSTKG / denom_B1TKG, (0, 2, 3, 4, 1)).reshape(B, T * K * G, S).astype(v_BSKH.dtype)
  o_BYX = jnp.einsum("bys,bsx->byx", p_BYS, v_BSKH.reshape(B, S, K * Hv), precision=prec)
  out_BTKGH = jnp.einsum("btkgjh,kj->btkgh", o_BYX.reshape(B, T, K, G, K, Hv), eye_KK.astype(o_BYX.dtype))
  if new is not None:
    p_BUTKG = (e_BUTKG / denom_B1TKG).astype(v_BUKH.dtype)
    out_BTKGH = out_BTKGH + jnp.einsum("butkg,bukh->btkgh", p_BUTKG, v_BUKH, precision=prec).astype(out_BTKGH.dtype)
  return out_BTKGH


def _group(q_BTNH, num_kv_heads: int) -> jax.Array:
  B, T, N, H = q_BTNH.shape
  if N % num_kv_heads:
    raise ValueError(f"{N} query heads not a multiple of {num_kv_heads} kv heads")
  return q_BTNH.reshape(B, T, num_kv_heads, N // num_kv_heads, H)


def _kv_index(kv_idx_S, S: int) -> jax.Array:
  return jnp.arange(S) if kv_idx_S is None else jnp.asarray(kv_idx_S)


def dot_product(q_BTNH, k_BSKH, v_BSKH, q_idx_BT, q_seg_BT, kv_seg_BS, opts: AttentionOptions,
                sinks_N=None, kv_idx_S=None) -> jax.Array:
  """Materialises the [B, K, G, T, S] logits; returns out_BTNH."""
  B, T, N, _ = q_BTNH.shape
  H = v_BSKH.shape[-1]
  S = k_BSKH.shape[1]
  mask_BTS = make_mask(q_idx_BT, q_seg_BT, _kv_index(kv_idx_S, S), kv_seg_BS, opts.window, opts.chunk)
  if T <= DECODE_MAX_QUERIES < S:
    return _few_queries(_group(q_BTNH, k_BSKH.shape[2]), k_BSKH, v_BSKH, mask_BTS, opts, sinks_N).reshape(B, T, N, H)
  s_BKGTS = _scores(_group(q_BTNH, k_BSKH.shape[2]), k_BSKH, opts)
  s_BKGTS = jnp.where(mask_BTS[:, None, None], s_BKGTS, MASK_VALUE)
  if sinks_N is None:
    p_BKGTS = jax.nn.softmax(s_BKGTS, axis=-1).astype(v_BSKH.dtype)
  else:
    K = k_BSKH.shape[2]
    sink_BKGT1 = jnp.broadcast_to(sinks_N.astype(jnp.float32).reshape(1, K, N // K, 1, 1), (*s_BKGTS.shape[:-1], 1))
    p_BKGTS = jax.nn.softmax(jnp.concatenate([s_BKGTS, sink_BKGT1], axis=-1), axis=-1)[..., :-1]
    p_BKGTS = p_BKGTS.astype(v_BSKH.dtype)
  out_BTKGH = jnp.einsum("bkgts,bskh->btkgh", p_BKGTS, v_BSKH, precision=jax.lax.Precision(opts.precision))
  return out_BTKGH.reshape(B, T, N, H)


def flash(q_BTNH, k_BSKH, v_BSKH, q_idx_BT, q_seg_BT, kv_seg_BS, opts: AttentionOptions,
          block_size: int = 512, sinks_N=None, kv_idx_S=None) -> jax.Array:
  """Blocked attention with an online softmax over key blocks (lax.scan).

  Peak memory is O(T * block_size) per head; each block is rematerialised in
  the backward pass. Keys are padded to a multiple of block_size with segment
  id -1, which matches no query.
  """
  B, T, N, _ = q_BTNH.shape
  S, K = k_BSKH.shape[1], k_BSKH.shape[2]
  G, H = N // K, v_BSKH.shape[-1]
  blk = min(block_size, S)
  n_blocks = -(-S // blk)
  pad = n_blocks * blk - S
  kv_idx_S = _kv_index(kv_idx_S, S)
  if pad:
    kv_idx_S = jnp.pad(kv_idx_S, (0, pad))
    k_BSKH = jnp.pad(k_BSKH, ((0, 0), (0, pad), (0, 0), (0, 0)))
    v_BSKH = jnp.pad(v_BSKH, ((0, 0), (0, pad), (0, 0), (0, 0)))
    kv_seg_BS = jnp.pad(kv_seg_BS, ((0, 0), (0, pad)), constant_values=-1)

  def blocks(x):  # [B, n*blk, ...] -> [n, B, blk, ...]
    return jnp.moveaxis(x.reshape(B, n_blocks, blk, *x.shape[2:]), 1, 0)

  q_BTKGH = _group(q_BTNH, K)

  def body(carry, xs):
    m_BKGT, l_BKGT, acc_BKGTH = carry
    idx_C, k_BCKH, v_BCKH, seg_BC = xs
    s_BKGTC = _scores(q_BTKGH, k_BCKH, opts)
    mask_BTC = make_mask(q_idx_BT, q_seg_BT, idx_C, seg_BC, opts.window, opts.chunk)
    s_BKGTC = jnp.where(mask_BTC[:, None, None], s_BKGTC, MASK_VALUE)
    m_new = jnp.maximum(m_BKGT, s_BKGTC.max(axis=-1))
    correction = jnp.exp(m_BKGT - m_new)
    p_BKGTC = jnp.exp(s_BKGTC - m_new[..., None])
    l_new = l_BKGT * correction + p_BKGTC.sum(axis=-1)
    pv_BKGTH = jnp.einsum("bkgtc,bckh->bkgth", p_BKGTC.astype(v_BCKH.dtype), v_BCKH,
                          precision=jax.lax.Precision(opts.precision), preferred_element_type=jnp.float32)
    acc_new = acc_BKGTH * correction[..., None] + pv_BKGTH
    return (m_new, l_new, acc_new), None

  init = (
      jnp.full((B, K, G, T), MASK_VALUE, jnp.float32),
      jnp.zeros((B, K, G, T), jnp.float32),
      jnp.zeros((B, K, G, T, H), jnp.float32),
  )
  if sinks_N is not None:  # the sink is a first key with logit sinks[n] and a zero value: max = sink, sum = 1
    init = (jnp.broadcast_to(sinks_N.astype(jnp.float32).reshape(1, K, G, 1), (B, K, G, T)),
            jnp.ones((B, K, G, T), jnp.float32), init[2])
  xs = (kv_idx_S.reshape(n_blocks, blk), blocks(k_BSKH), blocks(v_BSKH), blocks(kv_seg_BS))
  (_, l_BKGT, acc_BKGTH), _ = jax.lax.scan(jax.checkpoint(body, prevent_cse=False), init, xs)
  out_BKGTH = acc_BKGTH / l_BKGT[..., None]
  return jnp.transpose(out_BKGTH, (0, 3, 1, 2, 4)).reshape(B, T, N, H).astype(v_BSKH.dtype)


def needed_key_blocks(q_idx_T: np.ndarray, kv_idx_S: np.ndarray, window: int, block_q: int,
                      block_kv: int, chunk: int = 0) -> list[np.ndarray]:
  """For each block of `block_q` queries, the key blocks (of `block_kv`) holding a key that some query of the block
  may see by index: kv_idx <= q_idx, when window > 0, q_idx - kv_idx < window, and when chunk > 0, a key in one of
  the chunks the block's queries are in (a superset; segments are left to the mask). Static: the indices of a
  cache-less forward are known when tracing."""
  S = len(kv_idx_S)
  starts = range(0, S, block_kv)
  kmin = np.array([kv_idx_S[j:j + block_kv].min() for j in starts])
  kmax = np.array([kv_idx_S[j:j + block_kv].max() for j in starts])
  k_chunks = [set((kv_idx_S[j:j + block_kv] // chunk).tolist()) for j in starts] if chunk > 0 else None
  out = []
  for i in range(0, len(q_idx_T), block_q):
    q = q_idx_T[i:i + block_q]
    keep = kmin <= q.max()
    if window > 0:
      keep &= q.min() - kmax < window
    if chunk > 0:
      q_chunks = set((q // chunk).tolist())
      keep &= np.array([not q_chunks.isdisjoint(c) for c in k_chunks])
    out.append(np.flatnonzero(keep))
  return out


def block_sparse_flash(q_BTNH, k_BSKH, v_BSKH, q_idx_T: np.ndarray, kv_idx_S: np.ndarray, q_seg_BT, kv_seg_BS,
                       opts: AttentionOptions, block_q: int = 512, block_kv: int = 512, sinks_N=None) -> jax.Array:
  """`flash` per block of queries over only the key blocks it can see (`needed_key_blocks`): causal attention
  computes about half of the [T, S] blocks, a sliding window about window / S of them, chunked attention about
  chunk / S. The indices are static numpy arrays (a cache-less forward: slot order, or the load-balanced order of
  models/load_balance.py); a traced window (gemma3 under scan) or chunk skips by causality only and still masks by
  its value."""
  B, T = q_BTNH.shape[:2]
  S = k_BSKH.shape[1]
  bq, bk = min(block_q, T), min(block_kv, S)
  window = opts.window if _static(opts.window) else 0
  chunk = opts.chunk if _static(opts.chunk) else 0
  outs = []
  for i, js in enumerate(needed_key_blocks(q_idx_T, kv_idx_S, window, bq, bk, chunk)):
    js = js if len(js) else np.arange(-(-S // bk))  # no visible key (not a self-attention): softmax over all, as flash
    runs = np.split(js, np.flatnonzero(np.diff(js) != 1) + 1)  # consecutive key blocks -> one slice
    spans = [(int(r[0]) * bk, min((int(r[-1]) + 1) * bk, S)) for r in runs]

    def take(x):
      return jnp.concatenate([x[:, a:b] for a, b in spans], axis=1) if len(spans) > 1 else x[:, spans[0][0]:spans[0][1]]

    rows = slice(i * bq, min((i + 1) * bq, T))
    q_idx_BT = jnp.broadcast_to(jnp.asarray(q_idx_T[rows], jnp.int32), (B, rows.stop - rows.start))
    kv_idx = jnp.asarray(np.concatenate([kv_idx_S[a:b] for a, b in spans]), jnp.int32)
    outs.append(flash(q_BTNH[:, rows], take(k_BSKH), take(v_BSKH), q_idx_BT, q_seg_BT[:, rows], take(kv_seg_BS), opts,
                      bk, sinks_N=sinks_N, kv_idx_S=kv_idx))
  return outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=1)


def jax_dot_product_attention(q_BTNH, k_BSKH, v_BSKH, q_idx_BT, q_seg_BT, kv_seg_BS,
                              opts: AttentionOptions, sinks_N=None, kv_idx_S=None) -> jax.Array:
  """`jax.nn.dot_product_attention` (cuDNN on GPU when it applies, else XLA)."""
  if sinks_N is not None or q_BTNH.shape[-1] != v_BSKH.shape[-1]:
    raise ValueError("attention='cudnn_flash_jax' does not support attention sinks or a value head size != query's")
  if opts.soft_cap:
    raise ValueError("attention='cudnn_flash_jax' does not support attn_logits_soft_cap")
  if opts.float32_qk_product:
    q_BTNH, k_BSKH = q_BTNH.astype(jnp.float32), k_BSKH.astype(jnp.float32)
    v_BSKH = v_BSKH.astype(jnp.float32)
  mask_BTS = make_mask(q_idx_BT, q_seg_BT, _kv_index(kv_idx_S, k_BSKH.shape[1]), kv_seg_BS, opts.window, opts.chunk)
  return jax.nn.dot_product_attention(q_BTNH, k_BSKH, v_BSKH, mask=mask_BTS[:, None], scale=opts.query_scale)


def resolve_kernel(name: str, kv_length: int, q_length: int | None = None) -> str:
  """'autoselected' -> 'flash' when queries and keys are both long, else 'dot_product'. A few queries against a
  long cache (decode, a short chunk) are faster unblocked: their logits are small."""
  if name == "autoselected":
    q_length = kv_length if q_length is None else q_length
    return "flash" if min(kv_length, q_length) >= AUTOSELECT_FLASH_MIN_LENGTH else "dot_product"
  if name not in KERNELS:
    raise ValueError(f"unknown attention kernel {name!r}; allowed: {sorted(KERNELS) + ['autoselected']}")
  return name


def attend(name: str, q_BTNH, k_BSKH, v_BSKH, q_idx_BT, q_seg_BT, kv_seg_BS, opts: AttentionOptions,
           block_size: int = 512, sinks_N=None, kv_idx_S=None, new_kv=None) -> jax.Array:
  """Runs the kernel `name` (after resolving 'autoselected').

  `new_kv` = (k_BTKH, v_BTKH): this call's own keys and values, at the queries' indices, when the cache arrays do
  not hold them (a read-only decode cache, `LayerKV.pending`); those calls (decode steps) take `_few_queries`."""
  if new_kv is not None:
    B, T, N, _ = q_BTNH.shape
    S = k_BSKH.shape[1]
    mask_BTS = make_mask(q_idx_BT, q_seg_BT, _kv_index(kv_idx_S, S), kv_seg_BS, opts.window, opts.chunk)
    mask_BTU = make_mask(q_idx_BT, q_seg_BT, q_idx_BT, q_seg_BT, opts.window, opts.chunk)
    out = _few_queries(_group(q_BTNH, k_BSKH.shape[2]), k_BSKH, v_BSKH, mask_BTS, opts, sinks_N,
                       new=(*new_kv, mask_BTU))
    return out.reshape(B, T, N, v_BSKH.shape[-1])
  kernel = resolve_kernel(name, k_BSKH.shape[1], q_BTNH.shape[1])
  extra = {k: v for k, v in (("sinks_N", sinks_N), ("kv_idx_S", kv_idx_S)) if v is not None}
  if kernel == "flash":
    return flash(q_BTNH, k_BSKH, v_BSKH, q_idx_BT, q_seg_BT, kv_seg_BS, opts, block_size, **extra)
  return KERNELS[kernel](q_BTNH, k_BSKH, v_BSKH, q_idx_BT, q_seg_BT, kv_seg_BS, opts, **extra)


KERNELS = {"dot_product": dot_product, "flash": flash, "cudnn_flash_jax": jax_dot_product_attention}
