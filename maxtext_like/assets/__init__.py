"""Files shipped inside the package: the embedded default corpus and tokenizer.

Located with `importlib.resources`, so they work from a source checkout and
from an installed wheel alike (the build must include `corpus/*.jsonl.gz` and
`tokenizer/*.model` as package data). See README.md here for origin/license.
"""

from __future__ import annotations

import importlib.resources
import pathlib

SPLITS = ("train", "eval")
TOKENIZER_NAME = "embedded_sp4096.model"


def _asset(*parts: str) -> pathlib.Path:
  path = importlib.resources.files(__name__).joinpath(*parts)
  # Wheels install as plain directories, so the traversable is a real path.
  path = pathlib.Path(str(path))
  if not path.is_file():
    raise FileNotFoundError(
        f"embedded asset {'/'.join(parts)} not found at {path}; rebuild it"
        " with tools/make_embedded_assets.py or reinstall the package"
    )
  return path


def corpus_path(split: str = "train") -> str:
  """Path of the embedded corpus split ('train' or 'eval'), a .jsonl.gz file.

  One JSON object per line: {"text": chapter, "book": name, "chapter": n}.
  """
  if split not in SPLITS:
    raise ValueError(f"unknown corpus split {split!r}; expected one of {SPLITS}")
  return str(_asset("corpus", f"{split}.jsonl.gz"))


def tokenizer_path() -> str:
  """Path of the embedded sentencepiece model (vocab 4096; pad 0, bos 1, eos 2, unk 3)."""
  return str(_asset("tokenizer", TOKENIZER_NAME))


def chat_path(name: str) -> str:
  """Path of a file of the shipped fine-tuning set (chat/README.md): sft_{train,eval}.jsonl, dpo_{train,eval}.jsonl,
  and plain.jinja, the plain-text chat template they are trained with on the embedded tokenizer."""
  return str(_asset("chat", name))
