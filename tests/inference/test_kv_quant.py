"""Quantized KV cache (quantize_kvcache, kv_quant_dtype, kv_quant_axis): the quantizer's error bound, decode
through the engine over the quantized cache equal to a full forward whose attention reads the same
quantized-then-dequantized keys and values (prefill, generate, chunked prefill, the paged cache), logits close to
the float cache, cache bytes, and a bad axis refused."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from maxtext_like.config import load_config
from maxtext_like.inference.batching import Batcher, Request
from maxtext_like.inference.engine import Engine
from maxtext_like.inference.loading import load_model
from maxtext_like.models import ModelSpec, build_model
from maxtext_like.models.kv_cache import KV_QUANT_DTYPES, KVQuant, dequantize, quantize
from maxtext_like.models.ptq import tree_bytes
from maxtext_like.runtime.model_spec import model_spec

from parity_cases import GEMMA_SPECS

TINY = ["override_model_config=true", "base_emb_dim=64", "base_num_query_heads=4", "base_num_kv_heads=2", "head_dim=16",
        "base_mlp_dim=128", "base_num_decoder_layers=2", "vocab_size=256", "max_target_length=48", "dtype=float32",
        "max_prefill_predict_length=16", "per_device_batch_size=2", "run_name=kvq"]
# relative error of the logits against the float cache: measured ~0.4% (int8), ~2% (fp8), ~7% (int4)
REL_ERROR_BOUND = {"int8": 0.02, "fp8": 0.06, "int4": 0.25}
CASES = [("int8", "dkv"), ("int8", "heads_and_dkv"), ("int4", "dkv"), ("int4", "heads_and_dkv"), ("fp8", "dkv")]


def quant_args(dtype, axis):
  return ["quantize_kvcache=true", f"kv_quant_dtype={dtype}", f"kv_quant_axis={axis}"]


@pytest.fixture(scope="module")
def make_cfg(tmp_path_factory):
  out = tmp_path_factory.mktemp("kvq")

  def make(*argv):
    return load_config(["base.yml", *TINY, f"base_output_directory={out}", *argv], env={})
  return make


@pytest.fixture(scope="module")
def float_model(make_cfg):
  return load_model(make_cfg()).model


def quantized_model(make_cfg, float_model, *argv):
  """The float model's parameters under the spec of a quantized-cache config."""
  cfg = make_cfg(*argv)
  spec = model_spec(cfg)
  assert spec.kv_quant is not None and spec.kv_quant.dtype == cfg.quantization.kv_quant_dtype
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: build_model(spec, nnx.Rngs(0))))
  return cfg, nnx.merge(graphdef, nnx.state(float_model))


def prompt(n, seed=0):
  return [int(t) for t in np.random.RandomState(seed).randint(1, 256, size=n)]


@pytest.mark.parametrize("dtype,axis", CASES)
def test_quantizer_error_is_within_half_a_step(dtype, axis):
  x = jax.random.normal(jax.random.key(0), (2, 3, 4, 16)) * jnp.arange(1, 5)[:, None]  # heads of different ranges
  Ks = 4 if axis == "dkv" else 1
  q, s = quantize(x, KV_QUANT_DTYPES[dtype], (Ks, 2), jnp.float32)  # 2 head_dim groups of 8
  assert q.dtype == KV_QUANT_DTYPES[dtype] and s.shape == (2, 3, Ks, 2)
  err = np.abs(np.asarray(dequantize(q, s) - x)).reshape(2, 3, 4, 2, 8)
  step = np.broadcast_to(np.asarray(s)[..., None], (2, 3, 4, 2, 8))
  if dtype == "fp8":  # 3 mantissa bits: half an ulp relative, or the smallest subnormal step
    assert np.all(err <= np.abs(np.asarray(x)).reshape(err.shape) / 16 + step * 2.0 ** -9 + 1e-7)
  else:
    assert np.all(err <= step / 2 + 1e-6)
  qmax = np.abs(np.asarray(q.astype(jnp.float32))).reshape(2, 3, 4, 2, 8).max(axis=(2, 4) if Ks == 1 else 4)
  assert np.all(qmax == float(jnp.finfo(q.dtype).max if dtype == "fp8" else jnp.iinfo(q.dtype).max))  # absmax


@pytest.mark.parametrize("dtype,axis", [("int8", "dkv"), ("int4", "heads_and_dkv"), ("fp8", "dkv")])
def test_engine_decode_equals_full_forward_over_the_quantized_cache(make_cfg, float_model, dtype, axis):
  """Prefill + greedy generate through the engine ≡ one forward over prompt + generated tokens whose attention
  reads the quantized-then-dequantized cache (each token's scales depend on that token only); logits near float."""
  cfg, model = quantized_model(make_cfg, float_model, *quant_args(dtype, axis))
  engine = Engine(cfg, model)
  params = engine.load_params()
  p = prompt(9)
  (seqs,) = Batcher(engine, params).run([Request(p, max_tokens=6)])
  toks = seqs[0].tokens
  state = engine.init_decode_state()
  assert state.cache.k_LBSKH[0].dtype == KV_QUANT_DTYPES[dtype]  # one buffer per layer
  assert state.cache.k_scale_LBSKJ[0].shape[2] == (2 if axis == "dkv" else 1)

  seq = jnp.asarray([p + toks[:-1]])
  full, cache = model.prefill(seq, max_length=48)  # writes every token quantized, attends over the dequantized cache
  full = np.asarray(full)[0, len(p) - 1:]
  assert toks == [int(t) for t in np.argmax(full, -1)]
  np.testing.assert_allclose(seqs[0].log_probs, [float(jax.nn.log_softmax(r)[t]) for r, t in zip(full, toks)],
                             atol=1e-4)
  ref = np.asarray(float_model(seq))[0, len(p) - 1:]
  rel = float(np.linalg.norm(full - ref) / np.linalg.norm(ref))
  print(f"kv {dtype}/{axis}: logits relative error vs float cache {rel:.4f}")
  assert 0 < rel < REL_ERROR_BOUND[dtype]


def test_chunked_prefill_equals_one_shot(make_cfg, float_model, dtype="int4", axis="heads_and_dkv"):
  cfg, model = quantized_model(make_cfg, float_model, *quant_args(dtype, axis))
  one = Engine(cfg, model)
  chunked = Engine(make_cfg(*quant_args(dtype, axis), "use_chunked_prefill=true", "prefill_chunk_size=4"), model)
  params = one.load_params()
  p = prompt(15, seed=5)
  a, b = chunked.prefill_ids(params, p), one.prefill_ids(params, p)
  np.testing.assert_allclose(np.asarray(a.logits), np.asarray(b.logits), atol=1e-5, rtol=1e-5)
  for x, y in zip(a.cache.arrays(), b.cache.arrays()):
    assert x.dtype == y.dtype and len(a.cache.arrays()) == 4
    np.testing.assert_allclose(np.asarray(x.astype(jnp.float32))[:, :, :15],
                               np.asarray(y.astype(jnp.float32))[:, :, :15], atol=1e-6)


@pytest.mark.parametrize("dtype,axis", [("int8", "heads_and_dkv"), ("int4", "dkv")])
def test_paged_and_contiguous_quantized_caches_give_identical_tokens(make_cfg, float_model, dtype, axis):
  cfg, model = quantized_model(make_cfg, float_model, *quant_args(dtype, axis))
  contiguous = Engine(cfg, model)
  paged = Engine(make_cfg(*quant_args(dtype, axis), "attention=paged", "pagedattn_tokens_per_page=4",
                          "pagedattn_num_pages=40"), model)
  assert paged.init_decode_state().cache.k_scale_LBSKJ[0].shape[:2] == (40, 4)  # a pool of scale pages
  reqs = [Request(prompt(n, seed=n), max_tokens=m) for n, m in ((3, 7), (11, 5), (6, 9))]
  got = Batcher(paged, paged.load_params()).run(reqs)
  want = Batcher(contiguous, contiguous.load_params()).run(reqs)
  assert [s[0].tokens for s in got] == [s[0].tokens for s in want]


def test_sharded_quantized_engine_equals_one_device(make_cfg, float_model):
  """Values and scales placed by the cache_* rules on 8 fake devices (a heads_and_dkv scale has no heads axis to
  split): the same tokens as one device."""
  from maxtext_like.config.resolve import resolve
  from maxtext_like.training.state import make_mesh
  mesh_keys = ["ici_fsdp_parallelism=2", "ici_tensor_parallelism=2", "ici_data_parallelism=2",
               "per_device_batch_size=0.5"]
  cfg, model = quantized_model(make_cfg, float_model, *quant_args("int8", "heads_and_dkv"), *mesh_keys)
  sharded = Engine(cfg, model, mesh=make_mesh(resolve(cfg, jax.device_count())))
  one = Engine(make_cfg(*quant_args("int8", "heads_and_dkv"), "per_device_batch_size=4"), model)
  reqs = [Request(prompt(n, seed=n), max_tokens=6) for n in (5, 13, 8)]
  got = Batcher(sharded, sharded.load_params()).run(reqs)
  assert [s[0].tokens for s in got] == [s[0].tokens for s in Batcher(one, one.load_params()).run(reqs)]
  scale = sharded.init_decode_state().cache.k_scale_LBSKJ[0]
  assert scale.shape[2] == 1 and len(scale.sharding.device_set) > 1
  cfg_dkv, model_dkv = quantized_model(make_cfg, float_model, *quant_args("int8", "dkv"), *mesh_keys)
  dkv = Engine(cfg_dkv, model_dkv, mesh=make_mesh(resolve(cfg_dkv, jax.device_count()))).init_decode_state().cache
  assert dkv.k_scale_LBSKJ[0].sharding.spec[2] is not None  # split over kv heads like the values


def assert_incremental_equals_prefill(spec, *, seed, length, split):
  """Prefill of `split` tokens then one decode step per token gives the logits of one prefill of all `length`
  tokens (atol 1e-5); returns that full prefill's cache."""
  graphdef, state = nnx.split(build_model(spec, nnx.Rngs(0)))
  prefill = jax.jit(lambda t: nnx.merge(graphdef, state).prefill(t, max_length=16))
  step = jax.jit(lambda t, c: nnx.merge(graphdef, state).decode_step(t, c))
  toks = jax.random.randint(jax.random.key(seed), (2, length), 1, spec.vocab_size)
  full, cache = prefill(toks)
  logits, c = prefill(toks[:, :split])
  steps = [logits]
  for t in range(split, length):
    logits, c = step(toks[:, t:t + 1], c)
    steps.append(logits)
  np.testing.assert_allclose(np.concatenate(steps, 1), full, atol=1e-5)
  return cache


def test_gemma2_pairs_quantize_each_layer_of_the_shared_entry():
  """gemma2 keeps a [local, global] pair in one entry of 2 * head_dim: one scale group per layer."""
  spec = GEMMA_SPECS["gemma2"].replace(num_decoder_layers=1, kv_quant=KVQuant("int8", "dkv"))
  cache = assert_incremental_equals_prefill(spec, seed=1, length=12, split=9)
  assert cache.k_LBSKH.shape[-1] == 2 * spec.head_dim and cache.k_scale_LBSKJ.shape[-1] == 2
  scales = np.asarray(cache.k_scale_LBSKJ)[:, :, :12]
  assert np.all(scales > 0) and not np.allclose(scales[..., 0], scales[..., 1])  # each layer its own scale


def test_mla_latent_cache_is_quantized_the_same_way():
  """deepseek's absorbed MLA caches the compressed latent and the RoPE key (one kv 'head'): quantized likewise."""
  from maxtext_like.models.moe import MoeSpec
  spec = ModelSpec(decoder_block="deepseek", vocab_size=96, emb_dim=32, head_dim=20, mlp_dim=48, num_decoder_layers=1,
                   attention_type="mla", q_lora_rank=12, kv_lora_rank=16, qk_nope_head_dim=12, qk_rope_head_dim=8,
                   v_head_dim=10, mla_naive_kvcache=False, remat_policy="none", attention="dot_product",
                   moe=MoeSpec(num_experts=4, num_experts_per_tok=2, mlp_dim=16, first_num_dense_layers=1),
                   kv_quant=KVQuant("int8", "heads_and_dkv"))  # one dense layer: MLA without MoE compile time
  cache = assert_incremental_equals_prefill(spec, seed=2, length=10, split=8)
  assert cache.k_LBSKH.dtype == jnp.int8 and cache.k_LBSKH.shape[3] == 1


def default_cache_bytes(*argv) -> int:
  """Bytes of the default model's decode cache at max_target_length=1024 and 4 slots (shapes only)."""
  cfg = load_config(["base.yml", "max_target_length=1024", "per_device_batch_size=4", *argv], env={})
  spec = model_spec(cfg)
  return tree_bytes(jax.eval_shape(lambda: nnx.eval_shape(lambda: build_model(spec, nnx.Rngs(0))).init_cache(4)))


def test_int8_cache_is_at_most_30_percent_of_float32():
  f32 = default_cache_bytes("dtype=float32")
  int8 = default_cache_bytes("dtype=float32", *quant_args("int8", "dkv"))
  int4 = default_cache_bytes("dtype=float32", *quant_args("int4", "dkv"))
  assert int8 <= 0.30 * f32 and int4 < int8, (f32, int8, int4)


def test_quantized_cache_without_an_axis_is_refused():
  cmd = [sys.executable, "-m", "maxtext_like.decode", "base.yml", "quantize_kvcache=true", "kv_quant_axis="]
  r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
  assert r.returncode == 2, r.stderr
  assert "kv_quant_axis" in r.stderr + r.stdout and "Traceback" not in r.stderr


def test_microbenchmark_cache_size_counts_quantized_bytes(tmp_path, capsys):
  from maxtext_like import inference_microbenchmark
  L, B, S, K, H = 2, 2, 32, 2, 16
  log = tmp_path / "int4.json"
  argv = ["base.yml", *TINY, "max_target_length=32", "enable_tensorboard=false", f"base_output_directory={tmp_path}",
          "inference_microbenchmark_stages=generate", "inference_microbenchmark_loop_iters=1",
          "inference_microbenchmark_prefill_lengths=8", "max_prefill_predict_length=8", "vocab_size=4096",
          f"inference_microbenchmark_log_file_path={log}", *quant_args("int4", "dkv")]
  assert inference_microbenchmark.main(argv) == 0, capsys.readouterr().err
  reported = json.loads(log.read_text())["sizes"]["cache_size_in_gb"] * 1e9
  rows = B * S * 4 + B * 4  # segment ids and lengths
  assert round(reported) == L * B * S * 2 * K * (H // 2 + 4) + rows  # half a byte per value, float32 scales
