"""Rotary position embeddings, rotate-half layout (as Hugging Face llama).

Frequency i (of H/2) is 1 / timescale_i with
timescale_i = min_timescale * (max_timescale / min_timescale) ** (2i / H);
the llama3.1 variant rescales low frequencies as in Meta's / HF's code (factors from the config keys
rope_llama31_*: Llama 3.1 8 / 1 / 4 / 8192, Llama 3.2 1B/3B factor 32, Llama 4 Scout 16 / 1 / 1 / 8192).

Two pairings of the H dimensions: rotate-half (x[i], x[i + H/2]) as HF llama, or interleaved (x[2i], x[2i+1]) as
Meta's complex-number form (DeepSeek, HF Llama 4). `rotate_qk` rotates queries and keys together and leaves them
as they are for a NoPE layer (inv_freq None).
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
  """llama3.1 scaling: long wavelengths / factor, short kept, smooth in between (no in-between band when
  low_freq_factor == high_freq_factor, as Llama 4 Scout)."""
  low_freq_wavelen = original_max_position / low_freq_factor
  high_freq_wavelen = original_max_position / high_freq_factor
  wavelen = 2 * math.pi / inv_freq
  band = high_freq_factor - low_freq_factor
  smooth = (original_max_position / wavelen - low_freq_factor) / (band if band else 1.0)
  smoothed = (1 - smooth) * inv_freq / factor + smooth * inv_freq
  return jnp.where(wavelen < high_freq_wavelen, inv_freq,
                   jnp.where(wavelen > low_freq_wavelen, inv_freq / factor, smoothed))


def yarn_get_mscale(factor: float, mscale: float = 1.0) -> float:
  """YaRN's attention temperature 0.1 * mscale * ln(factor) + 1 (1 for factor <= 1)."""
  return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def yarn_inv_freq(dim: int, base: float, factor: float, original_max_position: int, beta_fast: float,
                  beta_slow: float, truncate: bool = True) -> jax.Array:
  """YaRN (NTK-by-parts) inverse frequencies [dim/2], as transformers' `_compute_yarn_parameters`."""

  def correction_dim(num_rotations):
    return dim * math.log(original_max_position / (num_rotations * 2 * math.pi)) / (2 * math.log(base))

  low, high = correction_dim(beta_fast), correction_dim(beta_slow)
  if truncate:
    low, high = math.floor(low), math.ceil(high)
  low, high = max(low, 0), min(high, dim - 1)
  if low == high:
    high += 0.001
  ramp = jnp.clip((jnp.arange(dim // 2, dtype=jnp.float32) - low) / (high - low), 0, 1)
  extrapolation = 1.0 / base ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)
  interpolation = extrapolation / factor
  keep = 1 - ramp  # 1: extrapolate (high frequencies kept), 0: interpolate (divided by factor)
  return interpolation * (1 - keep) + extrapolation * keep


def rope_scale_from_spec(spec) -> float:
  """Factor on the rotated vectors (HF's cos/sin `attention_scaling`): YaRN's mscale when rope_attention_scaling."""
  if spec.rope_type == "yarn" and spec.rope_attention_scaling:
    return yarn_get_mscale(spec.rope_factor)
  return 1.0


def rope_kwargs(spec) -> dict:
  """`apply_rope` keyword arguments for a spec (layout and scale only matter for YaRN)."""
  return {"interleave": spec.rope_type == "yarn" and spec.rope_interleave, "scale": rope_scale_from_spec(spec)}


def inv_freq_from_spec(spec, dim: int | None = None) -> jax.Array:
  """Inverse frequencies [dim/2] for a ModelSpec (dim defaults to head_dim; MLA rotates qk_rope_head_dim)."""
  dim = spec.head_dim if dim is None else dim
  if spec.rope_type == "yarn":
    return yarn_inv_freq(dim, spec.rope_max_timescale, spec.rope_factor, spec.original_max_position_embeddings,
                         spec.beta_fast, spec.beta_slow, spec.rope_truncate)
  inv_freq = default_inv_freq(dim, spec.rope_min_timescale, spec.rope_max_timescale)
  if spec.rope_type == "llama3.1" and spec.rope_use_scale:
    inv_freq = llama31_inv_freq(inv_freq, spec.rope_llama31_factor, spec.rope_llama31_low_freq_factor,
                                spec.rope_llama31_high_freq_factor, spec.rope_llama31_original_max_position)
  elif spec.rope_type == "default":
    inv_freq = inv_freq / spec.rope_linear_scaling_factor
  return inv_freq


def apply_rope(x_BTNH: jax.Array, positions_BT: jax.Array, inv_freq: jax.Array, *, interleave: bool = False,
               scale: float = 1.0) -> jax.Array:
  """Rotates pairs (x[i], x[i + H/2]) by angle position * inv_freq[i], in float32.

  interleave=True rotates adjacent pairs (x[2i], x[2i+1]) instead (DeepSeek's layout, HF DeepseekV2/V3 with
  rope_interleave); the result is multiplied by `scale` (YaRN attention scaling).
  """
  angle_BTh = positions_BT[..., None].astype(jnp.float32) * inv_freq
  if interleave:
    cos, sin = jnp.cos(angle_BTh)[:, :, None, :], jnp.sin(angle_BTh)[:, :, None, :]
    x = x_BTNH.astype(jnp.float32)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = jnp.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).reshape(x.shape)
    return (out * scale if scale != 1.0 else out).astype(x_BTNH.dtype)
  angle_BT1H = jnp.concatenate([angle_BTh, angle_BTh], axis=-1)[:, :, None, :]
  x = x_BTNH.astype(jnp.float32)
  x1, x2 = jnp.split(x, 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  out = x * jnp.cos(angle_BT1H) + rotated * jnp.sin(angle_BT1H)
  if scale != 1.0:
    out = out * scale
  return out.astype(x_BTNH.dtype)


def rotate_qk(q_BTNH: jax.Array, k_BTKH: jax.Array, positions_BT: jax.Array, inv_freq: jax.Array | None, *,
              interleave: bool = False, scale: float = 1.0) -> tuple[jax.Array, jax.Array]:
  """Queries and keys rotated by `apply_rope`; unchanged when inv_freq is None (a NoPE layer, Llama 4)."""
  if inv_freq is None:
    return q_BTNH, k_BTKH
  kw = dict(interleave=interleave, scale=scale)
  return apply_rope(q_BTNH, positions_BT, inv_freq, **kw), apply_rope(k_BTKH, positions_BT, inv_freq, **kw)
