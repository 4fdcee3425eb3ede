"""The config's dataset keys -> a checkpointable iterator of this process's batches (registry by dataset_type)."""

from __future__ import annotations

from collections.abc import Callable

from maxtext_like.config import Config
from maxtext_like.data.synthetic import make_synthetic_iterator
from maxtext_like.data.text_pipeline import make_text_iterator
from maxtext_like.data.tokenizers import build_tokenizer

SOURCES: dict[str, Callable] = {}


def source(name: str):
  def wrap(fn):
    SOURCES[name] = fn
    return fn
  return wrap


def tokenizer_for(cfg: Config):
  from maxtext_like import assets
  path = cfg.tokenizer.tokenizer_path or assets.tokenizer_path()
  return build_tokenizer(cfg.tokenizer.tokenizer_type, path, cfg.tokenizer.add_bos, cfg.tokenizer.add_eos)


@source("synthetic")
def _synthetic(cfg: Config, global_batch: int, split: str, process_index: int, process_count: int):
  return make_synthetic_iterator(global_batch_size=global_batch // process_count, seq_len=cfg.inference.max_target_length,
                                 vocab_size=cfg.tokenizer.vocab_size, seed=cfg.training.data_shuffle_seed + process_index + (split == "eval") * 7919)


@source("embedded")
def _embedded(cfg: Config, global_batch: int, split: str, process_index: int, process_count: int):
  from maxtext_like import assets
  tok = tokenizer_for(cfg)
  if tok.vocab_size > cfg.tokenizer.vocab_size:
    raise ValueError(f"the tokenizer has {tok.vocab_size} ids but vocab_size is {cfg.tokenizer.vocab_size}: "
                     "ids >= vocab_size would index past the embedding")
  return make_text_iterator(files=[assets.corpus_path(split)], data_column="text", tokenizer=tok,
                            seq_len=cfg.inference.max_target_length, global_batch_size=global_batch,
                            shuffle=cfg.training.enable_data_shuffling and split == "train", seed=cfg.training.data_shuffle_seed,
                            packing=cfg.dataset.packing, num_epoch=-1 if split == "train" else 1,
                            process_index=process_index, process_count=process_count,
                            add_bos=cfg.tokenizer.add_bos, add_eos=cfg.tokenizer.add_eos)


def make_iterator(cfg: Config, global_batch: int, split: str = "train", process_index: int = 0, process_count: int = 1):
  return SOURCES[cfg.dataset.dataset_type](cfg, global_batch, split, process_index, process_count)
