"""Helpers for the pipeline tests: batch invariants and segment extraction."""

import numpy as np

from maxtext_like.data import BATCH_KEYS


def segments(batch):
  """Checks the layout invariants of `batch`; yields each segment's token sequence.

  A segment's sequence is its inputs plus its last target, i.e. the original
  run of document tokens the segment was cut from.
  """
  assert sorted(batch) == sorted(BATCH_KEYS)
  shape = batch["inputs"].shape
  for key in BATCH_KEYS:
    assert batch[key].dtype == np.int32 and batch[key].shape == shape, key
  np.testing.assert_array_equal(batch["inputs_segmentation"], batch["targets_segmentation"])
  np.testing.assert_array_equal(batch["inputs_position"], batch["targets_position"])
  for r in range(shape[0]):
    seg = batch["inputs_segmentation"][r]
    pos = batch["inputs_position"][r]
    pad = seg == 0
    assert not pos[pad].any() and not batch["inputs"][r][pad].any()
    ids = [int(s) for s in np.unique(seg) if s]
    assert ids == list(range(1, len(ids) + 1)), ids
    for s in ids:
      idx = np.flatnonzero(seg == s)
      np.testing.assert_array_equal(idx, np.arange(idx[0], idx[0] + len(idx)))  # contiguous
      np.testing.assert_array_equal(pos[idx], np.arange(len(idx)))  # restart at 0
      inputs, targets = batch["inputs"][r][idx], batch["targets"][r][idx]
      np.testing.assert_array_equal(inputs[1:], targets[:-1])  # shift within segment
      yield tuple(int(t) for t in inputs) + (int(targets[-1]),)


def is_window(seq, docs):
  """True if `seq` is a contiguous run of tokens of one of `docs`."""
  n = len(seq)
  return any(
      tuple(doc[i:i + n]) == seq for doc in docs for i in range(len(doc) - n + 1)
  )
