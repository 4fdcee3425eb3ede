"""Pipeline parallelism on 8 fake devices: loss and gradients equal one device; 'stage' shards the layer axis."""

import jax
import numpy as np
import pytest

from maxtext_like.models.sharding import activation_sharding
from maxtext_like.training.loop import Trainer, to_global
from maxtext_like.training.step import loss_fn


def grads_and_losses(cfg, devices=None, steps=2):
  """(trainer, loss and grads at the initial parameters, losses of `steps` train steps, compiled step)."""
  tr = Trainer(cfg, devices=devices)
  state, _ = tr.initial_state()
  with tr.mesh, activation_sharding(tr.mesh, tr.rules):
    batch = to_global(next(tr.data), tr.batch_sharding)
    f = jax.jit(jax.value_and_grad(lambda p, b: loss_fn(p, state["rest"], tr.layout.graphdef, b, 0.0, True)[0]))
    loss, grads = f(state["params"], batch)
    compiled = tr.train_step.lower(state, batch).compile()
    losses = []
    for _ in range(steps):
      state, m = tr.train_step(state, batch)
      losses.append(float(m["loss"]))
      batch = to_global(next(tr.data), tr.batch_sharding)
  return tr, float(loss), grads, np.array(losses), compiled


@pytest.fixture(scope="module")
def one_device(pp_cfg_module):
  return grads_and_losses(pp_cfg_module("per_device_batch_size=16", "ici_fsdp_parallelism=1"), jax.devices()[:1])


MESHES = {
    # name: (argv, stages, repeats)
    "stage2_fsdp4_gpipe_m4": (["ici_pipeline_parallelism=2", "ici_fsdp_parallelism=4", "num_layers_per_pipeline_stage=2",
                               "num_pipeline_microbatches=4"], 2, 1),
    "stage4_fsdp2_m8": (["ici_pipeline_parallelism=4", "ici_fsdp_parallelism=2", "num_pipeline_microbatches=8"], 4, 1),
    "stage2_circular_r2_data2_fsdp2_m4": (["ici_pipeline_parallelism=2", "ici_data_parallelism=2", "ici_fsdp_parallelism=2",
                                          "num_pipeline_repeats=2", "num_pipeline_microbatches=4"], 2, 2),
    "stage2_circular_r2_fsdp4_m8_delayed_ag_once": (
        ["ici_pipeline_parallelism=2", "ici_fsdp_parallelism=-1", "num_pipeline_microbatches=8",
         "pipeline_delay_activation_forwarding=true", "pipeline_fsdp_ag_once=true", "set_remat_policy_on_layers_per_stage=true",
         "remat_policy=minimal"], 2, 2),
}


@pytest.mark.parametrize("name", list(MESHES))
def test_pipelined_matches_one_device(pp_cfg, one_device, name):
  argv, stages, repeats = MESHES[name]
  _, loss1, grads1, losses1, _ = one_device
  tr, loss8, grads8, losses8, compiled = grads_and_losses(pp_cfg("per_device_batch_size=2", *argv))
  p = tr.spec.pipeline
  assert (p.num_stages, p.num_repeats) == (stages, repeats)
  assert dict(zip(tr.mesh.axis_names, tr.mesh.devices.shape))["stage"] == stages
  np.testing.assert_allclose(loss8, loss1, rtol=1e-5, atol=1e-5)
  flat1 = jax.tree_util.tree_flatten_with_path(grads1)[0]
  flat8 = jax.tree.leaves(grads8)
  assert len(flat1) == len(flat8)
  for (path, g1), g8 in zip(flat1, flat8):
    np.testing.assert_allclose(np.asarray(g8), np.asarray(g1), rtol=1e-5, atol=1e-5, err_msg=jax.tree_util.keystr(path))
  np.testing.assert_allclose(losses8, losses1, rtol=1e-5, atol=1e-5)
  # The compiled step takes (and returns) the layer parameters sharded over 'stage' on their layer axis.
  axis = tr.spec.param_scan_axis
  params_in = compiled.input_shardings[0][0]["params"]
  layer_specs = [(jax.tree_util.keystr(path), s.spec) for path, s in jax.tree_util.tree_flatten_with_path(params_in)[0]
                 if "layers" in jax.tree_util.keystr(path)]
  assert layer_specs
  for path, spec in layer_specs:
    assert len(spec) > axis and spec[axis] in ("stage", ("stage",)), (path, spec)
  others = [s.spec for path, s in jax.tree_util.tree_flatten_with_path(params_in)[0]
            if "layers" not in jax.tree_util.keystr(path)]
  assert all("stage" not in str(s) for s in others)
