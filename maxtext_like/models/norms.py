"""RMSNorm with a learned scale (logical axis 'norm')."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from maxtext_like.models.linears import param


class RMSNorm(nnx.Module):
  """y = x / sqrt(mean(x^2) + eps) * scale, reduced in float32."""

  def __init__(self, num_features: int, *, epsilon: float, dtype, weight_dtype, rngs: nnx.Rngs):
    self.epsilon = epsilon
    self.dtype = dtype
    self.scale = param(rngs, nnx.initializers.ones, (num_features,), weight_dtype, ("norm",))

  def __call__(self, x_BTD: jax.Array) -> jax.Array:
    x = x_BTD.astype(jnp.float32)
    y = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.epsilon)
    return y.astype(self.dtype) * self.scale[...].astype(self.dtype)
