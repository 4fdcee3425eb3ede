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


class GrainBatchIterator(Iterator[Batch]):
  """Wraps a grain `DatasetIterator` of batches with a fingerprinted state."""

  def __init__(self, grain_iterator, fingerprint: Mapping[str, Any]):
    self._it = grain_iterator
    self.fingerprint = to_jsonable(dict(fingerprint))

  def __iter__(self) -> "GrainBatchIterator":
    return self

  def __next__(self) -> Batch:
    return next(self._it)

  def get_state(self) -> dict[str, Any]:
    return {
        "version": STATE_VERSION,
        "fingerprint": self.fingerprint,
        "grain": to_jsonable(self._it.get_state()),
    }

  def set_state(self, state: Mapping[str, Any]) -> None:
    if state.get("version") != STATE_VERSION:
      raise ValueError(f"unsupported data iterator state version {state.get('version')!r}")
    check_fingerprint(state["fingerprint"], self.fingerprint)
    self._it.set_state(state["grain"])
