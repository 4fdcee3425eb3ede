"""Attention kernels: dot_product vs a naive loop reference; flash and jax's DPA vs dot_product."""

import numpy as np
import jax
import jax.numpy as jnp
import pytest

from maxtext_like.models import attention_kernels as ak
from models_testlib import jit

B, T, H = 2, 20, 8


def naive_attention(q, k, v, seg, window, soft_cap):
  """Per (b, n, t) loops over keys; the mask is written out as the rules read."""
  q, k, v, seg = map(np.asarray, (q, k, v, seg))
  _, _, N, _ = q.shape
  G = N // k.shape[2]
  out = np.zeros(q.shape, np.float64)
  for b in range(q.shape[0]):
    for n in range(N):
      for t in range(q.shape[1]):
        allowed = [s for s in range(t + 1) if seg[b, s] == seg[b, t] and (window == 0 or t - s < window)]
        logits = np.array([q[b, t, n] @ k[b, s, n // G] / np.sqrt(H) for s in allowed], np.float64)
        if soft_cap:
          logits = soft_cap * np.tanh(logits / soft_cap)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        out[b, t, n] = sum(pi * v[b, s, n // G] for pi, s in zip(p, allowed))
  return out


def make_inputs(num_heads, num_kv_heads, packed, seed=0):
  kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
  q = jax.random.normal(kq, (B, T, num_heads, H))
  k = jax.random.normal(kk, (B, T, num_kv_heads, H))
  v = jax.random.normal(kv, (B, T, num_kv_heads, H))
  if packed:  # row 0: segments 1,1,..,2,2,..,0 padding; row 1: one segment
    seg = np.ones((B, T), np.int32)
    seg[0, 7:15] = 2
    seg[0, 15:] = 0
  else:
    seg = np.ones((B, T), np.int32)
  return q, k, v, jnp.asarray(seg)


def run(kernel, q, k, v, seg, opts, block_size=8):
  q_idx = jnp.broadcast_to(jnp.arange(T), (B, T))
  return ak.attend(kernel, q, k, v, q_idx, seg, seg, opts, block_size=block_size)


CASES = [  # (N, K, window, soft_cap, packed)
    (4, 2, 0, None, False),
    (4, 2, 5, None, True),
    (4, 1, 0, 3.0, True),
    (4, 1, 6, 2.0, False),
    (4, 4, 3, 5.0, True),
]


@pytest.mark.parametrize("N,K,window,soft_cap,packed", CASES[:3])
def test_dot_product_matches_naive_reference(N, K, window, soft_cap, packed):
  q, k, v, seg = make_inputs(N, K, packed)
  opts = ak.AttentionOptions(window=window, soft_cap=soft_cap)
  got = jit(lambda q, k, v, seg: run("dot_product", q, k, v, seg, opts))(q, k, v, seg)
  want = naive_attention(q, k, v, seg, window, soft_cap)
  real = np.asarray(seg) != 0  # padding rows attend padding only; no reference semantics needed
  np.testing.assert_allclose(np.asarray(got)[real], want[real], atol=1e-5)


def test_sliding_window_changes_result():
  q, k, v, seg = make_inputs(4, 2, packed=False)
  full, local = jit(lambda q, k, v, seg: [run("dot_product", q, k, v, seg, ak.AttentionOptions(window=w))
                                           for w in (0, 4)])(q, k, v, seg)
  np.testing.assert_allclose(full[:, :4], local[:, :4], atol=1e-6)  # window covers the whole prefix
  assert np.abs(np.asarray(full[:, 4:] - local[:, 4:])).max() > 1e-2


def test_mask_rules():
  q_idx = jnp.array([[0, 1, 2, 3]])
  seg = jnp.array([[1, 1, 2, 2]])
  mask = np.asarray(ak.make_mask(q_idx, seg, jnp.arange(4), seg, window=0))[0]
  want = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]], bool)
  np.testing.assert_array_equal(mask, want)
  ones = jnp.ones((1, 4), jnp.int32)
  mask = np.asarray(ak.make_mask(q_idx, ones, jnp.arange(4), ones, window=2))[0]
  np.testing.assert_array_equal(mask, np.tril(np.ones((4, 4), bool)) & ~np.tril(np.ones((4, 4), bool), -2))


@pytest.fixture(scope="module")
def flash_and_dot_product():
  """{case: {kernel: (out, grads wrt q, k, v)}} for every case, from one jit (one compile)."""
  inputs = {case: make_inputs(case[0], case[1], case[4], seed=1) for case in CASES}
  weights = {case: jax.random.normal(jax.random.key(2), (B, T, case[0], H)) for case in CASES}

  def all_cases(inputs, weights):
    results = {}
    for case, (q, k, v, seg) in inputs.items():
      opts = ak.AttentionOptions(window=case[2], soft_cap=case[3])
      results[case] = {}
      for kernel in ("flash", "dot_product", "block_sparse"):
        def loss(q, k, v):
          out = (ak.block_sparse_flash(q, k, v, np.arange(T), np.arange(T), seg, seg, opts, block_q=8, block_kv=8)
                 if kernel == "block_sparse" else run(kernel, q, k, v, seg, opts, block_size=8))
          return jnp.sum(out * weights[case]), out
        (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v)
        results[case][kernel] = (out, grads)
    return results

  return jit(all_cases)(inputs, weights)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "N{}-K{}-window{}-cap{}-packed{}".format(*c))
@pytest.mark.parametrize("kernel", ["flash", "block_sparse"])
def test_flash_equals_dot_product_values_and_grads(case, kernel, flash_and_dot_product):
  (out_flash, grads_flash), (out_dot, grads_dot) = (flash_and_dot_product[case][k] for k in (kernel, "dot_product"))
  np.testing.assert_allclose(out_flash, out_dot, atol=1e-5)
  for gf, gd in zip(grads_flash, grads_dot):
    np.testing.assert_allclose(gf, gd, atol=1e-5)


def test_block_sparse_flash_skips_blocks_no_query_sees():
  causal = ak.needed_key_blocks(np.arange(64), np.arange(64), 0, 8, 8)
  assert [list(js) for js in causal] == [list(range(i + 1)) for i in range(8)]  # 36 of 64 blocks
  window = ak.needed_key_blocks(np.arange(64), np.arange(64), 8, 8, 8)
  assert [list(js) for js in window] == [[0]] + [[i - 1, i] for i in range(1, 8)]
  # Load-balanced order over 2 shards (dual chunk swap): each shard's queries need the same number of blocks.
  from maxtext_like.models.load_balance import permutation
  perm = permutation(64, 2, "dual_chunk_swap")
  work = [sum(len(js) for js in ak.needed_key_blocks(perm[c * 32:(c + 1) * 32], perm, 0, 8, 8)) for c in range(2)]
  plain = [sum(len(js) for js in ak.needed_key_blocks(np.arange(64)[c * 32:(c + 1) * 32], np.arange(64), 0, 8, 8))
           for c in range(2)]
  assert work[0] == work[1] and plain == [10, 26]


def test_block_sparse_flash_on_reordered_tokens():
  q, k, v, seg = make_inputs(4, 2, packed=True)
  opts = ak.AttentionOptions(window=6)
  perm = np.array([0, 1, 2, 3, 4, 15, 16, 17, 18, 19, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14])
  want = np.asarray(jit(lambda q, k, v, seg: run("dot_product", q, k, v, seg, opts))(q, k, v, seg))[:, perm]
  got = jit(lambda q, k, v, seg: ak.block_sparse_flash(q, k, v, perm, perm, seg, seg, opts, block_q=4, block_kv=4))(
      q[:, perm], k[:, perm], v[:, perm], seg[:, perm])
  real = np.asarray(seg)[:, perm] != 0
  np.testing.assert_allclose(np.asarray(got)[real], want[real], atol=1e-5)


def test_jax_dot_product_attention_matches_dot_product():
  q, k, v, seg = make_inputs(4, 2, packed=True)
  opts = ak.AttentionOptions(window=5)
  jax_dpa, dot = jit(lambda q, k, v, seg: [run(name, q, k, v, seg, opts)
                                           for name in ("cudnn_flash_jax", "dot_product")])(q, k, v, seg)
  np.testing.assert_allclose(jax_dpa, dot, atol=1e-5)
  with pytest.raises(ValueError, match="soft_cap"):
    jax.eval_shape(lambda: run("cudnn_flash_jax", q, k, v, seg, ak.AttentionOptions(soft_cap=2.0)))


def test_autoselect_picks_flash_for_long_keys():
  assert ak.resolve_kernel("autoselected", 128) == "dot_product"
  assert ak.resolve_kernel("autoselected", ak.AUTOSELECT_FLASH_MIN_LENGTH) == "flash"
  with pytest.raises(ValueError, match="allowed"):
    ak.resolve_kernel("splash", 128)
