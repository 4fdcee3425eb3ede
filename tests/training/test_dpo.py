"""DPO on the shipped preference set: ln 2 at the start for any beta and label smoothing, margin and accuracy rise,
the reference never moves, gets no gradient and is restored on resume, the metrics reach every sink; ORPO (no
reference) matches its formula."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from maxtext_like import assets
from maxtext_like.models.sharding import activation_sharding
from maxtext_like.training import dpo
from maxtext_like.training.loop import Trainer, to_global
from maxtext_like.training.step import forward

DPO = ["use_dpo=true", "packing=false", "use_chat_template=true", f"chat_template_path={assets.chat_path('plain.jinja')}",
       "max_target_length=48", "enable_checkpointing=false", "per_device_batch_size=1"]
METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margin", "rewards/accuracy", "log_probs/chosen", "log_probs/rejected")


@pytest.fixture(scope="module")
def trainer(tiny_cfg_module):
  tr = Trainer(tiny_cfg_module(*DPO), devices=jax.devices()[:2])
  state, _ = tr.initial_state()
  return tr, state, to_global(next(tr.data), tr.batch_sharding)


@pytest.mark.parametrize("beta,smoothing", [(0.1, 0.0), (0.5, 0.2), (2.0, 0.4)])
def test_loss_is_ln2_at_the_start(trainer, beta, smoothing):
  tr, state, batch = trainer
  stats = {}
  with jax.set_mesh(tr.mesh), activation_sharding(tr.mesh, tr.rules):
    mean, (total, count, _) = dpo.dpo_loss_fn(state["params"], state[dpo.REFERENCE], state["rest"], tr.layout.graphdef,
                                              batch, forward, beta=beta, label_smoothing=smoothing, deterministic=True,
                                              moe_out=stats)
  assert abs(float(mean) - math.log(2)) < 1e-6 and float(count) == batch["inputs"].shape[0]
  for k in ("rewards/chosen", "rewards/rejected", "rewards/margin", "rewards/accuracy"):
    assert float(stats["dpo"][k]) == 0.0
  assert float(stats["dpo"]["log_probs/chosen"]) < 0


def test_reference_gets_no_gradient(trainer):
  tr, state, batch = trainer
  # move the policy away from the reference so the loss depends on both
  params = jax.tree.map(lambda p: p * 1.01, state["params"])

  def loss(p, ref):
    return dpo.dpo_loss_fn(p, ref, state["rest"], tr.layout.graphdef, batch, forward, beta=0.5, label_smoothing=0.1,
                           deterministic=True)[0]
  with jax.set_mesh(tr.mesh), activation_sharding(tr.mesh, tr.rules):
    g_policy, g_ref = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, state[dpo.REFERENCE])
  assert max(float(np.abs(g).max()) for g in jax.tree.leaves(g_ref)) == 0.0
  assert max(float(np.abs(g).max()) for g in jax.tree.leaves(g_policy)) > 0.0


def test_margin_and_accuracy_rise_and_reach_every_sink(tiny_cfg, tmp_path, capsys):
  args = [*DPO, "per_device_batch_size=2", "learning_rate=0.003", "warmup_steps_fraction=0", "log_period=1",
          "enable_tensorboard=true", f"metrics_file={tmp_path / 'm.jsonl'}", "dpo_beta=0.5", "enable_checkpointing=true",
          "checkpoint_period=1000"]
  cfg = tiny_cfg(*args, "steps=24")
  tr = Trainer(cfg)
  start, _ = tr.initial_state()
  ref0 = [np.asarray(x) for x in jax.tree.leaves(start[dpo.REFERENCE])]
  res = tr.run()
  rows = [json.loads(line) for line in open(tmp_path / "m.jsonl")]
  assert all(k in r for r in rows for k in (*METRICS, "loss"))
  assert abs(rows[0]["loss"] - math.log(2)) < 1e-5 and rows[0]["rewards/margin"] == 0.0
  early = np.mean([r["rewards/margin"] for r in rows[1:6]])
  late = np.mean([r["rewards/margin"] for r in rows[-6:]])
  assert late > early + 0.5 and late > 0.5, (early, late)
  assert np.mean([r["rewards/accuracy"] for r in rows[-6:]]) > 0.8
  assert np.mean([r["loss"] for r in rows[-6:]]) < math.log(2) - 0.2
  # the reference is the starting policy, bit for bit, after training
  for a, b in zip(ref0, jax.tree.leaves(res.final_state[dpo.REFERENCE])):
    np.testing.assert_array_equal(a, np.asarray(b))
  # a resumed run restores the same reference (saved with the state), not its own starting point
  state, step = Trainer(tiny_cfg(*args, "steps=30")).initial_state()
  assert step == 24
  for a, b in zip(ref0, jax.tree.leaves(state[dpo.REFERENCE])):
    np.testing.assert_array_equal(a, np.asarray(b))
  assert "rewards/margin" in capsys.readouterr().out
  events = b"".join(p.read_bytes() for p in (tmp_path / "t").rglob("events.out.tfevents*"))
  assert all(k.encode() in events for k in METRICS)


def test_orpo_loss_without_a_reference(tiny_cfg):
  tr = Trainer(tiny_cfg(*DPO, "dpo_algo=orpo", "orpo_lambda=0.3"), devices=jax.devices()[:2])
  state, _ = tr.initial_state()
  assert dpo.REFERENCE not in state
  raw = next(tr.data)
  model = nnx.merge(tr.layout.graphdef, state["params"], state["rest"])
  avg = {}
  for side in ("", "rejected_"):
    logits = np.asarray(model(jnp.asarray(raw[side + "inputs"]), jnp.asarray(raw[side + "inputs_position"]),
                              jnp.asarray(raw[side + "inputs_segmentation"]), deterministic=True), np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    tok = np.take_along_axis(logp, raw[side + "targets"][..., None], -1)[..., 0]
    mask = raw[side + "targets_segmentation"] != 0
    avg[side] = (tok * mask).sum(-1) / mask.sum(-1)
  log_odds = (avg[""] - avg["rejected_"]) - (np.log1p(-np.exp(avg[""])) - np.log1p(-np.exp(avg["rejected_"])))
  want = np.mean(-avg[""] - 0.3 * -np.logaddexp(0.0, -log_odds))
  with jax.set_mesh(tr.mesh), activation_sharding(tr.mesh, tr.rules):
    _, metrics = tr.train_step(state, to_global(raw, tr.batch_sharding))
  assert abs(float(metrics["loss"]) - want) < 1e-5, (float(metrics["loss"]), want)
  assert abs(float(metrics["rewards/margin"]) - np.mean(0.3 * (avg[""] - avg["rejected_"]))) < 1e-5
