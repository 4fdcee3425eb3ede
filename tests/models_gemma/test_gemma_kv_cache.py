"""KV-cache decoding equals the full forward pass across local/global layers (gemma2 pairs, gemma3 5:1)."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import gemma_testlib as g


@pytest.mark.parametrize("name,scan_layers", [("gemma2", True), ("gemma2", False), ("gemma3", True)])
def test_prefill_then_decode_equals_full_forward(name, scan_layers):
  spec = g.SPECS[name].replace(scan_layers=scan_layers, max_target_length=32)
  model = g.random_model(spec)
  T, P = 3 * g.WINDOW, 5  # decode crosses the sliding window
  toks = g.tokens(2, T, seed=7)
  full = g.our_logits(model, toks)
  graphdef, state = nnx.split(model)

  prefill = g.jit(lambda s, t: nnx.merge(graphdef, s).prefill(t, max_length=T))
  decode = g.jit(lambda s, t, c: nnx.merge(graphdef, s).decode_step(t, c))
  logits, cache = prefill(state, jnp.asarray(toks[:, :P]))
  outs = [np.asarray(logits)]
  for t in range(P, T):
    logits, cache = decode(state, jnp.asarray(toks[:, t:t + 1]), cache)
    outs.append(np.asarray(logits))
  step = np.concatenate(outs, axis=1)
  np.testing.assert_allclose(step, full, atol=2e-5, rtol=0)


@pytest.mark.parametrize("name", ["gemma2", "gemma3"])
def test_flash_kernel_equals_dot_product(name):
  """The blocked kernel gets gemma3's traced per-layer window under scan; both layouts of remat'd layers."""
  spec = g.SPECS[name].replace(scan_layers=True, remat_policy="full")
  toks = g.tokens(2, 3 * g.WINDOW)
  want = g.our_logits(g.random_model(spec), toks)
  got = g.our_logits(g.random_model(spec.replace(attention="flash", flash_block_size=g.WINDOW)), toks)
  np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)
