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


_ONE_DEVICE: dict = {}


@pytest.mark.parametrize("dispatch,mesh", [
    ("sparse_matmul=true", ["ici_expert_parallelism=4", "ici_data_parallelism=2", "ici_fsdp_parallelism=1"]),
    ("sparse_matmul=false", ["ici_expert_parallelism=2", "ici_fsdp_parallelism=4"]),
    ("sparse_matmul=true", ["num_slices=2", "dcn_expert_parallelism=2", "dcn_data_parallelism=1", "ici_fsdp_parallelism=4"]),
])
def test_expert_parallel_matches_one_device(moe_cfg, dispatch, mesh):
  capacity = [] if dispatch.endswith("true") else ["capacity_factor=1.5"]  # some tokens dropped, same on both
  if dispatch not in _ONE_DEVICE:  # shared by the meshes of one dispatch mode
    _ONE_DEVICE[dispatch] = loss_and_grads(
        moe_cfg(dispatch, *capacity, *AUX, "per_device_batch_size=8", "ici_fsdp_parallelism=1"), jax.devices()[:1])[1:3]
  l1, g1 = _ONE_DEVICE[dispatch]
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


def test_train_step_adds_lb_loss_and_updates_bias(moe_cfg):
  tr = Trainer(moe_cfg(*AUX, "per_device_batch_size=4", "ici_fsdp_parallelism=1", "learning_rate=0.0"),
               devices=jax.devices()[:1])
  state, _ = tr.initial_state()
  batch = to_global(next(tr.data), tr.batch_sharding)
  bias0 = np.asarray(state["params"]["decoder"]["layers"]["mlp"]["gate"]["bias"][...])
  with jax.set_mesh(tr.mesh), activation_sharding(tr.mesh, tr.rules):
    with_lb = float(step_lib.loss_fn(state["params"], state["rest"], tr.layout.graphdef, batch, 0.0, True)[0])
    eval_ce = float(jax.jit(tr.eval_step)(state, batch)["total"]) / batch["inputs"].size
    state, metrics = tr.train_step(state, batch)
  lb = float(metrics["moe_lb_loss"])
  assert 0.02 <= lb <= 0.08  # 2 layers x 0.01 x (1 .. E/A)
  assert float(metrics["loss"]) == pytest.approx(with_lb, rel=1e-6)  # loss_fn already includes lb
  bias = np.asarray(state["params"]["decoder"]["layers"]["mlp"]["gate"]["bias"][...])  # [E, L]: lr 0, only the update
  np.testing.assert_allclose(np.abs(bias - bias0), 0.001, atol=1e-6)
  assert np.all(np.sum(bias - bias0, axis=0) != 8 * 0.001)  # some experts up, some down
  assert eval_ce == pytest.approx(float(metrics["loss"]) - lb, rel=1e-5)  # eval loss: cross entropy only


def test_gradient_accumulation_matches_big_batch(moe_cfg):
  """Micro-batches sum the load-balance term per token like the CE (weight tiny: its batch-level nonlinearity
  stays below the tolerance); the routed-bias deltas are averaged."""
  aux = ["load_balance_loss_weight=1e-7", "routed_bias=true", "routed_bias_update_rate=0.001", "ici_fsdp_parallelism=1"]
  out = {}
  for name, argv in {"big": ["per_device_batch_size=4"],
                     "acc": ["per_device_batch_size=1", "gradient_accumulation_steps=4"]}.items():
    tr = Trainer(moe_cfg(*aux, *argv), devices=jax.devices()[:1])
    state, _ = tr.initial_state()
    with jax.set_mesh(tr.mesh), activation_sharding(tr.mesh, tr.rules):
      state, m = tr.train_step(state, to_global(next(tr.data), tr.batch_sharding))
    out[name] = (float(m["loss"]), float(m["grad_norm"]), "moe_lb_loss" in m)
  assert out["acc"][0] == pytest.approx(out["big"][0], rel=1e-5)
  assert out["acc"][1] == pytest.approx(out["big"][1], rel=1e-4)
  assert out["acc"][2] and out["big"][2]
