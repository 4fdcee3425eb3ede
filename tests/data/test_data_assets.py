"""The embedded corpus and tokenizer ship with the package and are what the README says."""

import gzip
import json
import os

import numpy as np
import pytest

from maxtext_like import assets
from maxtext_like.data import make_synthetic_iterator


def _docs(split):
  with gzip.open(assets.corpus_path(split), "rt", encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def test_corpus_splits_are_disjoint_english_prose_of_the_documented_size():
  train, evals = _docs("train"), _docs("eval")
  assert (len(train), len(evals)) == (259, 10)
  chars = sum(len(d["text"]) for d in train + evals)
  assert 1_000_000 < chars < 4_200_000
  keys = lambda docs: {(d["book"], d["chapter"]) for d in docs}
  assert not keys(train) & keys(evals)
  assert {d["book"] for d in train} == {
      "sensesensibility", "prideprejudice", "mansfieldpark", "emma",
      "northangerabbey", "persuasion"}
  assert all(d["text"].strip() and "_" not in d["text"] for d in train)
  assert "Gutenberg" not in "".join(d["text"] for d in train)
  assert os.path.getsize(assets.corpus_path("train")) < 2_000_000


def test_asset_paths_and_errors():
  assert assets.tokenizer_path().endswith("embedded_sp4096.model")
  with pytest.raises(ValueError, match="unknown corpus split"):
    assets.corpus_path("test")


def test_global_batch_assembles_local_rows_over_fake_devices():
  import jax  # pylint: disable=g-import-not-at-top
  from jax.sharding import Mesh, NamedSharding, PartitionSpec  # pylint: disable=g-import-not-at-top
  from maxtext_like.data.global_batch import to_global_batch  # pylint: disable=g-import-not-at-top

  assert len(jax.devices()) == 8  # tests/conftest.py: 8 fake CPU devices
  mesh = Mesh(np.array(jax.devices()), ("data",))
  batch = next(make_synthetic_iterator(global_batch_size=len(jax.devices()), seq_len=8, vocab_size=50, seed=0))
  out = to_global_batch(batch, NamedSharding(mesh, PartitionSpec("data")))
  for key, value in batch.items():
    assert out[key].shape == value.shape
    assert len(out[key].addressable_shards) == len(jax.devices())
    np.testing.assert_array_equal(np.asarray(out[key]), value)
