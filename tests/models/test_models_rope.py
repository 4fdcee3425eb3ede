"""RoPE: llama3.1 frequency scaling vs a numpy transcription of the HF formula; rotate-half layout."""

import math

import numpy as np
import jax.numpy as jnp

from maxtext_like.models import ModelSpec, rope


def hf_llama3_inv_freq(dim, base, factor, low_freq_factor, high_freq_factor, old_context_len):
  """transformers.modeling_rope_utils._compute_llama3_parameters, in numpy."""
  inv_freq = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
  low_freq_wavelen = old_context_len / low_freq_factor
  high_freq_wavelen = old_context_len / high_freq_factor
  wavelen = 2 * math.pi / inv_freq
  inv_freq_llama = np.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
  smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
  smoothed = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
  is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
  return np.where(is_medium, smoothed, inv_freq_llama)


def test_llama31_scaling_matches_hf_formula():
  spec = ModelSpec(head_dim=128, rope_type="llama3.1", rope_max_timescale=500_000)
  got = np.asarray(rope.inv_freq_from_spec(spec))
  want = hf_llama3_inv_freq(128, 500_000, 8.0, 1.0, 4.0, 8192)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  plain = hf_llama3_inv_freq(128, 500_000, 1.0, 1.0, 4.0, 8192)  # factor 1: no change
  # all three bands are exercised: unchanged, divided by 8, and smoothed in between
  ratio = plain / want
  assert np.isclose(ratio, 1.0).any() and np.isclose(ratio, 8.0).any()
  assert ((ratio > 1.01) & (ratio < 7.99)).any()


def test_rope_use_scale_false_is_default_rope():
  spec = ModelSpec(head_dim=64, rope_type="llama3.1", rope_use_scale=False)
  want = 1.0 / (10_000 ** (np.arange(0, 64, 2) / 64))
  np.testing.assert_allclose(np.asarray(rope.inv_freq_from_spec(spec)), want, rtol=1e-5)


def test_rotate_half_layout_matches_hf_apply_rotary():
  """HF: q*cos + rotate_half(q)*sin with cos = cat(freqs, freqs)."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 5, 2, 8)).astype(np.float32)
  positions = np.array([[0, 1, 2, 7, 11]])
  inv_freq = 1.0 / (10_000 ** (np.arange(0, 8, 2) / 8))
  emb = np.concatenate([positions[..., None] * inv_freq] * 2, axis=-1)[:, :, None, :]
  rotated = np.concatenate([-x[..., 4:], x[..., :4]], axis=-1)
  want = x * np.cos(emb) + rotated * np.sin(emb)
  got = rope.apply_rope(jnp.asarray(x), jnp.asarray(positions), jnp.asarray(inv_freq, jnp.float32))
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)


def test_scores_depend_only_on_relative_position():
  rng = np.random.default_rng(1)
  q, k = (jnp.asarray(rng.normal(size=(1, 1, 1, 16)), jnp.float32) for _ in range(2))
  inv_freq = rope.default_inv_freq(16, 1, 10_000)

  def score(pq, pk):
    rq = rope.apply_rope(q, jnp.array([[pq]]), inv_freq)
    rk = rope.apply_rope(k, jnp.array([[pk]]), inv_freq)
    return float(jnp.sum(rq * rk))

  np.testing.assert_allclose(score(5, 2), score(103, 100), rtol=1e-4)
  assert abs(score(5, 2) - score(5, 4)) > 1e-3
