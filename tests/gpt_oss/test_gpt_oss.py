"""gpt-oss: logits parity with transformers' GptOssForCausalLM (eager, f32; loop and scanned layouts), greedy
generation, KV-cache decode == full forward, HF mapping round trip, preset parameter counts vs the meta-device model."""

from __future__ import annotations

import os
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "mla"))
from hf_util import hf_state, ours_from_hf, randomize  # noqa: E402

from hf_parity_lib import hf_greedy, hf_param_count, our_greedy  # noqa: E402
from maxtext_like.models.hf_registry import get_hf_mapping, mapping_for_architecture  # noqa: E402
from maxtext_like.models.moe import MoeSpec  # noqa: E402
from maxtext_like.models.spec import ModelSpec  # noqa: E402

VOCAB = 256
HF_KW = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=8, num_local_experts=4, num_experts_per_tok=2, sliding_window=5,
             max_position_embeddings=64, swiglu_limit=1.5,  # low limit: the clamps are active on O(1) activations
             rope_parameters={"rope_type": "yarn", "factor": 4.0, "beta_fast": 32.0, "beta_slow": 1.0,
                              "truncate": False, "original_max_position_embeddings": 16, "rope_theta": 150000.0},
             attn_implementation="eager")
MEASURED: dict[str, float] = {}
MOE_KEYS = ("num_experts", "num_experts_per_tok", "routed_bias", "mlp_bias")
SPEC_KEYS = ("rope_type", "rope_max_timescale", "rope_factor", "original_max_position_embeddings",
             "max_position_embeddings", "beta_fast", "beta_slow", "rope_interleave", "rope_truncate",
             "rope_attention_scaling", "sliding_window_size", "attention_bias", "attention_sink",
             "mlp_activations_limit", "head_dim", "logits_via_embedding", "normalization_layer_epsilon")


def spec_from_hf(hf_cfg: dict, **overrides) -> ModelSpec:
  keys = mapping_for_architecture(hf_cfg["architectures"][0]).model_keys_from_hf(hf_cfg)
  moe = MoeSpec(mlp_dim=keys["base_moe_mlp_dim"], **{k: keys[k] for k in MOE_KEYS})
  spec = ModelSpec(decoder_block=keys["decoder_block"], vocab_size=keys["vocab_size"], emb_dim=keys["base_emb_dim"],
                   num_query_heads=keys["base_num_query_heads"], num_kv_heads=keys["base_num_kv_heads"],
                   mlp_dim=keys["base_mlp_dim"], num_decoder_layers=keys["base_num_decoder_layers"],
                   mlp_activations=tuple(keys["mlp_activations"]), moe=moe, **{k: keys[k] for k in SPEC_KEYS})
  return spec.replace(**overrides)


@pytest.fixture(scope="module")
def case():
  torch.manual_seed(0)
  cfg = transformers.GptOssConfig(**HF_KW)
  hf = randomize(transformers.GptOssForCausalLM(cfg).eval(), scale=1.0)
  hf_cfg = cfg.to_dict()
  hf_cfg["architectures"] = ["GptOssForCausalLM"]
  return hf, hf_cfg, hf_state(hf)


def tokens(b, t, seed=0):
  return np.random.RandomState(seed).randint(0, VOCAB, (b, t))


def hf_logits(hf, toks):
  with torch.no_grad():
    return hf(torch.tensor(toks)).logits.numpy()


@pytest.mark.parametrize("scan,dispatch", [(False, "capacity"), (True, "blocked"), (True, "ragged_dot")])
def test_logits_match_transformers(case, scan, dispatch, monkeypatch):
  """dispatch: the dropless grouped matmul ('blocked' on CPU, or jax.lax.ragged_dot) or the capacity einsums
  (sparse_matmul=false, nothing dropped): each adds the expert biases its own way."""
  from maxtext_like.models import moe
  hf, hf_cfg, tensors = case
  spec = spec_from_hf(hf_cfg, scan_layers=scan)
  if dispatch == "capacity":
    spec = spec.replace(moe=spec.moe.replace(sparse_matmul=False, capacity_factor=-1.0))
  else:
    monkeypatch.setattr(moe, "GMM_IMPL", dispatch)
  ours = ours_from_hf(spec, tensors)
  toks = tokens(2, 24)  # > sliding_window: the window matters
  ref = hf_logits(hf, toks)
  diff = float(np.abs(np.asarray(nnx.jit(lambda m, t: m(t))(ours, jnp.asarray(toks))) - ref).max())
  MEASURED[f"scan={scan} {dispatch}"] = diff
  print(f"gpt-oss scan={scan} {dispatch}: max |logits diff| = {diff:.2e} (logits scale {np.abs(ref).max():.1f})")
  assert diff < 1e-4


def test_cache_decode_and_greedy_generation(case):
  hf, hf_cfg, tensors = case
  model = ours_from_hf(spec_from_hf(hf_cfg, scan_layers=True, max_target_length=40), tensors)
  toks = tokens(2, 14, seed=2)
  full = np.asarray(nnx.jit(lambda m, t: m(t))(model, jnp.asarray(toks)))
  logits, cache = nnx.jit(lambda m, t: m.prefill(t, max_length=40))(model, jnp.asarray(toks[:, :8]))
  step = nnx.jit(lambda m, t, c: m.decode_step(t, c))
  steps = [np.asarray(logits)]
  for t in range(8, 14):
    logits, cache = step(model, jnp.asarray(toks[:, t:t + 1]), cache)
    steps.append(np.asarray(logits))
  diff = float(np.abs(np.concatenate(steps, axis=1) - full).max())
  print(f"gpt-oss cache decode vs full forward: {diff:.2e}")
  assert diff < 1e-4
  prompts = tokens(2, 6, seed=1)
  assert our_greedy(model, prompts, 20) == hf_greedy(hf, prompts, 20)


def test_mapping_round_trips(case):
  _, hf_cfg, tensors = case
  spec = spec_from_hf(hf_cfg, scan_layers=False)
  mapping = get_hf_mapping("gpt_oss")
  ours = [item for name, a in tensors.items() for item in mapping.to_ours(spec, name, a)]
  back = dict(mapping.to_hf_many(spec, ours))
  assert set(back) == set(tensors)
  for name, a in tensors.items():
    assert np.array_equal(back[name], a), name
  keys = mapping.model_keys_from_hf(mapping.hf_config_from(spec))
  assert keys == mapping.model_keys_from_hf(hf_cfg)


@pytest.mark.parametrize("preset", ["gpt-oss-20b", "gpt-oss-120b"])
def test_preset_param_count_equals_transformers(preset):
  from maxtext_like.config import load_config
  from maxtext_like.models import count_params
  from maxtext_like.runtime.model_spec import model_spec
  spec = model_spec(load_config(["base.yml", f"model_name={preset}"], env={}))
  theirs = hf_param_count(spec, buffers=True)
  ours = count_params(spec)
  print(f"{preset}: ours {ours:,} transformers {theirs:,}")
  assert ours == theirs


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


def test_convert_round_trip(case, tmp_path):
  """save_pretrained -> convert.to_maxtext (model.yml from the HF config, scanned) -> our logits == HF's; then
  convert.to_hf (wi_0/wi_1 re-interleaved) -> from_pretrained -> logits == ours."""
  from maxtext_like.config import load_config
  from maxtext_like.convert.to_hf import to_hf
  from maxtext_like.convert.to_maxtext import to_maxtext
  from maxtext_like.models import build_model
  from maxtext_like.runtime.model_spec import model_spec
  import orbax.checkpoint as ocp
  hf, _, _ = case
  hf.save_pretrained(tmp_path / "hf")
  out = to_maxtext(str(tmp_path / "hf"), str(tmp_path / "ours"), ["scan_layers=true"])
  argv = ["base.yml", f"model_name={out}/model.yml", "scan_layers=true", "max_target_length=32",
          "max_prefill_predict_length=8"]
  spec = model_spec(load_config(argv, env={}))
  model = build_model(spec, nnx.Rngs(0))
  restored = ocp.StandardCheckpointer().restore(out, {"params": nnx.state(model, nnx.Param)})
  nnx.update(model, restored["params"])
  toks = tokens(2, 20, seed=3)
  ours = np.asarray(nnx.jit(lambda m, t: m(t))(model, jnp.asarray(toks)))
  d1 = float(np.abs(ours - hf_logits(hf, toks)).max())
  back_dir = to_hf(str(tmp_path / "back"), [*argv, f"load_parameters_path={out}"])
  back = transformers.AutoModelForCausalLM.from_pretrained(back_dir, attn_implementation="eager").float().eval()
  d2 = float(np.abs(ours - hf_logits(back, toks)).max())
  print(f"gpt-oss convert: hf->ours {d1:.2e}, ours->hf {d2:.2e}")
  assert type(back).__name__ == "GptOssForCausalLM" and d1 < 1e-4 and d2 < 1e-4
