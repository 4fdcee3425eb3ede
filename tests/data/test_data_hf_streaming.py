"""hf_streaming=true: the same documents as the map-style hf pipeline, process shards, buffer shuffle, exact resume."""

import json

import numpy as np
import pytest

from maxtext_like.data.errors import DataError
from maxtext_like.runtime.tokenizer import tokenizer_for
from maxtext_like.training.data_source import make_iterator

from batch_checks import segments
from data_files import all_batches, config, docs, texts_of, write_jsonl

UNPACKED = ["packing=false", "use_truncation=false", "num_epoch=1", "enable_data_shuffling=false", "max_target_length=128"]


pytestmark = pytest.mark.usefixtures("hf_cache")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  """30 documents in 3 .jsonl files; returns (hf args, documents in file order)."""
  d = tmp_path_factory.mktemp("stream")
  train = docs(30)
  for f in range(3):
    write_jsonl(d / f"part{f}.jsonl", train[10 * f:10 * (f + 1)])
  return ["dataset_type=hf", "hf_path=json", f"hf_train_files={d}/part*.jsonl"], train


def test_unshuffled_stream_equals_map_style_in_order(data):
  args, train = data
  got = {}
  for streaming in ("false", "true"):
    cfg = config(*args, *UNPACKED, f"hf_streaming={streaming}")
    got[streaming] = texts_of(all_batches(make_iterator(cfg, 2, "train")), tokenizer_for(cfg))
  assert got["true"] == got["false"] == train


@pytest.mark.parametrize("count", [2, 3, 4])
def test_processes_read_disjoint_shards_covering_the_map_style_documents(data, count):
  # 3 files: whole files per process when count divides 3, else every count-th row (datasets.split_dataset_by_node).
  args, train = data
  cfg = config(*args, *UNPACKED, "hf_streaming=true")
  tok = tokenizer_for(cfg)
  per_process = [texts_of(all_batches(make_iterator(cfg, count, "train", p, count)), tok) for p in range(count)]
  seen = [t for texts in per_process for t in texts]
  assert len(seen) == len(set(seen))  # disjoint
  # Each process yields whole batches of 1 row; a process's last partial batch cannot exist with 1 row per batch.
  assert sorted(seen) == sorted(train)


def test_buffer_shuffle_permutes_each_epoch_differently(data):
  args, train = data
  cfg = config(*args, "packing=false", "use_truncation=false", "num_epoch=2", "max_target_length=128",
               "hf_streaming=true", "grain_shuffle_buffer_size=8", "data_shuffle_seed=3")
  got = texts_of(all_batches(make_iterator(cfg, 2, "train")), tokenizer_for(cfg))
  first, second = got[:30], got[30:]
  assert sorted(first) == sorted(second) == sorted(train)
  assert first != train and first != second


@pytest.mark.parametrize("shuffle", ["true", "false"])  # skip-count state / HF state_dict
def test_exact_resume_across_epochs(data, shuffle):
  args, _ = data
  cfg = config(*args, "num_epoch=-1", "grain_packing_type=best_fit", "hf_streaming=true",
               f"enable_data_shuffling={shuffle}", "grain_shuffle_buffer_size=5")
  it = make_iterator(cfg, 4, "train", 1, 2)
  for _ in range(5):
    next(it)
  state = json.loads(json.dumps(it.get_state()))  # JSON, as saved with a checkpoint
  expected = [next(it) for _ in range(12)]  # past the end of this process's 15 documents: next epochs
  resumed = make_iterator(cfg, 4, "train", 1, 2)
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    list(segments(got))
    for k in want:
      np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_state_is_refused_by_the_map_style_pipeline(data):
  args, _ = data
  state = make_iterator(config(*args, "hf_streaming=true"), 2, "train").get_state()
  with pytest.raises(ValueError, match="differently built"):
    make_iterator(config(*args), 2, "train").set_state(state)


def test_missing_column_is_a_data_error(data):
  args, _ = data
  cfg = config(*args, "hf_streaming=true", "train_data_columns=['body']")
  with pytest.raises(DataError, match="body"):
    next(make_iterator(cfg, 2, "train"))


def test_load_dataset_gets_streaming_and_token(data, monkeypatch):
  import datasets
  args, _ = data
  seen = {}
  real = datasets.load_dataset

  def spy(*a, **kw):
    seen.update(kw)
    return real(*a, **{k: v for k, v in kw.items() if k != "token"})

  monkeypatch.setattr(datasets, "load_dataset", spy)
  cfg = config(*args, "hf_streaming=true", "hf_access_token=hf_secret123")
  next(make_iterator(cfg, 2, "train"))
  assert seen["streaming"] is True and seen["token"] == "hf_secret123"
  from maxtext_like.training.loop import config_record
  assert "hf_secret123" not in json.dumps(config_record(cfg))
