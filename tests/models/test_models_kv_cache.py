"""KV-cache decoding: prefill + one-token steps + a 2-token chunk ≡ the full forward."""

import numpy as np
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from models_testlib import TINY, build, jit

PROMPT_LENGTHS = (5, 3)  # ragged, right-padded prompts
SINGLE_STEPS = 5
T = 14  # row 0: prompt 0..4, steps 5..9, chunk 10..11


def decode_matches_full_forward(spec):
  model = build(spec)
  graphdef, state = nnx.split(model)
  tokens = jax.random.randint(jax.random.key(5), (2, T), 0, spec.vocab_size)
  full = jit(lambda t: nnx.merge(graphdef, state)(t))(tokens)

  prefill = jit(lambda t, s: nnx.merge(graphdef, state).prefill(t, s, max_length=16))
  step = jit(lambda t, c: nnx.merge(graphdef, state).decode_step(t, c))

  lengths = np.array(PROMPT_LENGTHS)
  width = lengths.max()
  segments = (np.arange(width)[None] < lengths[:, None]).astype(np.int32)
  prompt = jnp.where(segments == 1, tokens[:, :width], 0)
  logits, cache = prefill(prompt, jnp.asarray(segments))
  for b, n in enumerate(lengths):
    np.testing.assert_allclose(logits[b, :n], full[b, :n], atol=1e-5, err_msg=f"prefill row {b}")
  np.testing.assert_array_equal(cache.index_B, lengths)

  rows = np.arange(2)
  for k in range(SINGLE_STEPS):
    pos = lengths + k
    logits, cache = step(tokens[rows, pos][:, None], cache)
    np.testing.assert_allclose(logits[:, 0], full[rows, pos], atol=1e-5, err_msg=f"step {k}")
  pos = lengths + SINGLE_STEPS
  chunk = jnp.stack([tokens[rows, pos], tokens[rows, pos + 1]], axis=1)
  logits, cache = step(chunk, cache)
  np.testing.assert_allclose(logits, jnp.stack([full[rows, pos], full[rows, pos + 1]], axis=1), atol=1e-5)
  np.testing.assert_array_equal(cache.index_B, lengths + SINGLE_STEPS + 2)


@pytest.mark.parametrize("name,changes", [
    ("scan-gqa-global", dict(scan_layers=True)),
    ("loop-mqa-window-flash", dict(num_kv_heads=1, sliding_window_size=3, attention="flash", flash_block_size=4)),
])
def test_decode_equals_full_forward(name, changes):
  decode_matches_full_forward(TINY.replace(**changes))


def test_cache_layout():
  model = build(TINY)
  cache = model.init_cache(3, 16)
  assert cache.k_LBSKH.shape == (2, 3, 16, 2, 8) and cache.k_LBSKH.dtype == jnp.float32
  assert cache.max_length == 16
  assert jax.tree.structure(cache).num_leaves == 4  # a pytree: jit and donate it as a whole
