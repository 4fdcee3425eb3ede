"""Chunked attention (llama4): every kernel path vs numpy attention under a brute-force mask.

A query at index q sees a key at index k iff k <= q, k // chunk == q // chunk and their segments match. The
paths: dot_product, flash, jax's DPA, block-sparse flash (which must also skip the key blocks outside a chunk),
a KV cache (decode-style query indices into a longer key buffer), load-balanced token order (q_idx/kv_idx
permuted, as context parallelism passes them), and a traced chunk size (a per-layer value inside a scan).
"""

import numpy as np
import jax
import jax.numpy as jnp

from maxtext_like.models import ModelSpec, context_attention
from maxtext_like.models import attention_kernels as ak
from maxtext_like.models.load_balance import permutation
from models_testlib import jit

B, T, N, K, H = 2, 24, 4, 2, 8
CHUNK = 5


def brute_mask(q_idx, q_seg, kv_idx, kv_seg, chunk, window=0):
  """[B, T, S] from the rule, one pair at a time."""
  mask = np.zeros((q_idx.shape[0], q_idx.shape[1], len(kv_idx)), bool)
  for b in range(q_idx.shape[0]):
    for t in range(q_idx.shape[1]):
      for s in range(len(kv_idx)):
        q, k = int(q_idx[b, t]), int(kv_idx[s])
        mask[b, t, s] = (k <= q and q_seg[b, t] == kv_seg[b, s] and (chunk == 0 or q // chunk == k // chunk)
                         and (window == 0 or q - k < window))
  return mask


def reference(q, k, v, mask):
  """softmax(q.k / sqrt(H) masked) v in float64; rows with no visible key are left 0."""
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  k, v = np.repeat(k, N // K, axis=2), np.repeat(v, N // K, axis=2)
  s = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(H)
  s = np.where(mask[:, None], s, -np.inf)
  m = s.max(-1, keepdims=True)
  p = np.where(mask[:, None], np.exp(s - np.where(np.isfinite(m), m, 0)), 0)
  p = p / np.maximum(p.sum(-1, keepdims=True), 1e-300)
  return np.einsum("bnts,bsnh->btnh", p, v)


def inputs(seed=0, S=T):
  kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
  seg = np.ones((B, S), np.int32)
  seg[0, 9:] = 2  # row 0: two packed documents
  seg[1, S - 3:] = 0  # row 1: trailing padding
  return (jax.random.normal(kq, (B, T, N, H)), jax.random.normal(kk, (B, S, K, H)),
          jax.random.normal(kv, (B, S, K, H)), seg)


def check(got, want, mask):
  seen = mask.any(-1)  # queries with a visible key (padding rows attend padding only; no reference needed)
  np.testing.assert_allclose(np.asarray(got)[seen], want[seen], atol=2e-5)


def test_make_mask_matches_brute_force():
  rng = np.random.default_rng(0)
  q_idx = rng.integers(0, 40, size=(2, 13))
  kv_idx = rng.permutation(40)[:17]
  q_seg, kv_seg = rng.integers(1, 3, size=(2, 13)), rng.integers(1, 3, size=(2, 17))
  for chunk, window in ((0, 0), (1, 0), (4, 0), (7, 0), (8, 5), (64, 0)):
    got = ak.make_mask(jnp.asarray(q_idx), jnp.asarray(q_seg), jnp.asarray(kv_idx), jnp.asarray(kv_seg), window, chunk)
    np.testing.assert_array_equal(np.asarray(got), brute_mask(q_idx, q_seg, kv_idx, kv_seg, chunk, window))
  traced = jit(lambda c: ak.make_mask(jnp.asarray(q_idx), jnp.asarray(q_seg), jnp.asarray(kv_idx),
                                      jnp.asarray(kv_seg), 0, c))
  for chunk in (0, 4, 7):  # a traced size, 0 = off
    np.testing.assert_array_equal(np.asarray(traced(jnp.int32(chunk))), brute_mask(q_idx, q_seg, kv_idx, kv_seg, chunk))


def test_kernels_without_cache():
  q, k, v, seg = inputs()
  idx = np.broadcast_to(np.arange(T), (B, T))
  mask = brute_mask(idx, seg, np.arange(T), seg, CHUNK)
  opts = ak.AttentionOptions(chunk=CHUNK)

  def run(q, k, v, seg, chunk):
    q_idx = jnp.broadcast_to(jnp.arange(T), (B, T))
    traced = ak.AttentionOptions(chunk=chunk)
    return {
        "dot_product": ak.attend("dot_product", q, k, v, q_idx, seg, seg, opts),
        "flash": ak.attend("flash", q, k, v, q_idx, seg, seg, opts, block_size=4),
        "cudnn_flash_jax": ak.attend("cudnn_flash_jax", q, k, v, q_idx, seg, seg, opts),
        "block_sparse": ak.block_sparse_flash(q, k, v, np.arange(T), np.arange(T), seg, seg, opts, 4, 4),
        "traced_dot_product": ak.attend("dot_product", q, k, v, q_idx, seg, seg, traced),
        "traced_block_sparse": ak.block_sparse_flash(q, k, v, np.arange(T), np.arange(T), seg, seg, traced, 4, 4),
    }

  want = reference(q, k, v, mask)
  for name, got in jit(run)(q, k, v, jnp.asarray(seg), jnp.int32(CHUNK)).items():
    check(got, want, mask)
  # and the chunk matters: unchunked attention differs past the first chunk
  full = reference(q, k, v, brute_mask(idx, seg, np.arange(T), seg, 0))
  assert np.abs(full[:, CHUNK:] - want[:, CHUNK:]).max() > 1e-2
  np.testing.assert_allclose(full[:, :CHUNK], want[:, :CHUNK], atol=1e-6)


def test_block_sparse_gradients_equal_dot_product():
  q, k, v, seg = inputs(seed=1)
  opts = ak.AttentionOptions(chunk=CHUNK)
  w = jax.random.normal(jax.random.key(3), (B, T, N, H))
  q_idx = jnp.broadcast_to(jnp.arange(T), (B, T))

  def grads(q, k, v, seg):
    dot = lambda q, k, v: jnp.sum(ak.attend("dot_product", q, k, v, q_idx, seg, seg, opts) * w)
    sparse = lambda q, k, v: jnp.sum(ak.block_sparse_flash(q, k, v, np.arange(T), np.arange(T), seg, seg, opts,
                                                           4, 4) * w)
    return [jax.grad(f, argnums=(0, 1, 2))(q, k, v) for f in (dot, sparse)]

  want, got = jit(grads)(q, k, v, jnp.asarray(seg))
  for g, d in zip(got, want):
    np.testing.assert_allclose(g, d, atol=1e-5)


def test_block_sparse_skips_key_blocks_outside_the_chunk():
  # chunk 16, blocks of 8: query block i sees key blocks from the start of its chunk up to itself
  blocks = ak.needed_key_blocks(np.arange(64), np.arange(64), 0, 8, 8, chunk=16)
  assert [list(js) for js in blocks] == [list(range(2 * (i // 2), i + 1)) for i in range(8)]
  # a chunk that does not align with the blocks keeps every block holding part of a query's chunk
  blocks = ak.needed_key_blocks(np.arange(32), np.arange(32), 0, 8, 8, chunk=12)
  assert [list(js) for js in blocks] == [[0], [0, 1], [1, 2], [3]]
  # every needed-block list is a superset of the brute-force pairs
  perm = permutation(64, 2, "dual_chunk_swap")
  for q_idx, kv_idx in ((np.arange(64), np.arange(64)), (perm, perm)):
    mask = brute_mask(q_idx[None], np.ones((1, 64)), kv_idx, np.ones((1, 64)), 12)[0]
    for i, js in enumerate(ak.needed_key_blocks(q_idx, kv_idx, 0, 8, 8, chunk=12)):
      needed = {s // 8 for s in np.flatnonzero(mask[i * 8:(i + 1) * 8].any(0))}
      assert needed <= set(js.tolist()), (i, needed, js)


def test_kv_cache_decode_indices():
  """A cache of S slots, rows at different fill levels: T new queries at slots index .. index+T-1."""
  S, Tq = 32, 3
  kq, kk, kv = jax.random.split(jax.random.key(4), 3)
  q = jax.random.normal(kq, (B, Tq, N, H))
  k, v = jax.random.normal(kk, (B, S, K, H)), jax.random.normal(kv, (B, S, K, H))
  index = np.array([11, 20])
  kv_seg = (np.arange(S)[None] < (index + Tq)[:, None]).astype(np.int32)  # written slots (incl. this call's)
  q_idx = index[:, None] + np.arange(Tq)
  q_seg = np.ones((B, Tq), np.int32)
  mask = brute_mask(q_idx, q_seg, np.arange(S), kv_seg, CHUNK)
  opts = ak.AttentionOptions(chunk=CHUNK)

  def run(q, k, v, q_idx, q_seg, kv_seg):
    return [ak.attend(name, q, k, v, q_idx, q_seg, kv_seg, opts, block_size=8) for name in ("dot_product", "flash")]

  want = reference(q, k, v, mask)
  for got in jit(run)(q, k, v, jnp.asarray(q_idx), jnp.asarray(q_seg), jnp.asarray(kv_seg)):
    check(got, want, mask)


def test_load_balanced_token_order():
  """Inputs reordered for 2 context shards: masks compare original indices, outputs equal the unreordered ones."""
  q, k, v, seg = inputs(seed=5)
  seg = np.ones((B, T), np.int32)
  seg[0, 13:] = 2
  idx = np.broadcast_to(np.arange(T), (B, T))
  want = reference(q, k, v, brute_mask(idx, seg, np.arange(T), seg, CHUNK))
  perm = permutation(T, 2, "dual_chunk_swap")
  opts = ak.AttentionOptions(chunk=CHUNK)

  def run(q, k, v, seg):
    q_idx = jnp.broadcast_to(jnp.asarray(perm), (B, T))
    out = {name: ak.attend(name, q, k, v, q_idx, seg, seg, opts, block_size=4, kv_idx_S=jnp.asarray(perm))
           for name in ("dot_product", "flash")}
    out["block_sparse"] = ak.block_sparse_flash(q, k, v, perm, perm, seg, seg, opts, 4, 4)
    for kernel in ("dot_product", "flash"):  # the layer-level entry: the spec's token order
      spec = ModelSpec(attention=kernel, context_load_balance_shards=2, flash_block_q=4, flash_block_size=4)
      out[f"self_attention_{kernel}"] = context_attention.self_attention(q, k, v, seg, spec, opts)
    return out

  got = jit(run)(q[:, perm], k[:, perm], v[:, perm], jnp.asarray(seg[:, perm]))
  for name, out in got.items():
    np.testing.assert_allclose(np.asarray(out), want[:, perm], atol=2e-5, err_msg=name)
