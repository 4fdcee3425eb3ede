"""The pipelined decoder equals the plain layer stack (one device, no mesh): every schedule option, loss and grads."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from maxtext_like.models import ModelSpec, build_model
from maxtext_like.models.pipeline import PipelineSpec

BASE = ModelSpec(vocab_size=64, emb_dim=32, num_query_heads=2, num_kv_heads=2, head_dim=16, mlp_dim=64, num_decoder_layers=8)
TOKENS = jax.random.randint(jax.random.key(1), (8, 16), 0, 64)


@functools.cache  # the plain stack's reference, once per module for each layout
def loss_and_grads(spec):
  graphdef, params = nnx.split(build_model(spec, nnx.Rngs(0)))
  return jax.jit(jax.value_and_grad(lambda p: jnp.mean(nnx.merge(graphdef, p)(TOKENS) ** 2)))(params)


@pytest.mark.parametrize("scan_layers", [True, False])
@pytest.mark.parametrize("S,M,R,opts", [
    (2, 2, 1, {}),  # GPipe: 4 layers per stage
    (4, 4, 2, {"scan_iterations": False}),  # circular, Python loop over iterations
    (2, 8, 4, {"remat_iterations": False, "remat_layers": True, "scan_layers_per_stage": True}),
    (2, 4, 2, {"delay_activation_forwarding": True}),
])
def test_pipelined_equals_layer_stack(scan_layers, S, M, R, opts):
  spec = BASE.replace(scan_layers=scan_layers)
  loss0, grads0 = loss_and_grads(spec)
  loss, grads = loss_and_grads(spec.replace(pipeline=PipelineSpec(S, M, R, 8 // (S * R), **opts)))
  np.testing.assert_allclose(loss, loss0, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads0)):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_layer_order_matters():
  """The check above can fail: reversing the layers inside the pipeline changes the loss."""
  spec = BASE.replace(pipeline=PipelineSpec(2, 2, 2, 2))
  model = build_model(spec, nnx.Rngs(0))
  ref = model(TOKENS)
  model.decoder.layers = jax.tree.map(lambda a: jnp.flip(a, axis=spec.param_scan_axis), model.decoder.layers)
  assert not np.allclose(model(TOKENS), ref, atol=1e-3)


def test_spec_refuses_too_few_microbatches():
  with pytest.raises(ValueError, match="cannot fill"):
    PipelineSpec(4, 2)
  with pytest.raises(ValueError, match="cannot fill"):
    PipelineSpec(2, 2, delay_activation_forwarding=True)


def test_kv_cache_decoding_bypasses_the_pipeline():
  spec = BASE.replace(pipeline=PipelineSpec(2, 2, 2, 2))
  model = build_model(spec, nnx.Rngs(0))
  plain = build_model(BASE, nnx.Rngs(0))
  logits, _ = model.prefill(TOKENS[:2, :8], max_length=16)
  ref, _ = plain.prefill(TOKENS[:2, :8], max_length=16)
  np.testing.assert_allclose(logits, ref, atol=1e-6)
