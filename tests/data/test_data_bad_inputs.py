"""Bad data is a clear error naming the file and row; entry points exit 2 on it."""

import json

import pytest

from maxtext_like.data.errors import DataError
from maxtext_like.training.data_source import make_iterator

from data_files import config, docs, example_bytes, write_arrayrecord, write_examples, write_jsonl, write_parquet


def _first(cfg, split="train"):
  return next(make_iterator(cfg, 2, split))


def test_missing_files_name_the_pattern(tmp_path):
  for args in (["dataset_type=grain", f"grain_train_files={tmp_path}/none*.arecord"],
               ["dataset_type=hf", "hf_path=json", f"hf_train_files={tmp_path}/none.jsonl"],
               ["dataset_type=grain", f"grain_train_mixture_config_path={tmp_path}/mix.json"]):
    with pytest.raises(FileNotFoundError, match=r"none|mix\.json"):
      _first(config(*args))


def test_tfds_missing_dataset(tmp_path):
  with pytest.raises(DataError, match="array_record"):
    _first(config("dataset_type=tfds", f"dataset_path={tmp_path}", "dataset_name=nope"))


def test_empty_files_are_named(tmp_path):
  empty = write_parquet(tmp_path / "empty.parquet", [])
  with pytest.raises(DataError, match="empty.parquet"):
    _first(config("dataset_type=grain", "grain_file_type=parquet", f"grain_train_files={empty}"))
  ok = write_examples(tmp_path / "ok.arecord", docs(4))
  write_arrayrecord(tmp_path / "zero.arecord", [])
  with pytest.raises(DataError, match="zero.arecord"):
    _first(config("dataset_type=grain", f"grain_train_files={tmp_path}/*.arecord"))
  (tmp_path / "e.jsonl").write_text("")
  with pytest.raises(DataError, match="e.jsonl"):
    _first(config("dataset_type=hf", "hf_path=json", f"hf_train_files={tmp_path / 'e.jsonl'}"))
  assert ok


def test_missing_columns_list_the_columns(tmp_path):
  pq = write_parquet(tmp_path / "c.parquet", docs(4), column="body")
  with pytest.raises(DataError, match=r"c.parquet: no column 'text'.*'body'"):
    _first(config("dataset_type=grain", "grain_file_type=parquet", f"grain_train_files={pq}"))
  ar = write_examples(tmp_path / "c.arecord", docs(4), column="body")
  with pytest.raises(DataError, match=r"c.arecord row 0: .* no feature 'text'.*'body'"):
    _first(config("dataset_type=grain", f"grain_train_files={ar}"))
  js = write_jsonl(tmp_path / "c.jsonl", docs(4), column="body")
  with pytest.raises(DataError, match=r"no column 'text'.*'body'"):
    _first(config("dataset_type=hf", "hf_path=json", f"hf_train_files={js}"))
  cfg = config("dataset_type=hf", "hf_path=json", f"hf_train_files={js}", "train_data_columns=[body]")
  assert _first(cfg)["inputs"].shape == (2, 32)


def test_undecodable_rows_are_named(tmp_path):
  rows = [json.dumps({"text": t}).encode() for t in docs(6)]
  rows[4] = b"{not json"
  ar = write_arrayrecord(tmp_path / "bad.arecord", rows)
  cfg = config("dataset_type=grain", f"grain_train_files={ar}", "enable_data_shuffling=false", "num_epoch=1")
  with pytest.raises(DataError, match=r"bad.arecord row 4: not a JSON object"):
    list(make_iterator(cfg, 2, "train"))
  rows = [example_bytes(text=t) for t in docs(6)]
  rows[2] = example_bytes(text=b"caf\xe9")
  ar = write_arrayrecord(tmp_path / "utf.arecord", rows)
  cfg = config("dataset_type=grain", f"grain_train_files={ar}", "enable_data_shuffling=false", "num_epoch=1")
  with pytest.raises(DataError, match=r"utf.arecord row 2: column 'text' is not valid UTF-8"):
    list(make_iterator(cfg, 2, "train"))
  (tmp_path / "bad.jsonl").write_text('{"text": "a b c"}\n{oops\n')
  from maxtext_like.data import make_text_iterator
  with pytest.raises(DataError, match=r"bad.jsonl:2: not a JSON object"):
    make_text_iterator(files=[str(tmp_path / "bad.jsonl")], tokenizer=None, seq_len=8, global_batch_size=1,
                       shuffle=False, seed=0, packing=False, num_epoch=1)


def test_token_ids_outside_the_vocabulary_name_the_row(tmp_path):
  rows = [example_bytes(ids=list(range(1, 20)))] * 5 + [example_bytes(ids=[5, 4096, 7])]
  ar = write_arrayrecord(tmp_path / "ids.arecord", rows)
  cfg = config("dataset_type=grain", f"grain_train_files={ar}", "train_data_columns=[ids]", "tokenize_train_data=false",
               "enable_data_shuffling=false", "num_epoch=1")
  with pytest.raises(DataError, match=r"ids.arecord row 5: token id 4096 is outside \[0, vocab_size=4096\)"):
    list(make_iterator(cfg, 2, "train"))
  cfg = config("dataset_type=grain", f"grain_train_files={ar}", "train_data_columns=[ids]")
  with pytest.raises(DataError, match=r"row \d: expected text .* holds token ids"):
    list(make_iterator(cfg, 2, "train"))


def test_tokenizer_larger_than_vocab_size_is_refused():
  with pytest.raises(DataError, match="has 4096 ids but vocab_size is 1000"):
    make_iterator(config("dataset_type=embedded", "vocab_size=1000", "override_model_config=true"), 2, "train")


def test_entry_points_exit_2_on_data_errors(capsys):
  from maxtext_like.cli_common import run_entry_point

  def body(cfg):
    raise DataError("x.parquet row 3: broken")
  assert run_entry_point("train", ["base.yml"], body) == 2
  assert "x.parquet row 3: broken" in capsys.readouterr().err


def test_config_rules_for_data_keys():
  from maxtext_like.config import ConfigError
  for args, match in ((["dataset_type=hf", "hf_path=json", "eval_interval=5"], "hf_eval_split"),
                      (["dataset_type=grain", "grain_train_files=x", "eval_interval=5"], "grain_eval_files"),
                      (["train_data_columns=[a,b]"], "exactly one column"),
                      (["grain_packing_type=concat_then_split", "max_segments_per_seq=2"], "first_fit"),
                      (["grain_worker_count=-1"], "autotune"),
                      (["generate_padding_batch_eval=true", "eval_interval=5"], "eval_steps"),
                      (["dataset_type=grain", "grain_file_type=tfrecord"], "tfrecord")):
    with pytest.raises(ConfigError, match=match):
      config(*args)
