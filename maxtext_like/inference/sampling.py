"""Next-token sampling: greedy, weighted (temperature), nucleus, top-k and composite (top-k, then nucleus, then temperature)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class SamplingOptions:
  strategy: str = "greedy"
  temperature: float = 1.0
  top_k: int = 0
  nucleus_p: float = -1.0


def _top_k(logits_BV, k):
  kth = jax.lax.top_k(logits_BV, k)[0][:, -1:]
  return jnp.where(logits_BV < kth, -jnp.inf, logits_BV)


def _nucleus(logits_BV, p):
  sorted_BV = jnp.sort(logits_BV, axis=-1)[:, ::-1]
  cum = jnp.cumsum(jax.nn.softmax(sorted_BV, axis=-1), axis=-1)
  # Keep the smallest prefix whose mass reaches p (always at least the top token).
  cutoff_idx = jnp.sum(cum < p, axis=-1, keepdims=True)
  cutoff = jnp.take_along_axis(sorted_BV, jnp.minimum(cutoff_idx, logits_BV.shape[-1] - 1), axis=-1)
  return jnp.where(logits_BV < cutoff, -jnp.inf, logits_BV)


def sample(logits_BV: jax.Array, key: jax.Array, o: SamplingOptions) -> jax.Array:
  logits_BV = logits_BV.astype(jnp.float32)
  if o.strategy == "greedy":
    return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
  if o.strategy in ("topk", "composite") and o.top_k > 0:
    logits_BV = _top_k(logits_BV, o.top_k)
  if o.strategy in ("nucleus", "composite") and 0 < o.nucleus_p < 1:
    logits_BV = _nucleus(logits_BV, o.nucleus_p)
  return jax.random.categorical(key, logits_BV / o.temperature, axis=-1).astype(jnp.int32)
