"""LoRA / QLoRA: a fresh adapter leaves the model unchanged, only adapters train (the base stays bit-identical and
out of the optimizer state), merge equals the adapted model, adapter-only checkpoints resume, a foreign adapter
is refused with exit code 2, the nested `lora:` block, and QLoRA (nf4 base) trains."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from qwix._src.providers.ptq import WithAux

from maxtext_like.config import ConfigError, load_config
from maxtext_like.convert.__main__ import main as convert_main
from maxtext_like.models import build_model
from maxtext_like.models import lora
from maxtext_like.runtime.checkpoints import CheckpointError
from maxtext_like.runtime.model_spec import model_spec
from train_lib import config_maker, run_steps

TINY = ["override_model_config=true", "base_emb_dim=64", "base_num_query_heads=4", "base_num_kv_heads=2", "head_dim=16",
        "base_mlp_dim=128", "base_num_decoder_layers=2", "vocab_size=512", "max_target_length=32", "dtype=float32",
        "weight_dtype=float32", "enable_tensorboard=false", "async_checkpointing=false", "max_prefill_predict_length=16",
        "dataset_type=synthetic", "per_device_batch_size=1", "learning_rate=1e-2", "warmup_steps_fraction=0",
        "run_name=lora", "log_period=1000"]
LORA = ["enable_lora=true", "lora_rank=4", "lora_alpha=8"]


@pytest.fixture
def make(tmp_path):
  return config_maker(TINY, tmp_path)


@pytest.mark.parametrize("scan_layers", [True, False])
def test_fresh_adapter_count_and_merge(make, scan_layers):
  cfg = make(*LORA, f"scan_layers={scan_layers}", "matmul_precision=highest")
  spec, lspec = model_spec(cfg), lora.lora_spec(cfg.finetune)
  base = build_model(spec, nnx.Rngs(0))
  model = lora.apply_lora(base, lspec, spec.decoder_block, jax.random.PRNGKey(1))
  toks = jnp.asarray(np.random.RandomState(0).randint(0, 512, (2, 16)))
  run = nnx.jit(lambda m, t: m(t))
  np.testing.assert_array_equal(np.asarray(run(model, toks)), np.asarray(run(base, toks)))  # B = 0: exactly the base

  # r * (d_in + d_out) per targeted matrix and layer: q, k, v, o and the gated MLP's three
  D, N, K, H, F, L, r = 64, 4, 2, 16, 128, 2, 4
  per_layer = [(D, N * H), (D, K * H), (D, K * H), (N * H, D), (D, F), (D, F), (F, D)]
  adapters = nnx.state(model, nnx.LoRAParam)
  assert lora.count_adapter_params(adapters) == L * sum(r * (i + o) for i, o in per_layer)

  leaves, tree = jax.tree.flatten(adapters)
  keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
  nnx.update(model, jax.tree.unflatten(tree, [0.1 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)]))
  merged = nnx.clone(base)
  nnx.update(merged, lora.merge_into(nnx.state(base, nnx.Param), nnx.state(model, nnx.LoRAParam), lspec,
                                     spec.param_scan_axis))
  adapted = np.asarray(run(model, toks))
  assert np.abs(adapted - np.asarray(run(base, toks))).max() > 1e-2
  np.testing.assert_allclose(np.asarray(run(merged, toks)), adapted, atol=1e-5, rtol=0)


def _one_batch_steps(cfg, n):
  """A Trainer and its state after n steps on one repeated batch (the loss must fall), with the losses."""
  from maxtext_like.models.sharding import activation_sharding
  from maxtext_like.training.loop import Trainer, to_global
  tr = Trainer(cfg)
  state, _ = tr.initial_state()
  batch = to_global(next(tr.data), tr.batch_sharding)
  losses = []
  with tr.mesh, activation_sharding(tr.mesh, tr.rules):
    for _ in range(n):
      state, m = tr.train_step(state, batch)
      losses.append(float(m["loss"]))
  return tr, state, np.array(losses)


def _base_of(state):
  return {".".join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.filter_state(state["rest"], nnx.Param))}


def test_only_adapters_train_and_checkpoints_hold_only_adapters(make, tmp_path):
  cfg = make(*LORA, "steps=6", "checkpoint_period=3")
  trainer, state, losses = _one_batch_steps(cfg, 6)
  init, _ = trainer.initial_state()  # the same base from the same seed, fresh adapters
  before, after = _base_of(init), _base_of(state)
  assert before.keys() == after.keys() and len(before) > 10
  for k in before:
    np.testing.assert_array_equal(before[k], after[k], err_msg=k)  # the base is bit-identical after training
  assert losses[-1] < losses[0] - 0.1, losses  # and the adapters learn
  adapter_sizes = sorted(int(np.prod(x.shape)) for x in jax.tree.leaves(state["params"]))
  moments = sorted(int(np.prod(x.shape)) for x in jax.tree.leaves(state["opt_state"]) if x.ndim)
  assert moments == sorted(adapter_sizes * 2)  # adamw's two moments, for adapters only

  trainer.save(6, state, force=True)
  trainer.mngr.wait_until_finished()
  saved = trainer.mngr.item_metadata(6)["state"]
  names = [".".join(map(str, p)) for p, _ in jax.tree_util.tree_flatten_with_path(saved)[0]]
  assert not any(n.endswith("kernel") or ".kernel." in n for n in names if "lora" not in n), names
  resumed = type(trainer)(cfg)
  state2, step = resumed.initial_state()
  assert step == 6
  for a, b in zip(jax.tree.leaves(state2["params"]), jax.tree.leaves(state["params"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  # The adapter on another base (wider embedding) is refused, naming what does not fit: in training and in convert.
  other = config_maker([*TINY, "base_emb_dim=96"], tmp_path / "other")
  step_dir = os.path.join(cfg.derived.checkpoint_dir, "6")
  with pytest.raises(CheckpointError, match="does not fit"):
    type(trainer)(other(*LORA, f"lora_restore_path={step_dir}", "run_name=other")).initial_state()
  assert convert_main(["lora_to_hf", "--output", str(tmp_path / "x"), "base.yml", *TINY, "base_emb_dim=96", *LORA,
                       f"lora_restore_path={step_dir}"]) == 2


def test_merge_lora_and_lora_to_hf_commands(make, tmp_path):
  cfg = make(*LORA, "steps=3", "checkpoint_period=3", "enable_checkpointing=true")
  trainer, state, _, _ = run_steps(cfg, 3)
  trainer.save(3, state, force=True)
  trainer.mngr.wait_until_finished()
  base_dir = tmp_path / "base"
  from maxtext_like.convert.to_maxtext import _save_streaming
  _save_streaming(str(base_dir), {"params": jax.tree.map(np.asarray, nnx.filter_state(state["rest"], nnx.Param))})
  step_dir = os.path.join(cfg.derived.checkpoint_dir, "3")
  merged_dir = tmp_path / "merged"
  args = ["base.yml", *TINY, *LORA, f"lora_restore_path={step_dir}"]
  assert convert_main(["merge_lora", "--output", str(merged_dir), *args, f"load_parameters_path={base_dir}"]) == 0
  assert convert_main(["lora_to_hf", "--output", str(tmp_path / "peft"), *args]) == 0
  assert sorted(os.listdir(tmp_path / "peft")) == ["adapter_config.json", "adapter_model.safetensors"]

  from maxtext_like.api import load_model
  plain = load_model(load_config(["base.yml", *TINY, f"load_parameters_path={merged_dir}"], env={}))
  toks = jnp.asarray(np.random.RandomState(0).randint(0, 512, (2, 16)))
  adapted = nnx.merge(trainer.layout.graphdef, state["params"], state["rest"])
  np.testing.assert_allclose(np.asarray(plain.model(toks)),
                             np.asarray(adapted(toks)), atol=1e-5, rtol=0)
  served = load_model(load_config(["base.yml", *TINY, f"load_parameters_path={base_dir}",
                                    f"lora_input_adapters_path={step_dir}"], env={}))
  np.testing.assert_allclose(np.asarray(served.model(toks)), np.asarray(adapted(toks)), atol=1e-5, rtol=0)
  peft_served = load_model(load_config(["base.yml", *TINY, f"load_parameters_path={base_dir}",
                                         f"lora_input_adapters_path={tmp_path / 'peft'}"], env={}))
  np.testing.assert_allclose(np.asarray(peft_served.model(toks)), np.asarray(adapted(toks)), atol=1e-5, rtol=0)


def test_qlora_nf4_base_trains(make):
  cfg = make(*LORA, "lora_weight_qtype=nf4", "lora_tile_size=16", "steps=6")
  trainer, state, losses = _one_batch_steps(cfg, 6)
  quantized = [v for _, v in nnx.to_flat_state(nnx.filter_state(state["rest"], nnx.Param))
               if isinstance(v.get_value(), WithAux)]
  assert len(quantized) == 7  # every targeted kernel (scanned: one stacked kernel per projection) is stored nf4
  assert all(str(v.get_value().array.qtype) == "nf4" for v in quantized)
  assert losses[-1] < losses[0] - 0.1, losses


def test_nested_lora_block_and_rules(tmp_path):
  f = tmp_path / "lora.yml"
  f.write_text("base_config: base.yml\nlora:\n  enable_lora: true\n  lora_rank: 8\n  lora_alpha: 16.0\n")
  cfg = load_config([str(f), "lora.lora_module_path=decoder/.*mlp/wo"], env={})
  assert (cfg.finetune.enable_lora, cfg.finetune.lora_rank, cfg.finetune.lora_alpha) == (True, 8, 16.0)
  assert cfg.finetune.lora_module_path == "decoder/.*mlp/wo" and cfg.source("lora_rank").endswith("lora.yml:4")
  with pytest.raises(ConfigError, match="lora_rank.*must be > 0"):
    load_config(["base.yml", "enable_lora=true"], env={})
  with pytest.raises(ConfigError, match="lora_weight_qtype"):
    load_config(["base.yml", *LORA, "lora_weight_qtype=nf3"], env={})
  with pytest.raises(lora.LoraError, match="matches none"):
    spec = model_spec(load_config(["base.yml", *LORA, "lora_module_path=nothing"], env={}))
    lora.apply_lora(nnx.eval_shape(lambda: build_model(spec, nnx.Rngs(0))), lora.LoraSpec(4, 8.0, "nothing"),
                    spec.decoder_block, jax.random.PRNGKey(0))
