"""Rotary position embeddings, rotate-half layout (as Hugging Face llama).

Frequency i (of H/2) is 1 / timescale_i with
timescale_i = min_timescale * (max_timescale / min_timescale) ** (2i / H);
the llama3.1 variant rescales low frequencies as in Meta's / HF's code.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def default_inv_freq(head_dim: int, min_timescale: float, max_timescale: float) -> jax.Array:
  """Inverse frequencies [H/2] of plain RoPE."""
  fraction = 2 * jnp.arange(head_dim // 2, dtype=jnp.float32) / head_dim
  timescale = min_timescale * (max_timescale / min_timescale) ** fraction
  return 1.0 / timescale


def llama31_inv_freq(inv_freq: jax.Array, factor: float, low_freq_factor: float, high_freq_factor: float,
                     original_max_position: int) -> jax.Array:
  """llama3.1 scaling: long wavelengths / factor, short kept, smooth in between."""
  low_freq_wavelen = original_max_position / low_freq_factor
  high_freq_wavelen = original_max_position / high_freq_factor
  wavelen = 2 * math.pi / inv_freq
  smooth = (original_max_position / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
  smoothed = (1 - smooth) * inv_freq / factor + smooth * inv_freq
  return jnp.where(wavelen < high_freq_wavelen, inv_freq,
                   jnp.where(wavelen > low_freq_wavelen, inv_freq / factor, smoothed))


def inv_freq_from_spec(spec) -> jax.Array:
  """Inverse frequencies [H/2] for a ModelSpec."""
  inv_freq = default_inv_freq(spec.head_dim, spec.rope_min_timescale, spec.rope_max_timescale)
  if spec.rope_type == "llama3.1" and spec.rope_use_scale:
    inv_freq = llama31_inv_freq(inv_freq, spec.rope_llama31_factor, spec.rope_llama31_low_freq_factor,
                                spec.rope_llama31_high_freq_factor, spec.rope_llama31_original_max_position)
  elif spec.rope_type == "default":
    inv_freq = inv_freq / spec.rope_linear_scaling_factor
  return inv_freq


def apply_rope(x_BTNH: jax.Array, positions_BT: jax.Array, inv_freq: jax.Array) -> jax.Array:
  """Rotates pairs (x[i], x[i + H/2]) by angle position * inv_freq[i], in float32."""
  angle_BTh = positions_BT[..., None].astype(jnp.float32) * inv_freq
  angle_BT1H = jnp.concatenate([angle_BTh, angle_BTh], axis=-1)[:, :, None, :]
  x = x_BTNH.astype(jnp.float32)
  x1, x2 = jnp.split(x, 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  out = x * jnp.cos(angle_BT1H) + rotated * jnp.sin(angle_BT1H)
  return out.astype(x_BTNH.dtype)
