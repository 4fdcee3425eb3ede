"""Every dataset_type from local files through the config: content, exact resume, 2-process sharding, eval split."""

import itertools

import numpy as np
import pytest

from maxtext_like.runtime.tokenizer import tokenizer_for
from maxtext_like.training.data_source import make_iterator

from batch_checks import segments
from data_files import (all_batches, config, docs, texts_of, write_arrayrecord, write_examples, write_jsonl,
                        write_parquet)
import tfds_tiny


pytestmark = pytest.mark.usefixtures("hf_cache")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  """The same 30 training documents in every format, plus 6 eval documents; returns ({kind: args}, train, eval)."""
  import datasets
  d = tmp_path_factory.mktemp("data")
  train, evals = docs(30), docs(6, offset=100, tag="eval ")
  (d / "hfdir").mkdir()
  write_jsonl(d / "hfdir" / "part.jsonl", train)
  (d / "eval.txt").write_text("\n".join(evals) + "\n")
  datasets.Dataset.from_dict({"text": train}).save_to_disk(str(d / "arrow"))
  tfds_tiny.prepare(str(d / "tfds"))
  kinds = {
      "hf_json": ["dataset_type=hf", "hf_path=json", f"hf_train_files={write_jsonl(d / 'a.jsonl', train)}"],
      "hf_parquet": ["dataset_type=hf", "hf_path=parquet", f"hf_train_files={write_parquet(d / 'h.parquet', train)}"],
      "hf_arrow": ["dataset_type=hf", "hf_path=arrow", f"hf_train_files={d}/arrow/*.arrow"],
      "hf_dir": ["dataset_type=hf", f"hf_path={d}/hfdir"],
      "grain_arrayrecord": ["dataset_type=grain", f"grain_train_files={write_examples(d / 'a.arecord', train)}"],
      "grain_parquet": ["dataset_type=grain", "grain_file_type=parquet", f"grain_train_files={write_parquet(d / 'g.parquet', train)}"],
      "tfds": ["dataset_type=tfds", f"dataset_path={d}/tfds", "dataset_name=tiny_text", "eval_dataset_name=tiny_text"],
  }
  return kinds, train, evals, d


UNPACKED = ["packing=false", "use_truncation=false", "num_epoch=1", "enable_data_shuffling=false"]


@pytest.mark.parametrize("kind", ["hf_json", "hf_parquet", "hf_arrow", "hf_dir", "grain_arrayrecord", "grain_parquet"])
def test_each_source_yields_every_document_once(files, kind):
  kinds, train, _, _ = files
  cfg = config(*kinds[kind], *UNPACKED, "max_target_length=128")
  got = texts_of(all_batches(make_iterator(cfg, 2, "train")), tokenizer_for(cfg))
  assert sorted(got) == sorted(train)  # 30 docs, batch 2: nothing dropped, no doc split (all < 128 tokens)


def test_tfds_source_reads_prepared_array_record_dataset(files):
  kinds, _, _, _ = files
  cfg = config(*kinds["tfds"], *UNPACKED, "max_target_length=128")
  got = texts_of(all_batches(make_iterator(cfg, 2, "train")), tokenizer_for(cfg))
  assert sorted(got) == sorted(tfds_tiny.doc("train", i) for i in range(24))
  got = texts_of(all_batches(make_iterator(cfg, 2, "eval")), tokenizer_for(cfg))
  assert sorted(got) == sorted(tfds_tiny.doc("validation", i) for i in range(6))


@pytest.mark.parametrize("kind", ["hf_json", "grain_arrayrecord", "grain_parquet", "tfds"])
def test_exact_resume(files, kind):
  kinds, _, _, _ = files
  cfg = config(*kinds[kind], "num_epoch=-1", "grain_packing_type=best_fit")
  it = make_iterator(cfg, 4, "train")
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(4)]
  resumed = make_iterator(cfg, 4, "train")
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    list(segments(got))
    for k in want:
      np.testing.assert_array_equal(got[k], want[k], err_msg=k)


@pytest.mark.parametrize("kind", ["hf_json", "grain_parquet"])
def test_two_processes_read_disjoint_halves(files, kind):
  kinds, train, _, _ = files
  cfg = config(*kinds[kind], *UNPACKED, "max_target_length=128")
  tok = tokenizer_for(cfg)
  per_process = [texts_of(all_batches(make_iterator(cfg, 2, "train", p, 2)), tok) for p in range(2)]
  assert not set(per_process[0]) & set(per_process[1])
  assert sorted(per_process[0] + per_process[1]) == sorted(train)
  assert len(per_process[0]) == len(per_process[1]) == 15


def test_hf_eval_files_and_eval_columns(files):
  kinds, _, evals, d = files
  cfg = config("dataset_type=hf", "hf_path=text", f"hf_eval_files={d}/eval.txt", f"hf_train_files={d}/eval.txt",
               *UNPACKED, "max_target_length=128")
  got = texts_of(all_batches(make_iterator(cfg, 2, "eval")), tokenizer_for(cfg))
  assert sorted(got) == sorted(evals)


def test_grain_eval_files_are_finite_and_unshuffled(files):
  kinds, _, evals, d = files
  cfg = config(*kinds["grain_arrayrecord"], f"grain_eval_files={write_examples(d / 'e.arecord', evals)}",
               "packing=false", "max_target_length=128", "num_epoch=-1")
  got = texts_of(all_batches(make_iterator(cfg, 2, "eval")), tokenizer_for(cfg))
  assert got == evals


def test_weighted_mixture_follows_weights(files, tmp_path):
  import json
  a = write_examples(tmp_path / "a.arecord", docs(20, tag="A "))
  b = write_arrayrecord(tmp_path / "b.arecord", [json.dumps({"text": t}).encode() for t in docs(20, tag="B ")])
  for spec in ([f"grain_train_files={a},3;{b},1"],
               [f"grain_train_mixture_config_path={tmp_path / 'mix.json'}"]):
    (tmp_path / "mix.json").write_text(json.dumps({"a": {"path": a, "weight": 0.75}, "b": {"path": b, "weight": 0.25}}))
    cfg = config("dataset_type=grain", *spec, "packing=false", "num_epoch=-1", "max_target_length=128")
    got = texts_of(list(itertools.islice(make_iterator(cfg, 4, "train"), 25)), tokenizer_for(cfg))
    share_a = sum(t.startswith("A ") for t in got) / len(got)
    assert len(got) == 100 and 0.65 <= share_a <= 0.85, share_a


def test_packed_batches_are_well_formed_for_every_packing_type(files):
  kinds, train, _, _ = files
  for packing_type in ("first_fit", "best_fit", "concat_then_split"):
    cfg = config(*kinds["grain_parquet"], f"grain_packing_type={packing_type}", "num_epoch=1")
    tok = tokenizer_for(cfg)
    batches = all_batches(make_iterator(cfg, 2, "train"))
    ids = [tok.encode(t) for t in train]
    for b in batches:
      for seq in segments(b):
        assert any(tuple(doc[i:i + len(seq)]) == seq for doc in ids for i in range(len(doc) - len(seq) + 1))
