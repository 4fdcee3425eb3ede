"""KV-cache decoding equals the full forward pass across local/global layers (gemma2 pairs, gemma3 5:1)."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import parity_cases as pc
from hf_parity_lib import jit, our_logits, random_model, tokens


@pytest.mark.parametrize("name,scan_layers", [("gemma2", True), ("gemma2", False), ("gemma3", True)])
def test_prefill_then_decode_equals_full_forward(name, scan_layers):
  spec = pc.GEMMA_SPECS[name].replace(scan_layers=scan_layers, max_target_length=32)
  model = random_model(spec)
  T, P = 3 * pc.GEMMA_WINDOW, 5  # decode crosses the sliding window
  toks = tokens(2, T, seed=7)
  full = our_logits(model, toks)
  graphdef, state = nnx.split(model)

  prefill = jit(lambda s, t: nnx.merge(graphdef, s).prefill(t, max_length=T))
  decode = jit(lambda s, t, c: nnx.merge(graphdef, s).decode_step(t, c))
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
  spec = pc.GEMMA_SPECS[name].replace(scan_layers=True, remat_policy="full")
  toks = tokens(2, 3 * pc.GEMMA_WINDOW)
  want = our_logits(random_model(spec), toks)
  got = our_logits(random_model(spec.replace(attention="flash", flash_block_size=pc.GEMMA_WINDOW)), toks)
  np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)
