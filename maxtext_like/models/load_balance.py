"""Load-balanced context parallelism: the sequence order that gives every context shard equal causal work.

With the sequence split over C context shards, causal attention is lopsided: the shard holding the first T/C tokens
attends to few keys, the last shard to all of them. MaxText's `context_parallel_load_balance` reorders each
sequence before the model so that every shard holds early and late tokens alike:

  dual_chunk_swap  2C chunks; shard c holds chunks c and 2C-1-c        (T divisible by 2C)
  striped          shard c holds tokens c, c+C, c+2C, ...             (T divisible by C)

`permutation(T, C, strategy)[j]` is the original index of the token in slot j. The train and eval steps reorder
inputs, targets, positions and segment ids with it (`reorder_batch`); the loss is a sum over tokens, so it is
unchanged. Attention masks compare original indices (`ModelSpec.token_slots`), so causality, sliding windows and
packing mean what they meant before the reorder. Decoding never reorders (its attention reads a KV cache).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

STRATEGIES = ("dual_chunk_swap", "striped")


def strategy_of(reorder_strategy: str) -> str:
  """config's context_parallel_reorder_strategy -> a STRATEGIES name ('auto' is MaxText's dual chunk swap)."""
  return "dual_chunk_swap" if reorder_strategy == "auto" else reorder_strategy


def required_divisor(shards: int, strategy: str) -> int:
  """The sequence length must be a multiple of this."""
  return 2 * shards if strategy_of(strategy) == "dual_chunk_swap" else shards


def permutation(length: int, shards: int, strategy: str) -> np.ndarray:
  """Original token index of each slot of the reordered sequence (identity for one shard)."""
  strategy = strategy_of(strategy)
  if strategy not in STRATEGIES:
    raise ValueError(f"unknown reorder strategy {strategy!r}; allowed: {STRATEGIES}")
  if shards <= 1:
    return np.arange(length)
  if length % required_divisor(shards, strategy):
    raise ValueError(f"sequence length {length} is not a multiple of {required_divisor(shards, strategy)} "
                     f"({strategy} over {shards} context shards)")
  if strategy == "striped":
    return np.arange(length).reshape(length // shards, shards).T.reshape(-1)
  chunks = np.arange(length).reshape(2 * shards, length // (2 * shards))
  order = [i for c in range(shards) for i in (c, 2 * shards - 1 - c)]
  return chunks[order].reshape(-1)


def reorder_batch(batch: dict[str, jax.Array], shards: int, strategy: str) -> dict[str, jax.Array]:
  """Every [B, T, ...] array of the batch in load-balanced order (a gather of int tokens, before the embedding)."""
  if shards <= 1:
    return batch
  return {k: jnp.take(v, permutation(v.shape[1], shards, strategy), axis=1) for k, v in batch.items()}


def attention_indices(spec, B: int, T: int) -> tuple[jax.Array, jax.Array | None]:
  """(q_idx_BT, kv_idx_S) for a cache-less forward of a `ModelSpec`: slot order, or the original token order when
  the inputs were reordered for load-balanced context parallelism (kv_idx_S None: slot s has index s)."""
  if spec.context_load_balance_shards <= 1:
    return jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T)), None
  slots_T = jnp.asarray(spec.token_slots(T), jnp.int32)
  return jnp.broadcast_to(slots_T, (B, T)), slots_T
