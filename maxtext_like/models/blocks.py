"""What every decoder block does around its sublayers: the remat-tagged, sharded input, the dropout key split,
the dropout on the MLP branch and the sharded output. Family blocks call these instead of repeating them.
"""

from __future__ import annotations

import jax
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from maxtext_like.models.sharding import ACT_BTD, constrain


def layer_input(x_BTD: jax.Array) -> jax.Array:
  """The block's input, named 'decoder_layer_input' for remat policies and constrained to the activation layout."""
  return constrain(checkpoint_name(x_BTD, "decoder_layer_input"), ACT_BTD)


def layer_output(y_BTD: jax.Array) -> jax.Array:
  return constrain(y_BTD, ACT_BTD)


def branch_keys(dropout_key: jax.Array | None) -> tuple[jax.Array | None, jax.Array | None]:
  """(key inside the MLP, key for the dropout on the MLP's output); (None, None) when not dropping out."""
  return (None, None) if dropout_key is None else tuple(jax.random.split(dropout_key))


def drop(dropout: nnx.Dropout, y_BTD: jax.Array, key: jax.Array | None) -> jax.Array:
  """Dropout with `key`, or the identity when key is None (inference, or dropout off)."""
  return dropout(y_BTD, deterministic=key is None, rngs=key)
