"""Synthetic batches: random tokens, one full-length segment per row.

For benchmarks and smoke tests with no data or tokenizer. Batch `s` depends
only on (seed, s), so the iterator is checkpointable by its step counter.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import numpy as np

from maxtext_like.data.checkpointable import Batch, check_fingerprint


class SyntheticIterator(Iterator[Batch]):
  """Yields [global_batch_size, seq_len] int32 batches in the MaxText layout."""

  def __init__(self, *, global_batch_size: int, seq_len: int, vocab_size: int, seed: int):
    if min(global_batch_size, seq_len, vocab_size) < 1:
      raise ValueError(
          f"global_batch_size, seq_len and vocab_size must be >= 1, got"
          f" {global_batch_size}, {seq_len}, {vocab_size}"
      )
    self.fingerprint = dict(
        global_batch_size=global_batch_size, seq_len=seq_len,
        vocab_size=vocab_size, seed=seed,
    )
    self._step = 0

  def __iter__(self) -> "SyntheticIterator":
    return self

  def __next__(self) -> Batch:
    f = self.fingerprint
    b, t = f["global_batch_size"], f["seq_len"]
    rng = np.random.default_rng([f["seed"], self._step])
    self._step += 1
    tokens = rng.integers(0, f["vocab_size"], size=(b, t + 1), dtype=np.int32)
    position = np.broadcast_to(np.arange(t, dtype=np.int32), (b, t))
    segmentation = np.ones((b, t), np.int32)
    return {
        "inputs": tokens[:, :-1].copy(),
        "inputs_position": position.copy(),
        "inputs_segmentation": segmentation,
        "targets": tokens[:, 1:].copy(),
        "targets_position": position.copy(),
        "targets_segmentation": segmentation.copy(),
    }

  def get_state(self) -> dict[str, Any]:
    return {"step": self._step, "fingerprint": dict(self.fingerprint)}

  def set_state(self, state: Mapping[str, Any]) -> None:
    check_fingerprint(state["fingerprint"], self.fingerprint)
    self._step = int(state["step"])


def make_synthetic_iterator(
    *, global_batch_size: int, seq_len: int, vocab_size: int, seed: int
) -> SyntheticIterator:
  """Random-token batches; targets are inputs shifted left by one."""
  return SyntheticIterator(
      global_batch_size=global_batch_size, seq_len=seq_len,
      vocab_size=vocab_size, seed=seed,
  )
