"""Shared fixtures for the data pipeline tests: the shipped tokenizer and a tiny corpus."""

import json

import pytest

from maxtext_like import assets
from maxtext_like.data import build_tokenizer

from data_files import make_doc


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
