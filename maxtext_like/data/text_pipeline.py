"""Text files -> tokenized, packed, batched LM batches, as a grain pipeline.

    documents (all files, in order)
      -> [process_index::process_count]     this process's disjoint shard
      -> shuffle(seed)                      reshuffled every epoch
      -> repeat(num_epoch)                  num_epoch <= 0: forever
      -> tokenize (add_bos / add_eos)       on grain's read threads
      -> split into shifted pieces          features.lm_pieces
      -> pack ('first_fit' | 'concat_then_split') or pad one piece per row
      -> batch(global_batch_size // process_count, drop_remainder=True)

Each process yields only its local share of the global batch; assembling
global arrays is the train loop's job. The returned iterator is checkpointable
with `get_state()` / `set_state()` (grain's iterator state, JSON-serialisable).
With a finite `num_epoch`, processes may run out after different numbers of
batches; multi-process training should use num_epoch <= 0 and stop by steps.
"""

from __future__ import annotations

import functools
from typing import Sequence

import grain
import numpy as np

from maxtext_like.data import checkpointable
from maxtext_like.data import documents
from maxtext_like.data import features
from maxtext_like.data.tokenizers import Tokenizer

PACKING_TYPES = ("first_fit", "concat_then_split")
# Tokenization runs on grain's read threads, ahead of the consumer.
_READ_OPTIONS = dict(num_threads=2, prefetch_buffer_size=64)


class _Tokenize(grain.transforms.Map):
  """Document text -> int32 token ids (picklable for grain workers)."""

  def __init__(self, tokenizer: Tokenizer, add_bos: bool, add_eos: bool):
    self._tokenizer, self._add_bos, self._add_eos = tokenizer, add_bos, add_eos

  def map(self, text: str) -> np.ndarray:
    ids = self._tokenizer.encode(text, add_bos=self._add_bos, add_eos=self._add_eos)
    return np.asarray(ids, dtype=np.int32)


class _Pieces(grain.experimental.FlatMapTransform):
  """Token ids -> shifted (inputs, targets) pieces of at most seq_len."""

  max_fan_out = 1 << 20  # only used by MapDataset flat maps; ours is an IterDataset.

  def __init__(self, seq_len: int):
    self._seq_len = seq_len

  def flat_map(self, tokens: np.ndarray):
    return features.lm_pieces(tokens, self._seq_len)


def _validate(seq_len, global_batch_size, packing_type, process_index, process_count):
  problems = []
  if seq_len < 1:
    problems.append(f"seq_len must be >= 1, got {seq_len}")
  if process_count < 1 or not 0 <= process_index < process_count:
    problems.append(
        f"need 0 <= process_index < process_count, got {process_index}, {process_count}"
    )
  elif global_batch_size < 1 or global_batch_size % process_count:
    problems.append(
        f"global_batch_size ({global_batch_size}) must be a positive multiple"
        f" of process_count ({process_count})"
    )
  if packing_type not in PACKING_TYPES:
    problems.append(f"packing_type {packing_type!r} not in {PACKING_TYPES}")
  if problems:
    raise ValueError("; ".join(problems))


def _pack(ds: grain.IterDataset, *, packing: bool, packing_type: str,
          seq_len: int, batch: int, shuffle: bool, seed: int) -> grain.IterDataset:
  if not packing:
    return ds.map(functools.partial(features.pad_unpacked, seq_len=seq_len))
  lengths = {"inputs": seq_len, "targets": seq_len}
  if packing_type == "first_fit":
    ds = grain.experimental.FirstFitPackIterDataset(
        ds, length_struct=lengths, num_packing_bins=batch, seed=seed,
        shuffle_bins=shuffle,
    )
  else:
    ds = grain.experimental.ConcatThenSplitIterDataset(ds, length_struct=lengths)
  return ds.map(features.rename_packed)


def make_text_iterator(
    *,
    files: Sequence[str],
    data_column: str = "text",
    tokenizer: Tokenizer,
    seq_len: int,
    global_batch_size: int,
    shuffle: bool,
    seed: int,
    packing: bool,
    packing_type: str = "first_fit",
    num_epoch: int,
    process_index: int = 0,
    process_count: int = 1,
    add_bos: bool = True,
    add_eos: bool = True,
) -> checkpointable.GrainBatchIterator:
  """Iterator of this process's [global_batch_size // process_count, seq_len] batches.

  Args:
    files: local .jsonl/.jsonl.gz/.txt files or globs (see `documents`).
    data_column: JSON field holding the document text.
    tokenizer: a `Tokenizer` (see `tokenizers.build_tokenizer`).
    seq_len: tokens per row (T).
    global_batch_size: rows per step summed over all processes.
    shuffle: shuffle documents (every epoch differently) and packed rows.
    seed: seed of every random choice; same seed, same batches.
    packing: pack several documents per row; else one piece per padded row.
    packing_type: 'first_fit' (pads, never splits a piece) or
      'concat_then_split' (no padding, splits documents across rows).
    num_epoch: passes over the data; <= 0 (e.g. -1) repeats forever.
    process_index, process_count: this process's document shard.
    add_bos, add_eos: wrap every document in bos/eos tokens.
  """
  _validate(seq_len, global_batch_size, packing_type, process_index, process_count)
  docs = documents.read_documents(files, data_column)
  ds = grain.MapDataset.source(docs)[process_index::process_count]
  if len(ds) == 0:  # pylint: disable=g-explicit-length-test
    raise ValueError(
        f"process {process_index}/{process_count} got no documents:"
        f" {len(docs)} documents in {list(files)}"
    )
  if shuffle:
    ds = ds.shuffle(seed=seed)
  ds = ds.repeat(num_epoch if num_epoch > 0 else None)
  ds = ds.map(_Tokenize(tokenizer, add_bos, add_eos))
  ids = ds.to_iter_dataset(grain.ReadOptions(**_READ_OPTIONS))
  pieces = grain.experimental.FlatMapIterDataset(ids, _Pieces(seq_len))
  local_batch = global_batch_size // process_count
  rows = _pack(pieces, packing=packing, packing_type=packing_type,
               seq_len=seq_len, batch=local_batch, shuffle=shuffle, seed=seed)
  batches = rows.batch(local_batch, drop_remainder=True)
  fingerprint = dict(
      num_documents=len(docs), data_column=data_column,
      vocab_size=tokenizer.vocab_size, seq_len=seq_len,
      global_batch_size=global_batch_size, shuffle=shuffle, seed=seed,
      packing=packing, packing_type=packing_type if packing else None,
      num_epoch=num_epoch, process_index=process_index,
      process_count=process_count, add_bos=add_bos, add_eos=add_eos,
  )
  return checkpointable.GrainBatchIterator(iter(batches), fingerprint)
