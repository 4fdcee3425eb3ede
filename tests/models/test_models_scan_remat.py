"""Remat policies (same loss/grads, save what they name) and scan ≡ loop."""

import re

import numpy as np
import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from jax.ad_checkpoint import print_saved_residuals

from maxtext_like.models import build_model, remat
from maxtext_like.models.spec import REMAT_POLICIES
from models_testlib import TINY as LOOP, build, jit, restack

TOKENS = jax.random.randint(jax.random.key(0), (2, 8), 0, 128)
PARAMS = nnx.state(build(LOOP), nnx.Param)


def loss_fn(spec):
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: build_model(spec, nnx.Rngs(0))))

  def loss(params):
    logits = nnx.merge(graphdef, params)(TOKENS[:, :-1])
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), TOKENS[:, 1:, None], axis=-1))

  return loss


POLICIES = [p for p in REMAT_POLICIES if p != "none"]


@pytest.fixture(scope="module")
def losses_and_grads():
  """{policy: (loss, grads)} for 'none' and every policy, from one jit (one compile is far cheaper)."""
  one_layer = LOOP.replace(num_decoder_layers=1)  # policies act per layer; one keeps the compile small
  params = nnx.state(build(one_layer), nnx.Param)
  fns = {p: jax.value_and_grad(loss_fn(one_layer.replace(remat_policy=p))) for p in ["none", *POLICIES]}
  return jit(lambda params: {p: fn(params) for p, fn in fns.items()})(params)


@pytest.mark.parametrize("policy", POLICIES)
def test_remat_policy_matches_no_remat(policy, losses_and_grads):
  (loss, grads), (ref_loss, ref_grads) = losses_and_grads[policy], losses_and_grads["none"]
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), grads, ref_grads)


QKV = {"query_proj", "key_proj", "value_proj"}
# policy -> (names saved on device, names offloaded to host) among the residuals the backward pass
# needs. 'mlpwo' never is one: it only feeds the residual add.
EXPECTED = {
    "full": (set(), set()),
    "minimal": (QKV | {"out_proj", "mlpwi_0", "mlpwi_1"}, set()),
    "minimal_with_context": (QKV | {"context", "out_proj", "mlpwi_0", "mlpwi_1"}, set()),
    "save_dot_with_context_except_mlp": (QKV | {"context", "out_proj"}, set()),
    "save_dot_except_mlpwi": (QKV | {"out_proj"}, set()),
    "save_dot_except_mlp": (QKV | {"out_proj"}, set()),
    "save_qkv_proj": (QKV, set()),
    "save_out_proj": ({"out_proj"}, set()),
    "qkv_proj_offloaded": (set(), QKV),
    "minimal_offloaded": (set(), QKV | {"out_proj", "mlpwi_0", "mlpwi_1"}),
    "custom": ({"decoder_layer_input"}, {"context"}),
}


@pytest.mark.parametrize("policy", sorted(EXPECTED))
def test_policy_saves_exactly_the_named_tensors(policy, capsys):
  spec = LOOP.replace(remat_policy=policy, remat_locations={"mlpwo": "device", "context": "offload"})
  print_saved_residuals(loss_fn(spec), PARAMS)
  out = capsys.readouterr().out
  on_device, offloaded = EXPECTED[policy]
  assert set(re.findall(r"named '(\w+)'", out)) == on_device
  # offloaded residuals print as f32<host>[...]; one per offloaded name per layer
  assert out.count("<host>") == LOOP.num_decoder_layers * len(offloaded)


def test_offload_policy_errors_without_host_memory():
  spec = LOOP.replace(remat_policy="minimal_offloaded")
  with pytest.raises(ValueError, match="not supported on this backend"):
    remat.checkpoint_policy(spec.remat_spec, memory_kinds=["device"])
  assert remat.checkpoint_policy(spec.remat_spec, memory_kinds=["device", "pinned_host"]) is not None
  custom = LOOP.replace(remat_policy="custom", remat_locations={"context": "offload", "mlpwo": "device"})
  assert remat.saved_and_offloaded(custom.remat_spec) == (("decoder_layer_input", "mlpwo"), ("context",))


def test_scan_equals_loop_with_restacked_params():
  scanned = {}
  for axis in (0, 1):
    scanned[axis] = build(LOOP.replace(scan_layers=True, param_scan_axis=axis), seed=1)
    stacked = restack(PARAMS, axis)
    shapes = jax.tree.map(jnp.shape, nnx.to_pure_dict(nnx.state(scanned[axis], nnx.Param)))
    assert jax.tree.map(jnp.shape, stacked) == shapes
    assert shapes["decoder"]["layers"]["mlp"]["wi_0"]["kernel"] == ((2, 32, 64) if axis == 0 else (32, 2, 64))
    nnx.replace_by_pure_dict(params := nnx.state(scanned[axis], nnx.Param), stacked)
    nnx.update(scanned[axis], params)
  loop = nnx.merge(nnx.graphdef(build(LOOP)), PARAMS)
  logits = nnx.jit(lambda models: [m(TOKENS) for m in models])([loop, scanned[0], scanned[1]])
  np.testing.assert_allclose(logits[1], logits[0], atol=1e-5)
  np.testing.assert_allclose(logits[2], logits[0], atol=1e-5)


def test_scan_with_remat_grads_match_loop():
  spec = LOOP.replace(scan_layers=True, remat_policy="save_dot_except_mlp")
  params = nnx.state(build(spec), nnx.Param)
  nnx.replace_by_pure_dict(params, restack(PARAMS, spec.param_scan_axis))
  (loss, grads), (ref_loss, ref_grads) = jit(lambda p, ref: (
      jax.value_and_grad(loss_fn(spec))(p), jax.value_and_grad(loss_fn(LOOP))(ref)))(params, PARAMS)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
               nnx.to_pure_dict(grads), restack(ref_grads, spec.param_scan_axis))
