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


def _hf_llama3_inv_freq(head_dim, theta, factor, low, high, original):
  """transformers' own llama3 RoPE init (ROPE_INIT_FUNCTIONS['llama3'])."""
  from transformers import LlamaConfig
  from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
  config = LlamaConfig(hidden_size=head_dim * 4, num_attention_heads=4, head_dim=head_dim,
                       max_position_embeddings=int(original * factor),
                       rope_parameters={"rope_type": "llama3", "rope_theta": theta, "factor": factor,
                                        "low_freq_factor": low, "high_freq_factor": high,
                                        "original_max_position_embeddings": original})
  inv_freq, attention_scaling = ROPE_INIT_FUNCTIONS["llama3"](config)
  assert attention_scaling == 1.0
  return inv_freq.numpy()


def test_llama3_scaling_keys_from_the_config_match_transformers():
  """Llama 3.2 1B/3B (factor 32) and Llama 4 Scout (16 / 1 / 1: no in-between band) through config keys ->
  ModelSpec -> inv_freq."""
  from maxtext_like.config import load_config
  from maxtext_like.runtime.model_spec import model_spec
  for head_dim, factor, low, high in ((64, 32.0, 1.0, 4.0), (128, 16.0, 1.0, 1.0)):
    cfg = load_config(["base.yml", "override_model_config=true", "rope_type=llama3.1", "rope_max_timescale=500000",
                       f"head_dim={head_dim}", f"rope_llama31_factor={factor}", f"rope_llama31_low_freq_factor={low}",
                       f"rope_llama31_high_freq_factor={high}", "rope_llama31_original_max_position=8192"], env={})
    spec = model_spec(cfg)
    assert (spec.rope_llama31_factor, spec.rope_llama31_high_freq_factor) == (factor, high)
    got = np.asarray(rope.inv_freq_from_spec(spec))
    want = _hf_llama3_inv_freq(head_dim, 500_000.0, factor, low, high, 8192)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert not np.allclose(got, np.asarray(rope.inv_freq_from_spec(spec.replace(rope_llama31_factor=8.0))))


def test_interleaved_pairing_matches_llama4_complex_rotation():
  """HF Llama 4 (and Meta's code): view (x[2i], x[2i+1]) as a complex number and multiply by e^{i p f_i}."""
  import torch
  from transformers.models.llama4.modeling_llama4 import apply_rotary_emb
  rng = np.random.default_rng(2)
  q, k = rng.normal(size=(2, 5, 4, 8)).astype(np.float32), rng.normal(size=(2, 5, 2, 8)).astype(np.float32)
  positions = np.array([[0, 1, 2, 7, 11], [3, 4, 5, 6, 100]])
  inv_freq = (1.0 / (10_000 ** (np.arange(0, 8, 2) / 8))).astype(np.float32)
  freqs = torch.tensor(positions[..., None] * inv_freq, dtype=torch.float32)
  want_q, want_k = apply_rotary_emb(torch.tensor(q), torch.tensor(k), torch.polar(torch.ones_like(freqs), freqs))
  got_q, got_k = rope.rotate_qk(jnp.asarray(q), jnp.asarray(k), jnp.asarray(positions), jnp.asarray(inv_freq),
                                interleave=True)
  np.testing.assert_allclose(np.asarray(got_q), want_q.numpy(), atol=1e-5)
  np.testing.assert_allclose(np.asarray(got_k), want_k.numpy(), atol=1e-5)
  same_q, same_k = rope.rotate_qk(jnp.asarray(q), jnp.asarray(k), jnp.asarray(positions), None)  # a NoPE layer
  np.testing.assert_array_equal(np.asarray(same_q), q)
  np.testing.assert_array_equal(np.asarray(same_k), k)
