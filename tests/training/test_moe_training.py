"""Expert parallelism and the MoE training path: loss and gradients on 8 fake devices with expert+data and
expert+fsdp meshes equal one device (f32, 1e-5); expert weights sharded on 'expert'; the load-balance loss is
added to the loss and reported; the routed bias moves by the aux-loss-free update, outside the gradient."""

from __future__ import annotations

import re

import jax
import numpy as np
import pytest

from maxtext_like.models.sharding import activation_sharding
from maxtext_like.training import step as step_lib
from maxtext_like.training.loop import Trainer, to_global

AUX = ["load_balance_loss_weight=0.01", "routed_bias=true", "routed_bias_update_rate=0.001"]


def loss_and_grads(cfg, devices=None):
  """(trainer, loss, grads, compiled HLO text) of the jitted loss and gradient on the config's mesh."""
  tr = Trainer(cfg, devices=devices)
  state, _ = tr.initial_state()
  batch = to_global(next(tr.data), tr.batch_sharding)
  with jax.set_mesh(tr.mesh), activation_sharding(tr.mesh, tr.rules):
    fn = jax.jit(jax.value_and_grad(lambda p: step_lib.loss_fn(p, state["rest"], tr.layout.graphdef, batch, 0.0, True)[0]))
    compiled = fn.lower(state["params"]).compile()
    loss, grads = compiled(state["params"])
  return tr, float(loss), jax.tree.map(np.asarray, grads), compiled.as_text()


@pytest.fixture(scope="module")
def one_device(moe_cfg_module):
  """(loss, grads) on one device for a dispatch mode, computed once per module (shared by its meshes)."""
  runs = {}

  def run(dispatch):
    if dispatch not in runs:
      capacity = [] if dispatch.endswith("true") else ["capacity_factor=1.5"]
      runs[dispatch] = loss_and_grads(moe_cfg_module(dispatch, *capacity, *AUX, "per_device_batch_size=8",
                                                     "ici_fsdp_parallelism=1"), jax.devices()[:1])[1:3]
    return runs[dispatch]
  return run


@pytest.mark.parametrize("dispatch,mesh", [
    ("sparse_matmul=true", ["ici_expert_parallelism=4", "ici_data_parallelism=2", "ici_fsdp_parallelism=1"]),
    ("sparse_matmul=false", ["ici_expert_parallelism=2", "ici_fsdp_parallelism=4"]),
    ("sparse_matmul=true", ["num_slices=2", "dcn_expert_parallelism=2", "dcn_data_parallelism=1", "ici_fsdp_parallelism=4"]),
])
def test_expert_parallel_matches_one_device(moe_cfg, one_device, dispatch, mesh):
  capacity = [] if dispatch.endswith("true") else ["capacity_factor=1.5"]  # some tokens dropped, same on both
  l1, g1 = one_device(dispatch)
  tr, l8, g8, hlo = loss_and_grads(moe_cfg(dispatch, *capacity, *AUX, *mesh))
  assert l8 == pytest.approx(l1, rel=1e-5, abs=1e-5)
  for a, b in zip(jax.tree.leaves(g8), jax.tree.leaves(g1)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  specs = {jax.tree_util.keystr(p): s.spec for p, s in
           jax.tree_util.tree_flatten_with_path(tr.layout.shardings["params"])[0]}
  for name in ("wi_0", "wi_1", "wo"):
    spec = next(v for k, v in specs.items() if f"'{name}'" in k)
    assert spec[0] == "expert", (name, spec)  # [E, ...] expert axis sharded on 'expert' (scanned: layers at axis 1)
  # the experts stay sharded: no all-gather rebuilds a full expert kernel (E=8, L=2, D=32, F=48) in forward or backward
  gathered = set(re.findall(r"= f32\[([0-9,]+)\][^=]*? all-gather\(", hlo))
  assert not gathered & {"8,2,32,48", "8,2,48,32", "8,32,48", "8,48,32"}, gathered


def test_train_step_lb_loss_bias_update_eval_and_accumulation(moe_cfg):
  """One train step (learning rate 0, so only the routed-bias update moves parameters): `loss` = eval cross entropy
  + `moe_lb_loss`; the bias moves by exactly +-rate; 4 micro-batches give the big batch's loss and gradient norm
  (load-balance weight tiny: its batch-level nonlinearity stays below the tolerance; bias deltas are averaged)."""
  aux = ["load_balance_loss_weight=1e-3", "routed_bias=true", "routed_bias_update_rate=0.001", "ici_fsdp_parallelism=1",
         "learning_rate=0.0", "num_experts_per_tok=3", "max_target_length=17"]  # mean load 68*3/8 is not a whole count:
  # no expert sits exactly at the mean, so every routed bias moves (sign(mean - load) != 0)
  out = {}
  for name, argv in {"big": ["per_device_batch_size=4"],
                     "acc": ["per_device_batch_size=1", "gradient_accumulation_steps=4"]}.items():
    tr = Trainer(moe_cfg(*aux, *argv), devices=jax.devices()[:1])
    state, _ = tr.initial_state()
    batch = to_global(next(tr.data), tr.batch_sharding)
    bias0 = np.asarray(state["params"]["decoder"]["layers"]["mlp"]["gate"]["bias"][...])
    with jax.set_mesh(tr.mesh), activation_sharding(tr.mesh, tr.rules):
      eval_ce = float(jax.jit(tr.eval_step)(state, batch)["total"]) / batch["inputs"].size if name == "big" else None
      state, m = tr.train_step(state, batch)
    out[name] = (float(m["loss"]), float(m["grad_norm"]), float(m["moe_lb_loss"]))
    if name == "big":
      lb = out[name][2]
      assert 2e-3 <= lb <= 8e-3  # 2 layers x 1e-3 x (1 .. E/A)
      assert out[name][0] == pytest.approx(eval_ce + lb, rel=1e-6)  # eval loss: cross entropy only
      bias = np.asarray(state["params"]["decoder"]["layers"]["mlp"]["gate"]["bias"][...])  # [E, L]
      np.testing.assert_allclose(np.abs(bias - bias0), 0.001, atol=1e-6)
      assert np.all(np.abs(np.sum(bias - bias0, axis=0)) < 8 * 0.001)  # some experts up, some down
  assert out["acc"][0] == pytest.approx(out["big"][0], rel=1e-4)
  assert out["acc"][1] == pytest.approx(out["big"][1], rel=1e-4)
  assert out["acc"][2] == pytest.approx(out["big"][2], rel=0.2)  # per-micro-batch balance differs (measured 9%)
