"""Token embedding table [V, D] with `attend` for tied output logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from maxtext_like.models.linears import matmul_precision, param
from maxtext_like.models.sharding import ACT_BTD, constrain


class Embed(nnx.Module):
  """`embedding` has logical axes ('vocab', 'embed'); init N(0, 1) as MaxText."""

  def __init__(self, vocab_size: int, emb_dim: int, *, dtype, weight_dtype, precision: str = "default",
               rngs: nnx.Rngs, use_iota: bool = False):
    self.dtype = dtype
    self.precision = precision
    self.use_iota = use_iota  # MaxText's use_iota_embed: one-hot(tokens) @ embedding instead of a gather
    init = nnx.initializers.normal(stddev=1.0)
    self.embedding = param(rngs, init, (vocab_size, emb_dim), weight_dtype, ("vocab", "embed"))

  def __call__(self, tokens_BT: jax.Array) -> jax.Array:
    if not jnp.issubdtype(tokens_BT.dtype, jnp.integer):
      raise ValueError(f"tokens must be integers, got {tokens_BT.dtype}")
    if self.use_iota:
      one_hot_BTV = (tokens_BT[..., None] == jnp.arange(self.embedding.shape[0], dtype=tokens_BT.dtype))
      x_BTD = jnp.dot(one_hot_BTV.astype(self.dtype), self.embedding[...].astype(self.dtype),
                      precision=matmul_precision(self.precision))
    else:
      x_BTD = jnp.take(self.embedding[...], tokens_BT, axis=0).astype(self.dtype)
    return constrain(x_BTD, ACT_BTD)

  def attend(self, x_BTD: jax.Array, dtype=None) -> jax.Array:
    """Logits x @ embedding.T in `dtype` (default: the module's dtype)."""
    dtype = dtype or self.dtype
    B, T, D = x_BTD.shape
    # 2-D matmul: much faster backward on XLA:CPU than the 3-D einsum (see linears.DenseGeneral).
    x_ND = x_BTD.astype(dtype).reshape(B * T, D)
    logits = jnp.dot(x_ND, self.embedding[...].astype(dtype).T, precision=matmul_precision(self.precision))
    return logits.reshape(B, T, -1)
