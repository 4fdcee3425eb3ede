"""Whole-model properties: causality, packing, tied logits, soft cap, registry, dropout."""

import numpy as np
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from maxtext_like.models import build_model, registry
from models_testlib import TINY, build, jit, jit_forward


def test_causality_gradient_and_perturbation():
  """Flash's causality is covered by flash ≡ dot_product (kernel) and the packing test."""
  model = build(TINY)
  T, t = 20, 7
  tokens = jax.random.permutation(jax.random.key(1), 128)[:T].reshape(1, T)  # distinct tokens
  graphdef, state = nnx.split(model)

  def logits_t(state):
    return jnp.sum(nnx.merge(graphdef, state)(tokens)[0, t])

  g_VD = jit(jax.grad(logits_t))(state)["token_embedder"]["embedding"][...]
  g_V = np.abs(np.asarray(g_VD)).sum(axis=1)
  past, future = np.asarray(tokens[0, : t + 1]), np.asarray(tokens[0, t + 1:])
  assert np.all(g_V[future] == 0.0), f"logits at {t} depend on later tokens"
  assert np.all(g_V[past] > 0.0)

  forward = jit_forward(model)
  ones = jnp.ones((1, T), jnp.int32)
  pos = jnp.arange(T)[None]
  changed = tokens.at[0, 12:].set((tokens[0, 12:] + 1) % 128)
  a, b = forward(tokens, pos, ones), forward(changed, pos, ones)
  np.testing.assert_allclose(a[:, :12], b[:, :12], atol=1e-6)
  assert np.abs(np.asarray(a[:, 12:] - b[:, 12:])).max() > 1e-3


@pytest.mark.parametrize("attention,scan", [("dot_product", True), ("flash", False)])
def test_packed_segments_equal_separate_sequences(attention, scan):
  spec = TINY.replace(attention=attention, flash_block_size=8, scan_layers=scan, sliding_window_size=4)
  model = build(spec)
  tokens = jax.random.randint(jax.random.key(2), (1, 16), 1, 128)
  segments = jnp.array([[1] * 6 + [2] * 7 + [0] * 3])
  positions = jnp.array([list(range(6)) + list(range(7)) + [0] * 3])
  spans = ((0, 6), (6, 13))

  @nnx.jit
  def packed_and_alone(model):
    alone = [model(tokens[:, a:b], jnp.arange(b - a)[None], jnp.ones((1, b - a), jnp.int32)) for a, b in spans]
    return model(tokens, positions, segments), alone

  packed, alone = packed_and_alone(model)
  for (start, stop), logits in zip(spans, alone):
    np.testing.assert_allclose(packed[:, start:stop], logits, atol=1e-5)


def test_tied_and_untied_logits():
  untied = build(TINY)
  tied = build(TINY.replace(logits_via_embedding=True))
  tokens = jnp.ones((2, 5), jnp.int32)
  assert jax.eval_shape(untied, tokens).shape == jax.eval_shape(tied, tokens).shape == (2, 5, 128)
  assert untied.decoder.logits_dense.kernel.shape == (32, 128)
  assert not hasattr(tied.decoder, "logits_dense")
  n_untied = sum(x.size for x in jax.tree.leaves(nnx.state(untied, nnx.Param)))
  n_tied = sum(x.size for x in jax.tree.leaves(nnx.state(tied, nnx.Param)))
  assert n_untied - n_tied == 128 * 32
  # tied logits are the final hidden state times the embedding table
  h = tied.decoder.decoder_norm(jnp.ones((1, 1, 32)))
  np.testing.assert_allclose(tied.decoder.logits(h, tied.token_embedder)[0, 0],
                             tied.token_embedder.embedding[...] @ h[0, 0], atol=1e-5)


def test_final_logits_soft_cap():
  tokens = jax.random.randint(jax.random.key(3), (2, 8), 0, 128)
  plain, capped = nnx.jit(lambda a, b: (a(tokens), b(tokens)))(
      build(TINY, scale=1.0), build(TINY.replace(final_logits_soft_cap=2.0), scale=1.0))
  assert np.abs(np.asarray(plain)).max() > 2.0
  np.testing.assert_allclose(capped, 2.0 * np.tanh(np.asarray(plain) / 2.0), atol=1e-5)


def test_registry():
  assert {"llama2", "mistral"} <= registry.built_decoder_blocks()
  with pytest.raises(ValueError, match=r"decoder_block 'no_such_block' is not built.*llama2.*mistral"):
    build_model(TINY.replace(decoder_block="no_such_block"), nnx.Rngs(0))
  mistral = build(TINY.replace(decoder_block="mistral", sliding_window_size=4))
  assert jax.eval_shape(mistral, jnp.ones((1, 6), jnp.int32)).shape == (1, 6, 128)


def test_dropout():
  tokens = jax.random.randint(jax.random.key(4), (2, 8), 0, 128)
  model = build(TINY.replace(dropout_rate=0.3))
  params = nnx.state(model, nnx.Param)
  no_dropout = nnx.merge(nnx.graphdef(build(TINY)), params)
  disabled = nnx.merge(nnx.graphdef(build(TINY.replace(dropout_rate=0.3, enable_dropout=False))), params)

  @nnx.jit
  def outputs(model, no_dropout, disabled):
    return (no_dropout(tokens), model(tokens, deterministic=True), disabled(tokens, deterministic=False),
            model(tokens, deterministic=False), model(tokens, deterministic=False))

  reference, deterministic, not_enabled, first, second = outputs(model, no_dropout, disabled)
  np.testing.assert_allclose(deterministic, reference, atol=1e-6)
  np.testing.assert_allclose(not_enabled, reference, atol=1e-6)
  assert np.abs(np.asarray(first - reference)).max() > 1e-3
  assert np.abs(np.asarray(first - second)).max() > 1e-3  # the model's RNG stream advances
  third = outputs(model, no_dropout, disabled)[3]
  assert np.abs(np.asarray(third - first)).max() > 1e-3  # ... and its state persists across calls
