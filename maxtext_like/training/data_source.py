"""The config's dataset keys -> a checkpointable iterator of this process's batches (registry by dataset_type).

    make_iterator(cfg, global_batch, split='train'|'eval', process_index, process_count)

Sources ('synthetic', 'embedded', 'hf', 'grain', 'tfds') turn the config into
document sources (`maxtext_like.data.records`); one shared function applies
the tokenizer, packing, shuffling, epochs, sharding and loader keys to all of
them, so every key means the same thing for every source.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from maxtext_like.config import Config
from maxtext_like.data import records
from maxtext_like.data.checkpointable import ReuseFirstBatch, padding_batch
from maxtext_like.data.errors import DataError
from maxtext_like.data.synthetic import make_synthetic_iterator
from maxtext_like.data.text_pipeline import make_lm_iterator
from maxtext_like.runtime.tokenizer import tokenizer_for

SOURCES: dict[str, Callable] = {}


def source(name: str):
  def wrap(fn):
    SOURCES[name] = fn
    return fn
  return wrap


def data_column(cfg: Config, split: str) -> str:
  cols = cfg.dataset.train_data_columns if split == "train" else cfg.dataset.eval_data_columns
  return cols[0]  # exactly one (rules.single_data_column)


# The embedded corpus is a small demo of whole chapters: unless set explicitly (CLI, env, a preset or your own
# YAML), it repeats forever and splits chapters into pieces instead of MaxText's defaults num_epoch=1 and
# use_truncation=true, which would stop a run after a few hundred steps and keep only each chapter's start.
EMBEDDED_DEFAULTS = {"num_epoch": -1, "use_truncation": False}


def setting(cfg: Config, key: str):
  """cfg's value of a data key, with EMBEDDED_DEFAULTS standing in for base.yml defaults on the embedded corpus."""
  if cfg.dataset.dataset_type == "embedded" and key in EMBEDDED_DEFAULTS and \
      os.path.basename(cfg.source(key).split(":")[0]) == "base.yml":
    return EMBEDDED_DEFAULTS[key]
  return cfg.get(key)


# Fine-tuning on the embedded data (the shipped chat and preference sets, maxtext_like/assets/chat) reads their
# columns unless train_data_columns / eval_data_columns are set explicitly.
EMBEDDED_FINETUNE_COLUMNS = {"sft": ["messages"], "dpo": ["prompt", "chosen", "rejected"]}


def finetune_kind(cfg: Config) -> str | None:
  """'sft', 'dpo' or None (pretraining)."""
  return "dpo" if cfg.finetune.use_dpo else "sft" if cfg.finetune.use_sft else None


def finetune_columns(cfg: Config, split: str) -> list[str]:
  """The record columns an SFT/DPO run reads (train_data_columns or eval_data_columns)."""
  key = "train_data_columns" if split == "train" else "eval_data_columns"
  if cfg.dataset.dataset_type == "embedded" and os.path.basename(cfg.source(key).split(":")[0]) == "base.yml":
    return EMBEDDED_FINETUNE_COLUMNS[finetune_kind(cfg)]
  return list(cfg.get(key))


def finetune_iterator(cfg: Config, src, global_batch: int, split: str, process_index: int, process_count: int,
                      *, shuffle_window: int = 0):
  """SFT (the shared pipeline, rendering and masking each record) or DPO (pairs, unpacked) over one row source."""
  from maxtext_like.data.conversations import formatter_for
  fmt = formatter_for(cfg, finetune_columns(cfg, split))
  if finetune_kind(cfg) == "sft":
    return lm_iterator(cfg, [src], None, global_batch, split, process_index, process_count, loader_keys=False,
                       shuffle_window=shuffle_window, formatter=fmt)
  from maxtext_like.data.pair_pipeline import make_pair_iterator
  train = split == "train"
  return make_pair_iterator(source=src, formatter=fmt, seq_len=cfg.inference.max_target_length, global_batch_size=global_batch,
                            shuffle=cfg.training.enable_data_shuffling and train, seed=cfg.training.data_shuffle_seed,
                            num_epoch=setting(cfg, "num_epoch") if train else 1, process_index=process_index,
                            process_count=process_count, vocab_size=cfg.tokenizer.vocab_size, shuffle_window=shuffle_window)


def lm_iterator(cfg: Config, sources: list, weights, global_batch: int, split: str, process_index: int, process_count: int,
                *, loader_keys: bool = True, shuffle_window: int = 0, in_process: bool = False, formatter=None):
  """The shared pipeline over `sources` with every data key of the config applied (`formatter`: SFT records)."""
  d, train = cfg.dataset, split == "train"
  loader = {}
  if loader_keys:  # the grain_* loader keys (MaxText applies them to its grain and hf pipelines)
    loader = dict(num_threads=d.grain_num_threads if train else d.grain_num_threads_eval,
                  prefetch_buffer_size=d.grain_prefetch_buffer_size if train else d.grain_prefetch_buffer_size_eval,
                  worker_count=d.grain_worker_count if train else d.grain_worker_count_eval,
                  per_worker_buffer_size=d.grain_per_worker_buffer_size if train else d.grain_per_worker_buffer_size_eval)
    if in_process:
      loader["worker_count"] = 0
  it = make_lm_iterator(
      sources=sources, weights=weights, tokenizer=tokenizer_for(cfg), seq_len=cfg.inference.max_target_length,
      global_batch_size=global_batch, shuffle=cfg.training.enable_data_shuffling and train,
      seed=cfg.training.data_shuffle_seed, packing=d.packing, packing_type=d.grain_packing_type,
      max_segments_per_seq=d.max_segments_per_seq if d.max_segments_per_seq > 0 else None,
      truncate=setting(cfg, "use_truncation"), num_epoch=setting(cfg, "num_epoch") if train else 1,
      process_index=process_index, process_count=process_count,
      add_bos=cfg.tokenizer.add_bos, add_eos=cfg.tokenizer.add_eos, vocab_size=cfg.tokenizer.vocab_size,
      tokenize=cfg.tokenizer.tokenize_train_data if train else cfg.tokenizer.tokenize_eval_data,
      shuffle_window=shuffle_window,
      pad_when_exhausted=d.generate_padding_batch_train if train else d.generate_padding_batch_eval, formatter=formatter,
      **loader)
  return ReuseFirstBatch(it) if train and d.reuse_example_batch > 0 else it


@source("synthetic")
def _synthetic(cfg: Config, global_batch: int, split: str, process_index: int, process_count: int):
  # Every process generates the same global batch and keeps its rows, so a run's batches do not depend on the
  # process count (multi-process == single-process, tested).
  it = make_synthetic_iterator(global_batch_size=global_batch, seq_len=cfg.inference.max_target_length,
                               vocab_size=cfg.tokenizer.vocab_size, seed=cfg.training.data_shuffle_seed + (split == "eval") * 7919)
  return ProcessRows(it, process_index, process_count)


class ProcessRows:
  """This process's contiguous share of the rows of a global-batch iterator (checkpointable like the inner one)."""

  def __init__(self, inner, process_index: int, process_count: int):
    self.inner, self.index, self.count = inner, process_index, process_count

  def __iter__(self):
    return self

  def __next__(self):
    batch = next(self.inner)
    n = next(iter(batch.values())).shape[0] // self.count
    return {k: v[self.index * n:(self.index + 1) * n] for k, v in batch.items()}

  def get_state(self):
    return self.inner.get_state()

  def set_state(self, state):
    self.inner.set_state(state)


@source("embedded")
def _embedded(cfg: Config, global_batch: int, split: str, process_index: int, process_count: int):
  from maxtext_like import assets
  if finetune_kind(cfg):  # the shipped chat (SFT) or preference (DPO) set
    from maxtext_like.data.conversations import JsonRows
    src = JsonRows([assets.chat_path(f"{finetune_kind(cfg)}_{split}.jsonl")], finetune_columns(cfg, split))
    return finetune_iterator(cfg, src, global_batch, split, process_index, process_count)
  src = records.TextFileSource([assets.corpus_path(split)], "text")
  return lm_iterator(cfg, [src], None, global_batch, split, process_index, process_count, loader_keys=False)


# ---- hf ----
def hf_dataset(cfg: Config, split: str, streaming: bool = False):
  """`datasets.load_dataset` (local files, a local dataset directory, or the Hub): map-style (arrow-cached), or an
  `IterableDataset` read as it goes with `streaming` (hf_streaming)."""
  d = cfg.dataset
  if not d.hf_path:
    raise DataError("dataset_type=hf needs hf_path: a builder name ('json', 'parquet', 'arrow', 'text', 'csv') with hf_train_files, "
                    "or a local dataset directory")
  if split == "train":
    files, hf_split = d.hf_train_files, d.train_split
  else:
    files = d.hf_eval_files
    hf_split = d.hf_eval_split or ("train" if files else None)
    if hf_split is None:
      raise DataError("evaluation with dataset_type=hf needs hf_eval_split (a split of hf_path) or hf_eval_files")
  if files:
    from maxtext_like.data.documents import expand_files
    empty = [f for f in expand_files(files) if os.path.getsize(f) == 0]  # FileNotFoundError names a missing pattern
    if empty:
      raise DataError(f"empty data file(s): {empty}")
  import datasets  # pylint: disable=g-import-not-at-top
  try:
    ds = datasets.load_dataset(d.hf_path, name=d.hf_name, data_dir=d.hf_data_dir, data_files=files, split=hf_split,
                               token=d.hf_access_token, **({"streaming": True} if streaming else {}))
  except FileNotFoundError:
    raise
  except Exception as e:  # noqa: BLE001 (datasets raises ValueError, DatasetGenerationError, StopIteration, ...)
    cause = e.__cause__ or e
    raise DataError(f"hf_path={d.hf_path!r} data_files={files!r} split={hf_split!r}: {type(cause).__name__}: "
                    f"{' '.join(str(cause).split())[:500]}") from None
  return ds, f"{d.hf_path}[{files or d.hf_data_dir or ''}] split {hf_split}"


@source("hf")
def _hf(cfg: Config, global_batch: int, split: str, process_index: int, process_count: int):
  if cfg.dataset.hf_streaming:  # read as it goes; shuffled with a buffer of grain_shuffle_buffer_size, in this process
    from maxtext_like.data.hf_stream import HFStreamSource
    ds, name = hf_dataset(cfg, split, streaming=True)
    return lm_iterator(cfg, [HFStreamSource(ds, data_column(cfg, split), name)], None, global_batch, split,
                       process_index, process_count, shuffle_window=cfg.dataset.grain_shuffle_buffer_size, in_process=True)
  ds, name = hf_dataset(cfg, split)
  if finetune_kind(cfg):
    from maxtext_like.data.conversations import HFRows
    return finetune_iterator(cfg, HFRows(ds, finetune_columns(cfg, split), name), global_batch, split, process_index,
                             process_count)
  return lm_iterator(cfg, [records.HFSource(ds, data_column(cfg, split), name)], None, global_batch, split,
                     process_index, process_count)


# ---- grain ----
GRAIN_FILE_TYPES = {"arrayrecord": records.ArrayRecordSource, "parquet": records.ParquetSource}


def grain_mixture(cfg: Config, split: str) -> list[tuple[str, float]]:
  """[(file pattern, weight)]: the mixture config JSON ({name: {path, weight}}), 'pattern,weight;pattern,weight', or one pattern."""
  d = cfg.dataset
  if split == "train" and d.grain_train_mixture_config_path:
    try:
      with open(d.grain_train_mixture_config_path, encoding="utf-8") as f:
        mix = json.load(f)
      return [(str(c["path"]), float(c["weight"])) for c in mix.values()]
    except FileNotFoundError:
      raise
    except (ValueError, KeyError, TypeError, AttributeError) as e:
      raise DataError(f"{d.grain_train_mixture_config_path}: expected JSON {{name: {{\"path\": glob, \"weight\": number}}}} "
                      f"(grain_train_mixture_config_path): {type(e).__name__}: {e}") from None
  spec = d.grain_train_files if split == "train" else d.grain_eval_files
  key = "grain_train_files" if split == "train" else "grain_eval_files"
  if not spec:
    raise DataError(f"dataset_type=grain needs {key} (a glob, or 'glob,weight;glob,weight')")
  if ";" not in spec:
    return [(spec, 1.0)]
  out = []
  for part in filter(None, spec.split(";")):
    pattern, _, weight = part.rpartition(",")
    try:
      out.append((pattern, float(weight)))
    except ValueError:
      raise DataError(f"{key}: {part!r} is not 'glob,weight'") from None
  return out


@source("grain")
def _grain(cfg: Config, global_batch: int, split: str, process_index: int, process_count: int):
  d = cfg.dataset
  if d.grain_file_type not in GRAIN_FILE_TYPES:
    raise DataError(f"grain_file_type {d.grain_file_type!r} is not supported; use one of {sorted(GRAIN_FILE_TYPES)}")
  mix = grain_mixture(cfg, split)
  cls = GRAIN_FILE_TYPES[d.grain_file_type]
  sources = [cls(pattern, data_column(cfg, split)) for pattern, _ in mix]
  window = d.grain_shuffle_buffer_size if d.grain_file_type == "parquet" else 0
  return lm_iterator(cfg, sources, [w for _, w in mix], global_batch, split, process_index, process_count, shuffle_window=window)


# ---- tfds ----
@source("tfds")
def _tfds(cfg: Config, global_batch: int, split: str, process_index: int, process_count: int):
  d = cfg.dataset
  name = d.dataset_name if split == "train" else d.eval_dataset_name
  tfds_split = d.train_split if split == "train" else d.eval_split
  src = records.TfdsSource(d.dataset_path, name, tfds_split, data_column(cfg, split))
  return lm_iterator(cfg, [src], None, global_batch, split, process_index, process_count)


def loading_process_count(cfg: Config, split: str, process_count: int) -> int:
  """How many processes read real data: process_count / expansion_factor_real_data for training, else all."""
  e = cfg.dataset.expansion_factor_real_data
  if split != "train" or e in (-1, 1):
    return process_count
  if e < 1 or e != int(e) or process_count % int(e):
    from maxtext_like.config import ConfigError, Problem
    raise ConfigError([Problem("expansion_factor_real_data", f"must be -1 or a whole number >= 1 that divides the process "
                                                              f"count ({process_count})", e)])
  return process_count // int(e)


class PlaceholderBatches:
  """All-padding batches forever (segmentation 0: no loss), for a process that loads no real data."""

  def __init__(self, rows: int, seq_len: int):
    self.rows, self.seq_len = rows, seq_len

  def __iter__(self):
    return self

  def __next__(self):
    return padding_batch(self.rows, self.seq_len)

  def get_state(self):
    return {"placeholder": [self.rows, self.seq_len]}

  def set_state(self, state):
    if state.get("placeholder") != [self.rows, self.seq_len]:
      raise ValueError(f"data iterator state {str(state)[:200]} is not this process's placeholder state "
                       f"({self.rows} rows of {self.seq_len}): the run was started with other processes loading data")


def make_iterator(cfg: Config, global_batch: int, split: str = "train", process_index: int = 0, process_count: int = 1):
  """This process's share (global_batch / process_count rows) of every batch.

  With expansion_factor_real_data = E > 1 (training; as MaxText), `global_batch` is the loaded batch
  (E x global_batch_size_to_train_on): processes 0 .. process_count/E - 1 read the real documents among themselves,
  process_count/E x more rows each than a batch without expansion, and the other processes yield placeholder
  (all-padding) rows. Assembled in process order, the real rows are the global batch's first
  global_batch_size_to_train_on, which the train step keeps.
  """
  make = SOURCES[cfg.dataset.dataset_type]
  loaders = loading_process_count(cfg, split, process_count)
  if loaders == process_count:
    return make(cfg, global_batch, split, process_index, process_count)
  if global_batch % process_count:
    raise DataError(f"the loaded batch ({global_batch} rows) is not a multiple of the process count ({process_count})")
  local = global_batch // process_count
  if process_index >= loaders:
    return PlaceholderBatches(local, cfg.inference.max_target_length)
  return make(cfg, local * loaders, split, process_index, loaders)
