"""The configured tokenizer, checked against the model's vocabulary."""

from __future__ import annotations

from maxtext_like.config import Config
from maxtext_like.data.errors import DataError
from maxtext_like.data.tokenizers import build_tokenizer


def tokenizer_path(cfg: Config) -> str:
  """`tokenizer_path`, or the tokenizer shipped with the project."""
  from maxtext_like import assets
  return cfg.tokenizer.tokenizer_path or assets.tokenizer_path()


def tokenizer_for(cfg: Config):
  """The configured tokenizer; refuses one that can emit ids >= vocab_size (they would index past the embedding)."""
  path = tokenizer_path(cfg)
  tok = build_tokenizer(cfg.tokenizer.tokenizer_type, path, cfg.tokenizer.add_bos, cfg.tokenizer.add_eos)
  if tok.vocab_size > cfg.tokenizer.vocab_size:
    raise DataError(f"the tokenizer {path} ({cfg.tokenizer.tokenizer_type}) has {tok.vocab_size} ids but vocab_size is "
                    f"{cfg.tokenizer.vocab_size}: ids >= vocab_size would index past the embedding; set vocab_size >= {tok.vocab_size}")
  return tok
