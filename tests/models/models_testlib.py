"""Shared helpers for tests/models: fast model construction without running initializers."""

import functools

import numpy as np
import jax
import jax.numpy as jnp
from flax import nnx

from maxtext_like.models import ModelSpec, build_model

# A tiny GQA llama; tests override fields with .replace(...).
TINY = ModelSpec(vocab_size=128, emb_dim=32, num_query_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=64,
                 num_decoder_layers=2, remat_policy="none", attention="dot_product", scan_layers=False)


# Test programs are tiny: XLA's backend optimisations cost more compile time than they save.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def build(spec: ModelSpec, seed: int = 0, scale: float = 0.3):
  """The model for `spec` with N(0, scale^2) parameters drawn by numpy.

  Skips the real initializers (compiling them costs seconds on CPU); tests
  that need real init call `build_model` directly. RNG keys (the dropout
  stream) are seeded with `seed`.
  """
  graphdef, state = nnx.split(nnx.eval_shape(lambda: build_model(spec, nnx.Rngs(0))))
  rng = np.random.default_rng(seed)

  def fill(s):
    if jax.dtypes.issubdtype(s.dtype, jax.dtypes.prng_key):
      return jax.random.key(seed)
    if jnp.issubdtype(s.dtype, jnp.integer):
      return jnp.zeros(s.shape, s.dtype)
    return jnp.asarray(rng.normal(size=s.shape) * scale, s.dtype)

  return nnx.merge(graphdef, jax.tree.map(fill, state))


def restack(loop_params, axis: int) -> dict:
  """Loop layout decoder.layers.{i}.x -> scanned layout decoder.layers.x stacked on `axis` (pure dict)."""
  pure = nnx.to_pure_dict(loop_params)
  layers = [pure["decoder"]["layers"][i] for i in range(len(pure["decoder"]["layers"]))]
  pure["decoder"]["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs, axis=axis), *layers)
  return pure


def jit_forward(model):
  """jitted f(tokens, positions, segment_ids) -> logits with the model's current params."""
  graphdef, state = nnx.split(model)
  return jit(lambda t, p, s: nnx.merge(graphdef, state)(t, p, s))
