"""The CPU decode kernel (`maxtext_like.kernels`): equal to XLA's matmul, used by the engine's generate step only
where it applies, and optional (a failed build falls back to XLA with the reason kept)."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from maxtext_like import kernels
from maxtext_like.config import load_config
from maxtext_like.inference.batching import Batcher, Request
from maxtext_like.inference import sampling
from maxtext_like.inference.engine import Engine
from maxtext_like.inference.loading import load_model
from maxtext_like.models.linears import DenseGeneral

TINY = ["override_model_config=true", "base_emb_dim=64", "base_num_query_heads=4", "base_num_kv_heads=2", "head_dim=16",
        "base_mlp_dim=128", "base_num_decoder_layers=2", "vocab_size=300", "max_target_length=40", "dtype=float32",
        "max_prefill_predict_length=16", "per_device_batch_size=4", "run_name=kernels"]
TARGET = "maxtext_like_small_matmul"


@pytest.fixture(scope="module")
def make_cfg(tmp_path_factory):
  out = tmp_path_factory.mktemp("kernels")
  return lambda *argv: load_config(["base.yml", *TINY, f"base_output_directory={out}", *argv], env={})


def test_the_kernel_builds_here():
  assert kernels.available(), kernels.unavailable_reason()


@pytest.mark.parametrize("K,N", [(256, 32000), (64, 128), (37, 19), (1000, 300), (8, 4096)])
def test_small_matmul_equals_xla(K, N):
  """Every row count 1..8, sizes that split over threads and sizes that do not, K not a multiple of 8."""
  w = jax.random.normal(jax.random.key(K), (K, N), jnp.float32)
  for M in range(1, kernels.MAX_ROWS + 1):
    x = jax.random.normal(jax.random.key(M), (M, K), jnp.float32)
    got = jax.jit(kernels.small_matmul)(x, w)
    want = jnp.dot(x, w, precision="highest")
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-5, atol=2e-5 * np.sqrt(K))


def test_small_matmuls_equal_separate_matmuls():
  """Several weights of one input in one call (q, k, v; a gated MLP's two): each result equals its own matmul, for
  weights that split over threads and weights that do not."""
  ws = [jax.random.normal(jax.random.key(i), (256, n), jnp.float32) for i, n in enumerate((256, 64, 64, 1024, 3))]
  for M in (1, 4, 8):
    x = jax.random.normal(jax.random.key(M), (M, 256), jnp.float32)
    got = jax.jit(kernels.small_matmuls)(x, ws)
    assert len(got) == len(ws)
    for g, w in zip(got, ws):
      np.testing.assert_allclose(np.asarray(g), np.asarray(jnp.dot(x, w, precision="highest")), rtol=2e-5, atol=4e-4)
  with pytest.raises(ValueError, match="weights w"):
    kernels.small_matmuls(x, [ws[0], jnp.ones((255, 4))])


@pytest.mark.parametrize("B,V", [(1, 32000), (4, 32000), (3, 17), (8, 1000), (2, 151936)])
def test_logits_stats_equal_argmax_and_logsumexp(B, V):
  """Rows that split over threads and rows that do not; the exponential spans the float32 range (logits * 20)."""
  x = 20 * jax.random.normal(jax.random.key(V + B), (B, V), jnp.float32)
  idx, lse = jax.jit(kernels.logits_stats)(x)
  np.testing.assert_array_equal(np.asarray(idx), np.asarray(jnp.argmax(x, axis=-1)))
  np.testing.assert_allclose(np.asarray(lse), np.asarray(jax.nn.logsumexp(x, axis=-1)), rtol=1e-6, atol=1e-6)


def test_logits_stats_ties_nans_and_infinities():
  """The first of equal largest values (jnp.argmax); a NaN row gives V - 1 and a NaN lse, as sampling.argmax and
  token_log_probs do; an infinite largest value gives a NaN lse, as token_log_probs does."""
  x = jnp.asarray([[1, 3, 3, 2], [np.nan, 1, 2, 3], [1, np.inf, 2, 3], [-np.inf] * 4, [-200, -100, -1e4, -150]],
                  jnp.float32)
  idx, lse = kernels.logits_stats(x)
  np.testing.assert_array_equal(np.asarray(idx), np.asarray(sampling.argmax(x)))
  np.testing.assert_array_equal(np.asarray(idx), [1, 3, 1, 0, 1])
  assert np.isnan(np.asarray(lse)[1:4]).all()
  np.testing.assert_allclose(np.asarray(lse)[[0, 4]], np.asarray(jax.nn.logsumexp(x[jnp.asarray([0, 4])], axis=-1)),
                             rtol=1e-6)
  want_lp = np.asarray(sampling.token_log_probs(x, idx))
  got_lp = np.asarray(sampling.token_log_probs(x, idx, lse))
  np.testing.assert_array_equal(np.isnan(got_lp), np.isnan(want_lp))


def test_sampling_with_the_stats_equals_sampling_without():
  """sample_rows given the kernel's argmax and token_log_probs given its lse: the same tokens and log-probs as
  computing both in XLA, for greedy and sampled rows alike (the same keys)."""
  x = 4 * jax.random.normal(jax.random.key(0), (4, 5000), jnp.float32)
  temperature, top_k, top_p = jnp.asarray([0.0, 0.7, 1.0, 0.0]), jnp.asarray([0, 40, 0, 0]), jnp.asarray([-1.0, 0.9, 0.5, -1.0])
  key = jax.random.split(jax.random.PRNGKey(1), 4)  # raw [4, 2]: one key per row
  idx, lse = kernels.logits_stats(x)
  want = sampling.sample_rows(x, key, temperature, top_k, top_p, greedy_only=False)
  got = sampling.sample_rows(x, key, temperature, top_k, top_p, greedy_only=False, greedy_B=idx)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  np.testing.assert_allclose(np.asarray(sampling.token_log_probs(x, got, lse)),
                             np.asarray(sampling.token_log_probs(x, want)), rtol=1e-6, atol=1e-6)


def test_logits_stats_refuses_what_it_does_not_compute():
  with pytest.raises(ValueError, match="float32"):
    kernels.logits_stats(jnp.ones((2, 4), jnp.bfloat16))


def test_small_matmul_refuses_what_it_does_not_compute():
  with pytest.raises(ValueError, match="float32 x"):
    kernels.small_matmul(jnp.ones((9, 4)), jnp.ones((4, 4)))
  with pytest.raises(ValueError, match="float32 x"):
    kernels.small_matmul(jnp.ones((2, 4), jnp.bfloat16), jnp.ones((4, 4), jnp.bfloat16))


def _xla_few_queries(q, keys, values, mask, opts, sinks_N, new):
  """`_few_queries` as XLA computes it (no kernel), for reference."""
  from maxtext_like.models.attention_kernels import _few_queries
  return jax.jit(lambda q, k, v: _few_queries(q, k, v, mask, opts, sinks_N, new=new))(q, keys, values)


@pytest.mark.parametrize("B,T,K,G,H,Hv,S,soft_cap,sinks,new", [
    (1, 1, 4, 1, 64, 64, 1088, None, False, True),  # the probe model's decode step
    (1, 2, 1, 4, 64, 64, 600, None, True, False),  # multi-query; one row, its positions split between threads
    (3, 2, 2, 3, 16, 8, 37, 30.0, True, True),  # query groups, two query positions, values narrower than keys (MLA)
    (4, 3, 4, 2, 24, 24, 100, None, False, False)])  # the third row sees nothing
def test_decode_attention_equals_the_xla_path(B, T, K, G, H, Hv, S, soft_cap, sinks, new):
  """The fused kernel gives XLA's few-query attention: masks with holes, rows of different lengths (one empty), the
  step's own new entries (some masked), sinks and soft-capping; a query that may see nothing gets zeros."""
  from maxtext_like.models.attention_kernels import AttentionOptions
  ks = jax.random.split(jax.random.key(S), 8)
  q = jax.random.normal(ks[0], (B, T, K, G, H))
  keys, values = jax.random.normal(ks[1], (B, S, K, H)), jax.random.normal(ks[2], (B, S, K, Hv))
  length = jnp.asarray([S, S // 3, 0, 5][:B])
  mask = (jnp.arange(S)[None, None, :] < length[:, None, None]) & (jax.random.uniform(ks[3], (B, T, S)) < 0.8)
  extra = (jax.random.normal(ks[4], (B, 2, K, H)), jax.random.normal(ks[5], (B, 2, K, Hv)),
           jax.random.uniform(ks[6], (B, T, 2)) < 0.7) if new else None
  sinks_N = jax.random.normal(ks[7], (K * G,)) if sinks else None
  limit = jnp.max(jnp.where(jnp.any(mask, axis=1), jnp.arange(1, S + 1), 0), axis=-1)
  out = jax.jit(lambda q, k, v: kernels.decode_attention(q, k, v, limit, mask, new=extra, sinks_N=sinks_N,
                                                         soft_cap=soft_cap))(q, keys, values)
  want = _xla_few_queries(q * H ** 0.5, keys, values, mask, AttentionOptions(soft_cap=soft_cap), sinks_N, extra)
  sees = np.asarray(mask.any(-1) | (extra[2].any(-1) if new else False))[:, :, None, None, None] | sinks
  assert out.shape == (B, T, K, G, Hv)
  np.testing.assert_allclose(np.asarray(out), np.where(sees, np.asarray(want), 0.0), rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="float32"):
    kernels.decode_attention(q.astype(jnp.bfloat16), keys, values, limit, mask)


def test_paged_decode_attention_reads_the_pages_in_place():
  """A page pool read through the page table equals the contiguous kernel on the gathered pages; table entries
  past a row's pages point at scratch page 0, which the limit keeps unread."""
  B, K, G, H, page, M, P = 3, 2, 2, 16, 4, 5, 12
  ks = jax.random.split(jax.random.key(5), 3)
  pool_k, pool_v = jax.random.normal(ks[0], (P, page, K, H)), jax.random.normal(ks[1], (P, page, K, H))
  table = jnp.asarray([[3, 7, 1, 0, 0], [2, 4, 5, 6, 8], [9, 0, 0, 0, 0]], jnp.int32)
  limit = jnp.asarray([10, 20, 3], jnp.int32)
  mask = jnp.arange(M * page)[None, None, :] < limit[:, None, None]
  q = jax.random.normal(ks[2], (B, 1, K, G, H))
  gathered = lambda pool: pool[table].reshape(B, M * page, K, H)  # noqa: E731
  np.testing.assert_allclose(np.asarray(kernels.decode_attention(q, pool_k, pool_v, limit, mask, table)),
                             np.asarray(kernels.decode_attention(q, gathered(pool_k), gathered(pool_v), limit, mask)),
                             rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("soft_cap,sinks,new", [(None, False, False), (30.0, True, True), (None, False, True)])
def test_few_query_attention_with_the_kernels_equals_without(soft_cap, sinks, new):
  """The decode path of `dot_product` attention (masking, soft cap, sinks, the step's own new entries) gives the
  same output when its dots go through the kernels."""
  from maxtext_like.models.attention_kernels import AttentionOptions, _few_queries
  B, T, K, G, H, S = 2, 1, 2, 2, 16, 40
  ks = jax.random.split(jax.random.key(7), 6)
  q = jax.random.normal(ks[0], (B, T, K, G, H))
  k, v = jax.random.normal(ks[1], (B, S, K, H)), jax.random.normal(ks[2], (B, S, K, H))
  mask = jnp.arange(S)[None, None, :] < jnp.asarray([25, 40])[:, None, None]
  extra = (jax.random.normal(ks[3], (B, 1, K, H)), jax.random.normal(ks[4], (B, 1, K, H)),
           jnp.ones((B, T, 1), bool)) if new else None
  sinks_N = jax.random.normal(ks[5], (K * G,)) if sinks else None
  opts = AttentionOptions(soft_cap=soft_cap)

  def run():
    return jax.jit(lambda q, k, v: _few_queries(q, k, v, mask, opts, sinks_N, new=extra)).lower(q, k, v)
  plain = run()
  with kernels.decode_matmuls():
    fast = run()
  assert "maxtext_like_decode_attention" in fast.as_text() and "maxtext_like_decode_attention" not in plain.as_text()
  np.testing.assert_allclose(np.asarray(fast.compile()(q, k, v)), np.asarray(plain.compile()(q, k, v)),
                             rtol=1e-5, atol=1e-5)


def _hlo(layer, x):
  return jax.jit(lambda x: layer(x)).lower(x).as_text()


def test_dense_general_uses_the_kernel_only_where_it_applies():
  """Inside `decode_matmuls`, for a float32 matmul of at most 8 rows; never outside it, for more rows, or in
  bfloat16; the result equals the dot_general's."""
  layer = DenseGeneral((16,), (4, 8), ("embed", "heads", "kv"), dtype=jnp.float32, weight_dtype=jnp.float32,
                       rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (2, 3, 16))
  plain = layer(x)
  assert TARGET not in _hlo(layer, x)
  with kernels.decode_matmuls():
    assert TARGET in _hlo(layer, x)  # 6 rows
    np.testing.assert_allclose(np.asarray(layer(x)), np.asarray(plain), rtol=1e-5, atol=1e-5)
    assert TARGET not in _hlo(layer, jnp.ones((3, 3, 16)))  # 9 rows
    bf = DenseGeneral((16,), (8,), ("embed", "mlp"), dtype=jnp.bfloat16, weight_dtype=jnp.float32, rngs=nnx.Rngs(0))
    assert TARGET not in _hlo(bf, x)
  with kernels.decode_matmuls(False):
    assert TARGET not in _hlo(layer, x)


def _engines_with_and_without(make_cfg, *argv):
  """(engine with the kernels, engine without, params, fn(engine, compiled=False) -> its generate step's HLO)."""
  cfg_on, cfg_off = make_cfg(*argv), make_cfg(*argv, "cpu_decode_kernels=false")
  model = load_model(cfg_on).model
  on, off = Engine(cfg_on, model), Engine(cfg_off, model)
  assert on.decode_kernels and not off.decode_kernels
  params = on.load_params()
  state = on.init_decode_state()
  small = state.__class__(**{**state.__dict__, "cache": state.cache.without_arrays()})

  def step_hlo(e, compiled=False):
    lowered = e._fns.generate.lower(params, state.cache.arrays(), small, None, True)
    return lowered.compile().as_text() if compiled else lowered.as_text()
  return on, off, params, step_hlo


def _run_both(on, off, params, seed):
  """Five requests of mixed lengths through each engine's Batcher: (sequences with, sequences without)."""
  rs = np.random.RandomState(seed)
  reqs = [Request([int(t) for t in rs.randint(1, 300, size=n)], max_tokens=m) for n, m in ((5, 20), (13, 9), (2, 17),
                                                                                            (9, 12), (16, 6))]
  a = [s[0] for s in Batcher(on, params).run(reqs)]
  b = [s[0] for s in Batcher(off, off.load_params()).run(reqs)]
  assert [s.tokens for s in a] == [s.tokens for s in b]
  return a, b


def test_the_engine_step_uses_the_kernel_and_gives_the_same_tokens(make_cfg):
  """cpu_decode_kernels=true puts the kernel in the generate step (not in prefill); greedy tokens equal those of
  the engine without it, and log-probs agree to float32 rounding."""
  on, off, params, step_hlo = _engines_with_and_without(make_cfg)
  assert TARGET in step_hlo(on) and TARGET not in step_hlo(off)
  # per layer (TINY has 2) one call for q, k and v, one for wi_0 and wi_1, the out and wo projections; then the
  # unembedding
  assert step_hlo(on).count(f"@{TARGET}(") == 4 * 2 + 1
  assert "maxtext_like_logits_stats" in step_hlo(on) and "maxtext_like_logits_stats" not in step_hlo(off)
  a, b = _run_both(on, off, params, seed=3)
  np.testing.assert_allclose(np.concatenate([s.log_probs for s in a]), np.concatenate([s.log_probs for s in b]),
                             atol=1e-4)


def test_without_the_kernel_the_engine_keeps_xla(make_cfg, monkeypatch):
  monkeypatch.setattr(kernels, "_state", {"ok": False, "reason": "RuntimeError: no C++ compiler found"})
  assert not kernels.available() and "compiler" in kernels.unavailable_reason()
  cfg = make_cfg()
  with pytest.warns(UserWarning, match="no C.. compiler found.*same tokens"):
    assert not Engine(cfg, load_model(cfg).model).decode_kernels


def _fresh_process(tmp_path, **env):
  code = "from maxtext_like import kernels; print(kernels.available()); print(kernels.unavailable_reason())"
  full = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), **env}
  out = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  return out.stdout.splitlines()


def test_build_from_scratch_and_a_failed_build_falls_back(tmp_path):
  """A fresh cache directory builds the library once; a broken compiler leaves `available()` False with the
  compiler's complaint, and nothing raises."""
  assert _fresh_process(tmp_path / "ok") == ["True", "None"]
  assert len(list((tmp_path / "ok" / "maxtext_like" / "kernels").glob("decode_kernels-*.so"))) == 1
  ok, reason = _fresh_process(tmp_path / "bad", CXX="/bin/false")
  assert ok == "False" and "failed" in reason
  ok, reason = _fresh_process(tmp_path / "off", MAXTEXT_LIKE_CPU_KERNELS="0")
  assert ok == "False" and "MAXTEXT_LIKE_CPU_KERNELS=0" in reason


def test_the_paged_step_reads_the_pages_in_place(make_cfg):
  """With the kernels a paged engine's step gathers no page list (without them every layer gathers each row's
  whole page list, every step), and its tokens equal the engine's without the kernels."""
  import re
  on, off, params, step_hlo = _engines_with_and_without(
      make_cfg, "attention=paged", "pagedattn_tokens_per_page=4", "pagedattn_num_pages=48")

  def gathered_rows(e):  # float gathers as big as a layer's [B, S, K, H] view of the cache
    dims = re.findall(r"= f32\[([\d,]+)\]\{[^}]*\} gather\(", step_hlo(e, compiled=True))
    return [d for d in dims if np.prod([int(x) for x in d.split(",")]) >= 4 * 40 * 2 * 16]
  assert gathered_rows(off) and not gathered_rows(on)
  _run_both(on, off, params, seed=4)
