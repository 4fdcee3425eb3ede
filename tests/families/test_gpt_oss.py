"""gpt-oss against transformers' GptOssForCausalLM (eager, f32) on the parity table's tiny model: logits with the
other MoE dispatches, KV-cache decode == full forward, HF mapping round trip, a tiny config trains (gradients reach
sinks and biases). Logits, greedy generation and preset counts: test_parity.py; conversion:
convert/test_convert_gpt_oss_llama4.py."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

import parity_cases as pc
from hf_parity_lib import hf_config, hf_logits, hf_tensors, our_cached_logits, our_logits, our_model, tokens
from maxtext_like.models.hf_registry import get_hf_mapping

MEASURED: dict[str, float] = {}


@pytest.fixture(scope="module")
def case():
  hf = pc.hf_model("gpt_oss", "gpt_oss")
  return hf, pc.spec("gpt_oss", "gpt_oss"), hf_tensors(hf)


@pytest.mark.parametrize("scan,dispatch", [(False, "capacity"), (True, "ragged_dot")])
def test_logits_match_transformers_other_dispatch(case, scan, dispatch, monkeypatch):
  """Besides the dropless grouped matmul in blocks (families/test_parity.py): jax.lax.ragged_dot, or the capacity
  einsums (sparse_matmul=false, nothing dropped); each adds the expert biases its own way."""
  from maxtext_like.models import moe
  hf, spec, tensors = case
  if dispatch == "capacity":
    spec = spec.replace(moe=spec.moe.replace(sparse_matmul=False, capacity_factor=-1.0))
  else:
    monkeypatch.setattr(moe, "GMM_IMPL", dispatch)
  toks = tokens(2, 24, vocab=spec.vocab_size)  # > sliding_window: the window matters
  ref = hf_logits(hf, toks)
  diff = float(np.abs(our_logits(our_model(spec, tensors, scan_layers=scan), toks) - ref).max())
  MEASURED[f"scan={scan} {dispatch}"] = diff
  print(f"gpt-oss scan={scan} {dispatch}: max |logits diff| = {diff:.2e} (logits scale {np.abs(ref).max():.1f})")
  assert diff < 1e-4


def test_cache_decode_equals_full_forward(case):
  _, spec, tensors = case
  model = our_model(spec.replace(max_target_length=40), tensors, scan_layers=True)
  toks = tokens(2, 14, seed=2, vocab=spec.vocab_size)
  full = our_logits(model, toks)
  diff = float(np.abs(our_cached_logits(model, toks, 8, 40) - full).max())
  print(f"gpt-oss cache decode vs full forward: {diff:.2e}")
  assert diff < 1e-4


def test_mapping_round_trips(case):
  hf, spec, tensors = case
  spec = spec.replace(scan_layers=False)
  mapping = get_hf_mapping("gpt_oss")
  ours = [item for name, a in tensors.items() for item in mapping.to_ours(spec, name, a)]
  back = dict(mapping.to_hf_many(spec, ours))
  assert set(back) == set(tensors)
  for name, a in tensors.items():
    assert np.array_equal(back[name], a), name
  keys = mapping.model_keys_from_hf(mapping.hf_config_from(spec))
  assert keys == mapping.model_keys_from_hf(hf_config(hf))


def test_config_trains(tmp_path):
  """A tiny gpt_oss config (CLI keys) builds and gives a finite loss whose gradient reaches the sinks, the router
  bias and the expert biases."""
  import jax

  from maxtext_like.config import load_config
  from maxtext_like.training import step as step_lib
  from maxtext_like.training.loop import Trainer, to_global
  cfg = load_config(["base.yml", "override_model_config=true", "decoder_block=gpt_oss", "base_emb_dim=32",
                     "base_num_query_heads=4", "base_num_kv_heads=2", "head_dim=8", "base_mlp_dim=24",
                     "base_moe_mlp_dim=24", "base_num_decoder_layers=2", "vocab_size=256", "num_experts=4",
                     "num_experts_per_tok=2", "sliding_window_size=4", "attention_bias=true", "attention_sink=true",
                     "mlp_bias=true", "routed_bias=true", "mlp_activations=[sigmoid,linear]",
                     "mlp_activations_limit=7.0", "rope_type=yarn", "rope_factor=4", "rope_interleave=false",
                     "rope_truncate=false", "rope_attention_scaling=true", "original_max_position_embeddings=16",
                     "max_target_length=16", "max_prefill_predict_length=8", "dtype=float32", "dataset_type=synthetic", "enable_checkpointing=false",
                     "enable_tensorboard=false", "per_device_batch_size=1", "steps=1", "log_period=1000",
                     f"base_output_directory={tmp_path}", "run_name=gptoss"], env={})
  tr = Trainer(cfg, devices=jax.devices()[:1])
  state, _ = tr.initial_state()
  batch = to_global(next(tr.data), tr.batch_sharding)
  with jax.set_mesh(tr.mesh):
    loss, grads = jax.jit(jax.value_and_grad(
        lambda p: step_lib.loss_fn(p, state["rest"], tr.layout.graphdef, batch, 0.0, True)[0]))(state["params"])
  assert np.isfinite(float(loss))
  flat = {"/".join(map(str, k)): np.asarray(v) for k, v in nnx.to_flat_state(grads)}
  for name in ("self_attention/sinks", "mlp/gate/bias", "mlp/wi_0_bias", "mlp/wi_1_bias", "mlp/wo_bias",
               "self_attention/out/bias"):
    hits = [k for k in flat if k.endswith(name)]
    assert hits and all(np.abs(flat[k]).max() > 0 for k in hits), name
