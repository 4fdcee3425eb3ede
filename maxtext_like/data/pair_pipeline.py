"""Preference pairs -> DPO batches: one (chosen, rejected) pair per row, never packed.

    source rows -> shard / shuffle / repeat (as text_pipeline) -> Formatter.dpo -> pad each side to seq_len -> batch

A batch holds the usual six keys (features.BATCH_KEYS) for the chosen sequences and the same six with a
"rejected_" prefix for the rejected ones, row i of each from the same pair. Only response tokens count
(targets_segmentation is 0 on the shared prompt), so per-sequence log-probabilities are sums over the response.
Packing would put several pairs in a row and need per-segment sums; DPO refuses it (config rule dpo_no_packing),
as MaxText does.
"""

from __future__ import annotations

import grain

from maxtext_like.data import checkpointable
from maxtext_like.data import features
from maxtext_like.data import records
from maxtext_like.data import text_pipeline
from maxtext_like.data.errors import DataError

REJECTED = "rejected_"


class _FormatPair(grain.transforms.Map):
  """(row, record) -> one batch row: the chosen and rejected sequences, each padded (or cut) to seq_len."""

  def __init__(self, formatter, seq_len: int, vocab_size: int | None, src):
    self._formatter, self._seq_len, self._vocab_size, self._src = formatter, seq_len, vocab_size, src

  def map(self, element) -> dict:
    row, record = element
    where = self._src.where(row)
    out = {}
    for prefix, enc in zip(("", REJECTED), self._formatter.dpo(record, where)):
      if self._vocab_size and enc.ids.size and enc.ids.max() >= self._vocab_size:
        raise DataError(f"{where}: token id {int(enc.ids.max())} is outside [0, vocab_size={self._vocab_size})")
      piece = features.lm_pieces(enc.ids, self._seq_len, enc.mask)[:1]  # too long: the first seq_len targets
      if not piece:
        raise DataError(f"{where}: a chosen/rejected sequence has fewer than 2 tokens")
      out.update({prefix + k: v for k, v in features.pad_unpacked(piece[0], self._seq_len).items()})
    return out


def make_pair_iterator(*, source, formatter, seq_len: int, global_batch_size: int, shuffle: bool, seed: int,
                       num_epoch: int, process_index: int = 0, process_count: int = 1, vocab_size: int | None = None,
                       shuffle_window: int = 0, num_threads: int = 2, prefetch_buffer_size: int = 64
                       ) -> checkpointable.GrainBatchIterator:
  """This process's [global_batch_size // process_count] pairs per batch (keys: see the module docstring)."""
  if global_batch_size < 1 or process_count < 1 or global_batch_size % process_count:
    raise ValueError(f"global_batch_size ({global_batch_size}) must be a positive multiple of process_count ({process_count})")
  read = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch_buffer_size)
  ds = text_pipeline._component(  # pylint: disable=protected-access
      source, tokenizer=formatter.tokenizer, add_bos=False, add_eos=False, vocab_size=vocab_size, tokenize=True,
      shuffle=shuffle, shuffle_window=shuffle_window, seed=seed, num_epoch=num_epoch, process_index=process_index,
      process_count=process_count, read_options=read, transform=_FormatPair(formatter, seq_len, vocab_size, source))
  local = global_batch_size // process_count
  fingerprint = dict(source=[records.source_name(source), len(source)], dpo=list(formatter.columns),
                     template=formatter.template_source, seq_len=seq_len, global_batch_size=global_batch_size,
                     shuffle=shuffle, seed=seed, num_epoch=num_epoch, process_index=process_index,
                     process_count=process_count)
  return checkpointable.GrainBatchIterator(iter(ds.batch(local, drop_remainder=True)), fingerprint)

