"""Shared fixtures for the data pipeline tests: the shipped tokenizer and a tiny corpus."""

import json

import pytest

from maxtext_like import assets
from maxtext_like.data import build_tokenizer

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima".split()


def make_doc(i: int) -> str:
  """A unique document; lengths vary from a few to ~100 tokens."""
  n = 1 + (i * 7) % 23
  return f"Document {i}: " + " ".join(WORDS[(i + k) % len(WORDS)] for k in range(n)) + "."


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory):
  """A fresh Hugging Face `datasets` cache for one test module (no cached Arrow files from other modules)."""
  import datasets
  old = datasets.config.HF_DATASETS_CACHE
  datasets.config.HF_DATASETS_CACHE = str(tmp_path_factory.mktemp("hf_cache"))
  yield
  datasets.config.HF_DATASETS_CACHE = old


@pytest.fixture(scope="session")
def sp_tokenizer():
  return build_tokenizer("sentencepiece", assets.tokenizer_path(), add_bos=True, add_eos=True)


@pytest.fixture()
def tiny_corpus(tmp_path):
  """24 unique documents in one .jsonl file; returns (path, docs)."""
  docs = [make_doc(i) for i in range(24)]
  path = tmp_path / "tiny.jsonl"
  path.write_text("".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(docs)))
  return str(path), docs
