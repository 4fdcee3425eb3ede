"""A streamed Hugging Face dataset (`datasets.load_dataset(..., streaming=True)`) as a checkpointable grain source.

    HFStreamSource(iterable_dataset, column, name).iter_dataset(...) -> grain.IterDataset of (row, document)
      -> split_dataset_by_node(rank=process_index, world_size=process_count)
         (whole files per process when the file count divides by process_count, else every process_count-th row)
      -> shuffle(seed, buffer_size)   HF's buffer shuffle (also shuffles the file order); epoch e uses set_epoch(e)
      -> repeat(num_epoch)            num_epoch <= 0: forever

For data sets too large to convert to arrow first (the map-style `HFSource`): nothing is cached, rows are read as
they are needed. The iterator state is JSON: `{"epoch", "consumed", "hf"}`.

- Not shuffled: `hf` is HF's `IterableDataset.state_dict()` (datasets >= 2.18), resumed with `load_state_dict`
  (O(1), exact).
- Shuffled: HF's state_dict drops the shuffle buffer on resume (the buffered rows are lost, so the next batches
  differ), so the state is a skip count instead: a restore re-opens the epoch's stream (same seed, same epoch ->
  same order) and skips `consumed` rows without tokenizing them. Exact; costs re-reading this process's share of
  the epoch up to that point.
"""

from __future__ import annotations

from typing import Any

import grain

from maxtext_like.data.errors import DataError
from maxtext_like.data.records import _as_document


class HFStreamSource:
  """One column of a streamed `datasets.IterableDataset` (no length, no random access)."""

  streaming = True

  def __init__(self, dataset, column: str, name: str):
    names = dataset.column_names  # None when the builder does not know its features before reading
    if names is not None and column not in names:
      raise DataError(f"{name}: no column {column!r} (train_data_columns/eval_data_columns); columns are {names}")
    self.dataset, self.column, self.name = dataset, column, name

  def where(self, i: int) -> str:
    return f"{self.name} (streamed) document {i} of this process's shard in this epoch"

  def iter_dataset(self, *, shuffle: bool, buffer_size: int, seed: int, num_epoch: int, process_index: int,
                   process_count: int) -> grain.IterDataset:
    return _StreamDataset(self, dict(shuffle=shuffle, buffer_size=max(int(buffer_size), 1), seed=seed, num_epoch=num_epoch,
                                     process_index=process_index, process_count=process_count))


class _StreamDataset(grain.IterDataset):

  def __init__(self, src: HFStreamSource, opts: dict):
    super().__init__()
    self._src, self._opts = src, opts

  def __iter__(self):
    return _StreamIterator(self._src, **self._opts)


class _StreamIterator(grain.DatasetIterator):
  """(row in this epoch, document); see the module docstring for the state."""

  def __init__(self, src: HFStreamSource, *, shuffle, buffer_size, seed, num_epoch, process_index, process_count):
    super().__init__()
    self._src, self._shuffle, self._buffer, self._seed = src, shuffle, buffer_size, seed
    self._num_epoch, self._index, self._count = num_epoch, process_index, process_count
    self._epoch, self._consumed = 0, 0
    self._ds = self._it = None
    self._resume: tuple[dict | None, int] = (None, 0)  # (HF state_dict, rows to skip) for the next open

  def _open(self) -> None:
    from datasets.distributed import split_dataset_by_node  # pylint: disable=g-import-not-at-top
    ds = split_dataset_by_node(self._src.dataset, rank=self._index, world_size=self._count)
    if self._shuffle:
      ds = ds.shuffle(seed=self._seed, buffer_size=self._buffer)
    ds.set_epoch(self._epoch)
    hf_state, skip = self._resume
    self._resume = (None, 0)
    if hf_state is not None:
      ds.load_state_dict(hf_state)
    self._ds, self._it = ds, iter(ds)
    for _ in range(skip):
      next(self._it)

  def __next__(self):
    while True:
      if self._num_epoch > 0 and self._epoch >= self._num_epoch:
        raise StopIteration
      if self._it is None:
        self._open()
      try:
        row = next(self._it)
      except StopIteration:
        if self._consumed == 0:
          raise DataError(f"process {self._index}/{self._count} got no documents from {self._src.name}") from None
        self._epoch, self._consumed, self._ds, self._it = self._epoch + 1, 0, None, None
        continue
      i, self._consumed = self._consumed, self._consumed + 1
      if self._src.column not in row:
        raise DataError(f"{self._src.where(i)}: no column {self._src.column!r}; columns are {sorted(row)}")
      return i, _as_document(row[self._src.column], self._src.where(i), self._src.column)

  def get_state(self) -> dict[str, Any]:
    hf = None
    if not self._shuffle:
      hf = self._ds.state_dict() if self._ds is not None else self._resume[0]
    return {"epoch": self._epoch, "consumed": self._consumed, "hf": hf}

  def set_state(self, state: dict[str, Any]) -> None:
    self._epoch, self._consumed = int(state["epoch"]), int(state["consumed"])
    self._ds = self._it = None
    hf = state.get("hf")
    self._resume = (hf, 0) if hf is not None else (None, self._consumed)
