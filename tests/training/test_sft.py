"""SFT on the shipped chat set: the loss is the cross-entropy of the assistant tokens only, packed == unpacked, and a
run from a pre-training checkpoint learns."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from maxtext_like import assets
from maxtext_like.models.sharding import activation_sharding
from maxtext_like.training.loop import Trainer, to_global

SFT = ["use_sft=true", "sft_train_on_completion_only=true", "use_chat_template=true",
       f"chat_template_path={assets.chat_path('plain.jinja')}", "max_target_length=96", "enable_checkpointing=false",
       "per_device_batch_size=1", "enable_data_shuffling=false"]


def test_loss_is_cross_entropy_of_the_trained_tokens(tiny_cfg):
  tr = Trainer(tiny_cfg(*SFT), devices=jax.devices()[:2])
  state, _ = tr.initial_state()
  raw = next(tr.data)
  trained = raw["targets_segmentation"] != 0
  assert 0 < trained.sum() < (raw["inputs_segmentation"] != 0).sum()  # a real mask: prompts are left out
  model = nnx.merge(tr.layout.graphdef, state["params"], state["rest"])
  logits = np.asarray(model(jnp.asarray(raw["inputs"]), jnp.asarray(raw["inputs_position"]),
                            jnp.asarray(raw["inputs_segmentation"]), deterministic=True), np.float64)
  logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)
  nll = -np.take_along_axis(logp, raw["targets"][..., None], -1)[..., 0]
  want = nll[trained].mean()
  with jax.set_mesh(tr.mesh), activation_sharding(tr.mesh, tr.rules):
    _, metrics = tr.train_step(state, to_global(raw, tr.batch_sharding))
  assert abs(float(metrics["loss"]) - want) < 1e-5
  assert float(metrics["tokens"]) == trained.sum()


def _eval_total(cfg):
  """(summed loss, trained tokens) over the whole eval split at the initial parameters."""
  tr = Trainer(cfg, devices=jax.devices()[:1])
  state, _ = tr.initial_state()
  total = count = 0.0
  from maxtext_like.training.data_source import make_iterator
  with jax.set_mesh(tr.mesh), activation_sharding(tr.mesh, tr.rules):
    for batch in make_iterator(cfg, 1, "eval"):
      out = tr.eval_step(state, to_global(batch, tr.batch_sharding))
      total, count = total + float(out["total"]), count + float(out["count"])
  return total, count


def test_packed_equals_unpacked(tiny_cfg):
  packed = _eval_total(tiny_cfg(*SFT, "max_target_length=256"))
  unpacked = _eval_total(tiny_cfg(*SFT, "max_target_length=256", "packing=false"))
  assert packed[1] == unpacked[1] > 0
  assert abs(packed[0] / packed[1] - unpacked[0] / unpacked[1]) < 1e-5


def test_sft_from_a_pretraining_checkpoint_learns(tiny_cfg, tmp_path):
  pre = tiny_cfg("run_name=pre", "steps=2", "per_device_batch_size=1", "max_target_length=64", "checkpoint_period=100")
  Trainer(pre).run()
  ckpt = tmp_path / "pre" / "checkpoints" / "2"
  assert ckpt.is_dir()
  cfg = tiny_cfg(*SFT, "run_name=sft", f"load_parameters_path={ckpt}", "steps=20", "learning_rate=0.01",
                 "warmup_steps_fraction=0", "enable_data_shuffling=true")
  tr = Trainer(cfg)
  start, _ = tr.initial_state()
  loaded = jax.tree.leaves(start["params"])
  res = tr.run()
  assert len(res.losses) == 20
  first, last = np.mean([res.losses[k] for k in range(3)]), np.mean([res.losses[k] for k in range(17, 20)])
  assert last < first - 1.0, (first, last)
  assert any(not np.array_equal(a, b) for a, b in zip(loaded, jax.tree.leaves(res.final_state["params"])))
