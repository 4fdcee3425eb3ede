"""Checkpointable batch iterators: `get_state()` -> JSON dict, `set_state(state)`.

The state is saved next to the model checkpoint; restoring it makes the next
batch exactly the one that would have come next. It carries a fingerprint of
the pipeline settings, and restoring into a pipeline built differently (other
seed, batch size, data, process shard, ...) is refused with the differences.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import numpy as np

STATE_VERSION = 1
Batch = dict[str, np.ndarray]


def to_jsonable(obj: Any) -> Any:
  """numpy scalars -> Python numbers, tuples -> lists, recursively."""
  if isinstance(obj, Mapping):
    return {str(k): to_jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [to_jsonable(v) for v in obj]
  if isinstance(obj, np.generic):
    return obj.item()
  if isinstance(obj, np.ndarray):
    return obj.tolist()
  return obj


def check_fingerprint(saved: Mapping[str, Any], current: Mapping[str, Any]) -> None:
  diffs = [
      f"{k}: checkpoint {saved.get(k)!r} != now {current.get(k)!r}"
      for k in sorted(set(saved) | set(current))
      if saved.get(k) != current.get(k)
  ]
  if diffs:
    raise ValueError(
        "data iterator state was saved by a differently built pipeline: "
        + "; ".join(diffs)
    )


def padding_batch(batch: int, seq_len: int) -> Batch:
  """An all-padding batch: every token 0, segmentation 0 (nothing enters the loss)."""
  return {k: np.zeros((batch, seq_len), np.int32) for k in (
      "inputs", "inputs_position", "inputs_segmentation", "targets", "targets_position", "targets_segmentation")}


class GrainBatchIterator(Iterator[Batch]):
  """Wraps a grain `DatasetIterator` of batches with a fingerprinted state.

  With `pad_batch_shape=(B, T)`, an exhausted iterator yields all-padding
  batches forever instead of stopping; the state counts them.
  """

  def __init__(self, grain_iterator, fingerprint: Mapping[str, Any], pad_batch_shape: tuple[int, int] | None = None):
    self._it = grain_iterator
    self._pad_shape = pad_batch_shape
    self._padding = 0  # padding batches yielded so far
    self.fingerprint = to_jsonable(dict(fingerprint, pad_when_exhausted=pad_batch_shape is not None))

  def __iter__(self) -> "GrainBatchIterator":
    return self

  def __next__(self) -> Batch:
    if self._padding == 0:
      try:
        return next(self._it)
      except StopIteration:
        if self._pad_shape is None:
          raise
    self._padding += 1
    return padding_batch(*self._pad_shape)

  def get_state(self) -> dict[str, Any]:
    return {
        "version": STATE_VERSION,
        "fingerprint": self.fingerprint,
        "grain": to_jsonable(self._it.get_state()),
        "padding_batches": self._padding,
    }

  def set_state(self, state: Mapping[str, Any]) -> None:
    if state.get("version") != STATE_VERSION:
      raise ValueError(f"unsupported data iterator state version {state.get('version')!r}")
    check_fingerprint(state["fingerprint"], self.fingerprint)
    self._it.set_state(state["grain"])
    self._padding = int(state.get("padding_batches", 0))


class ReuseFirstBatch(Iterator[Batch]):
  """Yields the first batch of `inner` forever (MaxText reuse_example_batch, for performance tests).

  The state is the inner iterator's state before that batch, so a restore reads it again.
  """

  def __init__(self, inner):
    self._inner, self._first, self._state = inner, None, inner.get_state()

  def __iter__(self) -> "ReuseFirstBatch":
    return self

  def __next__(self) -> Batch:
    if self._first is None:
      self._first = next(self._inner)
    return self._first

  def get_state(self) -> dict[str, Any]:
    return {"reuse_first_batch": self._state}

  def set_state(self, state: Mapping[str, Any]) -> None:
    self._inner.set_state(state["reuse_first_batch"])
    self._state, self._first = state["reuse_first_batch"], None
