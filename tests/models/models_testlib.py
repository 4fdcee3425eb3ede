"""Shared helpers for tests/models: fast model construction without running initializers."""

import numpy as np
import jax
import jax.numpy as jnp
from flax import nnx

from maxtext_like.models import ModelSpec, build_model

# A tiny GQA llama; tests override fields with .replace(...).
TINY = ModelSpec(vocab_size=128, emb_dim=32, num_query_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=64,
                 num_decoder_layers=2, remat_policy="none", attention="dot_product", scan_layers=False)


def build(spec: ModelSpec, seed: int = 0, scale: float = 0.3):
  """The model for `spec` with N(0, scale^2) parameters drawn by numpy.

  Skips the real initializers (each would compile a random op on first use);
  tests that need real init call `build_model` directly.
  """
  graphdef, state = nnx.split(nnx.eval_shape(lambda: build_model(spec, nnx.Rngs(0))))
  rng = np.random.default_rng(seed)
  state = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) * scale, s.dtype), state)
  return nnx.merge(graphdef, state)


def restack(loop_params, axis: int) -> dict:
  """Loop layout decoder.layers.{i}.x -> scanned layout decoder.layers.x stacked on `axis` (pure dict)."""
  pure = nnx.to_pure_dict(loop_params)
  layers = [pure["decoder"]["layers"][i] for i in range(len(pure["decoder"]["layers"]))]
  pure["decoder"]["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs, axis=axis), *layers)
  return pure


def jit_forward(model):
  """jitted f(tokens, positions, segment_ids) -> logits with the model's current params."""
  graphdef, state = nnx.split(model)
  return jax.jit(lambda t, p, s: nnx.merge(graphdef, state)(t, p, s))
