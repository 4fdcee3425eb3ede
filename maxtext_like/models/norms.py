"""RMSNorm with a learned scale (logical axis 'norm').

With scale_offset=1 (Gemma) the parameter stores Hugging Face's w and the norm
multiplies by (1 + w) in float32 before casting, exactly as transformers'
GemmaRMSNorm; the parameter then initialises to 0 (identity norm).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from maxtext_like.models.linears import param


def rms_normalize(x: jax.Array, epsilon: float) -> jax.Array:
  """x / sqrt(mean(x^2) + eps) over the last axis, in float32, without a scale (Llama 4's QK "L2" norm)."""
  x32 = x.astype(jnp.float32)
  return (x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + epsilon)).astype(x.dtype)


class RMSNorm(nnx.Module):
  """y = x / sqrt(mean(x^2) + eps) * scale, reduced in float32."""

  def __init__(self, num_features: int, *, epsilon: float, dtype, weight_dtype, rngs: nnx.Rngs,
               scale_offset: float = 0.0):
    self.epsilon = epsilon
    self.dtype = dtype
    self.scale_offset = scale_offset
    init = nnx.initializers.constant(1.0 - scale_offset) if scale_offset else nnx.initializers.ones
    self.scale = param(rngs, init, (num_features,), weight_dtype, ("norm",))

  def __call__(self, x_BTD: jax.Array) -> jax.Array:
    x = x_BTD.astype(jnp.float32)
    y = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.epsilon)
    if self.scale_offset:
      return (y * (self.scale[...].astype(jnp.float32) + self.scale_offset)).astype(self.dtype)
    return y.astype(self.dtype) * self.scale[...].astype(self.dtype)


class LayerNorm(nnx.Module):
  """y = (x - mean) / sqrt(var + eps) * scale + bias over the last axis, reduced in float32 (gpt3).

  `scale` stores the multiplier itself (init 1), as torch's LayerNorm; MaxText's Gpt3LayerNorm stores
  scale - 1 (init 0) instead."""

  def __init__(self, num_features: int, *, epsilon: float, dtype, weight_dtype, rngs: nnx.Rngs):
    self.epsilon = epsilon
    self.dtype = dtype
    self.scale = param(rngs, nnx.initializers.ones, (num_features,), weight_dtype, ("norm",))
    self.bias = param(rngs, nnx.initializers.zeros, (num_features,), weight_dtype, ("norm",))

  def __call__(self, x_BTD: jax.Array) -> jax.Array:
    x = x_BTD.astype(jnp.float32)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    y = ((x - mean) * jax.lax.rsqrt(var + self.epsilon)).astype(self.dtype)
    return y * self.scale[...].astype(self.dtype) + self.bias[...].astype(self.dtype)
