"""Document sources -> tokenized, packed, batched LM batches, as a grain pipeline.

    each source (records.*: len/getitem, one document per row)
      -> [process_index::process_count]     this process's disjoint shard
      -> shuffle(seed)                      global, or a window of shuffle_window
      -> repeat(num_epoch)                  num_epoch <= 0: forever
      -> tokenize (add_bos / add_eos)       on grain's read threads; documents
                                            that are already ids pass through
                                            (checked against vocab_size)
    -> mix(weights)                         when several sources are given
      -> shifted pieces                     features.lm_pieces: split long
                                            documents, or keep the first piece
                                            (truncate=True)
      -> pack ('first_fit' | 'best_fit' | 'concat_then_split') or pad one piece per row
      -> batch(global_batch_size // process_count, drop_remainder=True)
      -> worker processes (worker_count > 0)

Each process yields only its local share of the global batch; assembling
global arrays is the train loop's job. The returned iterator is checkpointable
with `get_state()` / `set_state()` (grain's iterator state, JSON-serialisable).
With a finite `num_epoch`, processes may run out after different numbers of
batches; `pad_when_exhausted=True` then yields all-padding batches instead of
stopping (MaxText's generate_padding_batch_*), so every process keeps stepping.
"""

from __future__ import annotations

import functools
from typing import Sequence

import grain
import numpy as np

from maxtext_like.data import checkpointable
from maxtext_like.data import features
from maxtext_like.data import records
from maxtext_like.data.errors import DataError
from maxtext_like.data.tokenizers import Tokenizer

PACKING_TYPES = ("first_fit", "best_fit", "concat_then_split")
# Defaults for the embedded corpus; the config's grain_num_threads etc. override them.
_READ_OPTIONS = dict(num_threads=2, prefetch_buffer_size=64)


class _Indexed:
  """src[i] -> (i, src[i]), so later steps can name the row of a bad document."""

  def __init__(self, src):
    self.src = src

  def __len__(self) -> int:
    return len(self.src)

  def __getitem__(self, i: int):
    return int(i), self.src[i]


class _Tokenize(grain.transforms.Map):
  """(row, document) -> int32 token ids (picklable for grain workers)."""

  def __init__(self, tokenizer: Tokenizer, add_bos: bool, add_eos: bool, vocab_size: int | None, src, tokenize: bool):
    self._tokenizer, self._add_bos, self._add_eos = tokenizer, add_bos, add_eos
    self._vocab_size, self._src, self._tokenize = vocab_size, src, tokenize

  def map(self, element) -> np.ndarray:
    row, doc = element
    if isinstance(doc, str) != self._tokenize:
      want, got = ("text", "token ids") if self._tokenize else ("token ids", "text")
      raise DataError(f"{self._src.where(row)}: expected {want} (tokenize_train_data/tokenize_eval_data="
                      f"{self._tokenize}) but the column holds {got}")
    if self._tokenize:
      ids = np.asarray(self._tokenizer.encode(doc, add_bos=self._add_bos, add_eos=self._add_eos), np.int32)
    else:  # pre-tokenized: the ids as they are (bos/eos already in the data), but checked
      ids = np.asarray(doc, np.int32)
    if self._vocab_size and ids.size and (ids.max() >= self._vocab_size or ids.min() < 0):
      bad = int(ids.max() if ids.max() >= self._vocab_size else ids.min())
      raise DataError(f"{self._src.where(row)}: token id {bad} is outside [0, vocab_size={self._vocab_size})")
    return ids


class _Format(grain.transforms.Map):
  """(row, record) -> {"tokens", "mask"}: an SFT record rendered and masked by a `conversations.Formatter`."""

  def __init__(self, formatter, vocab_size: int | None, src):
    self._formatter, self._vocab_size, self._src = formatter, vocab_size, src

  def map(self, element) -> dict:
    row, record = element
    enc = self._formatter.sft(record, self._src.where(row))
    if self._vocab_size and enc.ids.size and enc.ids.max() >= self._vocab_size:
      raise DataError(f"{self._src.where(row)}: token id {int(enc.ids.max())} is outside [0, vocab_size={self._vocab_size})")
    return {"tokens": enc.ids, "mask": enc.mask}


class _Pieces(grain.experimental.FlatMapTransform):
  """Token ids -> shifted (inputs, targets) pieces of at most seq_len (only the first if truncating)."""

  max_fan_out = 1 << 20  # only used by MapDataset flat maps; ours is an IterDataset.

  def __init__(self, seq_len: int, truncate: bool):
    self._seq_len, self._truncate = seq_len, truncate

  def flat_map(self, tokens):
    if isinstance(tokens, dict):  # SFT: tokens with their loss mask
      pieces = features.lm_pieces(tokens["tokens"], self._seq_len, tokens["mask"])
    else:
      pieces = features.lm_pieces(tokens, self._seq_len)
    return pieces[:1] if self._truncate else pieces


def _validate(seq_len, global_batch_size, packing_type, process_index, process_count, max_segments, weights, n_sources):
  problems = []
  if seq_len < 1:
    problems.append(f"seq_len must be >= 1, got {seq_len}")
  if process_count < 1 or not 0 <= process_index < process_count:
    problems.append(f"need 0 <= process_index < process_count, got {process_index}, {process_count}")
  elif global_batch_size < 1 or global_batch_size % process_count:
    problems.append(f"global_batch_size ({global_batch_size}) must be a positive multiple of process_count ({process_count})")
  if packing_type not in PACKING_TYPES:
    problems.append(f"packing_type {packing_type!r} not in {PACKING_TYPES}")
  if max_segments is not None and packing_type == "concat_then_split":
    problems.append("max_segments_per_seq needs packing_type 'first_fit' or 'best_fit'")
  if max_segments is not None and max_segments < 1:
    problems.append(f"max_segments_per_seq must be >= 1 (or None), got {max_segments}")
  if n_sources < 1:
    problems.append("no data sources given")
  if weights is not None and (len(weights) != n_sources or min(weights) <= 0):
    problems.append(f"need one positive weight per source, got {list(weights)} for {n_sources} sources")
  if problems:
    raise ValueError("; ".join(problems))


def _pack(ds: grain.IterDataset, *, packing: bool, packing_type: str, seq_len: int, batch: int,
          shuffle: bool, seed: int, max_segments: int | None, masked: bool = False) -> grain.IterDataset:
  if not packing:
    return ds.map(functools.partial(features.pad_unpacked, seq_len=seq_len))
  lengths = {"inputs": seq_len, "targets": seq_len, **({"loss_mask": seq_len} if masked else {})}
  if packing_type in ("first_fit", "best_fit"):
    cls = (grain.experimental.FirstFitPackIterDataset if packing_type == "first_fit"
           else grain.experimental.BestFitPackIterDataset)
    ds = cls(ds, length_struct=lengths, num_packing_bins=batch, seed=seed, shuffle_bins=shuffle,
             max_sequences_per_bin=max_segments)
  else:
    ds = grain.experimental.ConcatThenSplitIterDataset(ds, length_struct=lengths)
  return ds.map(features.rename_packed)


def _component(src, *, tokenizer, add_bos, add_eos, vocab_size, tokenize, shuffle, shuffle_window, seed,
               num_epoch, process_index, process_count, read_options, transform=None) -> grain.IterDataset:
  """One source read, sharded, shuffled, repeated and turned into token ids by `transform` (default: tokenize)."""
  transform = transform or _Tokenize(tokenizer, add_bos, add_eos, vocab_size, src, tokenize)
  if getattr(src, "streaming", False):  # hf_stream.HFStreamSource: shards, shuffles (buffer) and repeats itself
    ds = src.iter_dataset(shuffle=shuffle, buffer_size=shuffle_window, seed=seed, num_epoch=num_epoch,
                          process_index=process_index, process_count=process_count)
    return ds.map(transform)
  ds = grain.MapDataset.source(_Indexed(src))[process_index::process_count]
  if len(ds) == 0:  # pylint: disable=g-explicit-length-test
    raise DataError(f"process {process_index}/{process_count} got no documents from"
                    f" {records.source_name(src)} ({len(src)} documents)")
  if shuffle and shuffle_window > 0:
    ds = grain.experimental.WindowShuffleMapDataset(ds, window_size=shuffle_window, seed=seed)
  elif shuffle:
    ds = ds.shuffle(seed=seed)
  ds = ds.repeat(num_epoch if num_epoch > 0 else None)
  ds = ds.map(transform)
  return ds.to_iter_dataset(read_options)


def make_lm_iterator(
    *,
    sources: Sequence,
    weights: Sequence[float] | None = None,
    tokenizer: Tokenizer,
    seq_len: int,
    global_batch_size: int,
    shuffle: bool,
    seed: int,
    packing: bool,
    packing_type: str = "first_fit",
    max_segments_per_seq: int | None = None,
    truncate: bool = False,
    num_epoch: int,
    process_index: int = 0,
    process_count: int = 1,
    add_bos: bool = True,
    add_eos: bool = True,
    vocab_size: int | None = None,
    tokenize: bool = True,
    shuffle_window: int = 0,
    num_threads: int = _READ_OPTIONS["num_threads"],
    prefetch_buffer_size: int = _READ_OPTIONS["prefetch_buffer_size"],
    worker_count: int = 0,
    per_worker_buffer_size: int = 1,
    pad_when_exhausted: bool = False,
    formatter=None,
) -> checkpointable.GrainBatchIterator:
  """Iterator of this process's [global_batch_size // process_count, seq_len] batches.

  Args:
    sources: document sources (`records.*`: len, getitem, where).
    weights: mixing weights, one per source (None: a single source, or uniform).
    tokenizer: a `Tokenizer` (see `tokenizers.build_tokenizer`).
    seq_len: tokens per row (T).
    global_batch_size: rows per step summed over all processes.
    shuffle: shuffle documents (every epoch differently) and packed rows.
    seed: seed of every random choice; same seed, same batches.
    packing: pack several documents per row; else one piece per padded row.
    packing_type: 'first_fit', 'best_fit' (both pad, never split a piece) or
      'concat_then_split' (no padding, splits documents across rows).
    max_segments_per_seq: at most this many pieces per packed row (None: no limit).
    truncate: keep only the first seq_len+1 tokens of a document (MaxText
      use_truncation=true); else long documents become several pieces.
    num_epoch: passes over the data; <= 0 (e.g. -1) repeats forever.
    process_index, process_count: this process's document shard.
    add_bos, add_eos: wrap every document in bos/eos tokens.
    vocab_size: if set, a token id outside [0, vocab_size) is a DataError
      naming the row (checks pre-tokenized data; text is checked once, by
      comparing the tokenizer's size, in the caller).
    tokenize: documents are text to tokenize; False: they are token ids
      (pre-tokenized data, used as they are: add_bos/add_eos do not apply).
    shuffle_window: > 0: shuffle within windows of this many documents
      (cheaper reads for Parquet row groups) instead of globally; the
      shuffle buffer size of a streamed source (`hf_stream`).
    num_threads, prefetch_buffer_size: grain read threads and their buffer.
    worker_count, per_worker_buffer_size: > 0 runs the pipeline in that many
      worker processes (grain mp_prefetch).
    pad_when_exhausted: after the last batch, yield all-padding batches forever.
    formatter: SFT: a `conversations.Formatter`; the sources' rows are records
      it renders, and only the tokens it marks count in the loss (the others'
      targets_segmentation is 0; their attention segments are unchanged).
  """
  if weights is not None and len(sources) == 1:
    weights = None
  _validate(seq_len, global_batch_size, packing_type, process_index, process_count,
            max_segments_per_seq, weights, len(sources))
  if worker_count > 0 and any(getattr(s, "streaming", False) for s in sources):
    raise ValueError("a streamed source runs in this process: worker_count must be 0")
  read_options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch_buffer_size)
  comps = [_component(s, tokenizer=tokenizer, add_bos=add_bos, add_eos=add_eos, vocab_size=vocab_size,
                      tokenize=tokenize, shuffle=shuffle, shuffle_window=shuffle_window, seed=seed + 1000 * k,
                      num_epoch=num_epoch, process_index=process_index, process_count=process_count,
                      read_options=read_options,
                      transform=_Format(formatter, vocab_size, s) if formatter is not None else None)
           for k, s in enumerate(sources)]
  ids = comps[0] if len(comps) == 1 else grain.IterDataset.mix(comps, [w / sum(weights or [1] * len(comps)) for w in (weights or [1] * len(comps))])
  pieces = grain.experimental.FlatMapIterDataset(ids, _Pieces(seq_len, truncate))
  local_batch = global_batch_size // process_count
  rows = _pack(pieces, packing=packing, packing_type=packing_type, seq_len=seq_len, batch=local_batch,
               shuffle=shuffle, seed=seed, max_segments=max_segments_per_seq, masked=formatter is not None)
  batches = rows.batch(local_batch, drop_remainder=True)
  if worker_count > 0:
    from absl import flags  # pylint: disable=g-import-not-at-top
    if not flags.FLAGS.is_parsed():  # grain's worker processes read absl flags; we have no absl main
      flags.FLAGS.mark_as_parsed()
    batches = batches.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count,
                                                               per_worker_buffer_size=per_worker_buffer_size))
  fingerprint = dict(
      sources=[[records.source_name(s), len(s) if hasattr(s, "__len__") else "stream"] for s in sources], weights=list(weights) if weights else None,
      vocab_size=tokenizer.vocab_size, seq_len=seq_len,
      global_batch_size=global_batch_size, shuffle=shuffle, seed=seed, shuffle_window=shuffle_window,
      packing=packing, packing_type=packing_type if packing else None,
      max_segments_per_seq=max_segments_per_seq if packing else None, truncate=truncate, tokenize=tokenize,
      num_epoch=num_epoch, process_index=process_index,
      process_count=process_count, add_bos=add_bos, add_eos=add_eos, worker_count=worker_count,
  )
  if formatter is not None:
    fingerprint["sft"] = dict(columns=list(formatter.columns), template=formatter.template_source,
                              completion_only=formatter.completion_only)
  return checkpointable.GrainBatchIterator(iter(batches), fingerprint,
                                           pad_batch_shape=(local_batch, seq_len) if pad_when_exhausted else None)


def make_text_iterator(*, files: Sequence[str], data_column: str = "text", **kwargs) -> checkpointable.GrainBatchIterator:
  """`make_lm_iterator` over local .jsonl/.jsonl.gz/.txt files or globs (see `documents`).

  Keyword arguments are those of `make_lm_iterator` (tokenizer, seq_len,
  global_batch_size, shuffle, seed, packing, num_epoch, ...).
  """
  return make_lm_iterator(sources=[records.TextFileSource(files, data_column)], **kwargs)
