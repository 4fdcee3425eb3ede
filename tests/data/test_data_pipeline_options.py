"""Config keys of the shared pipeline: packing type, segment limit, truncation, padding/reuse batches, secrets."""

import itertools

import numpy as np
import pytest

from maxtext_like.data import packing_efficiency
from maxtext_like.runtime.tokenizer import tokenizer_for
from maxtext_like.training.data_source import make_iterator

from batch_checks import segments
from data_files import BASE, config, docs, write_jsonl, write_parquet

BASE_ARGS = BASE


@pytest.fixture(scope="module")
def parquet(tmp_path_factory):
  d = tmp_path_factory.mktemp("opts")
  return ["dataset_type=grain", "grain_file_type=parquet", f"grain_train_files={write_parquet(d / 'p.parquet', docs(40))}"]


def _n_segments(batch):
  return [len(np.unique(s[s > 0])) for s in batch["inputs_segmentation"]]


def test_max_segments_per_seq_limits_bin_packing(parquet):
  for packing_type in ("first_fit", "best_fit"):
    free = list(itertools.islice(make_iterator(config(*parquet, f"grain_packing_type={packing_type}", "num_epoch=-1",
                                                      "max_target_length=128"), 4, "train"), 4))
    assert max(max(_n_segments(b)) for b in free) > 2  # the limit below binds
    capped = list(itertools.islice(make_iterator(config(*parquet, f"grain_packing_type={packing_type}", "num_epoch=-1",
                                                        "max_target_length=128", "max_segments_per_seq=2"), 4, "train"), 4))
    assert max(max(_n_segments(b)) for b in capped) == 2
    assert all(list(segments(b)) for b in capped)


def test_best_fit_pads_no_more_than_first_fit(parquet):
  eff = {}
  for packing_type in ("first_fit", "best_fit", "concat_then_split"):
    cfg = config(*parquet, f"grain_packing_type={packing_type}", "num_epoch=-1", "enable_data_shuffling=false")
    eff[packing_type] = np.mean([packing_efficiency(b) for b in itertools.islice(make_iterator(cfg, 8, "train"), 6)])
  assert eff["concat_then_split"] == 1.0
  assert eff["best_fit"] >= eff["first_fit"] - 0.02, eff


def test_truncation_keeps_one_piece_per_document(parquet):
  tok = None
  for truncate, expect_more in (("true", False), ("false", True)):
    cfg = config(*parquet, f"use_truncation={truncate}", "packing=false", "num_epoch=1", "enable_data_shuffling=false",
                 "max_target_length=16")
    tok = tokenizer_for(cfg)
    rows = sum(b["inputs"].shape[0] for b in make_iterator(cfg, 2, "train"))
    assert (rows > 40) == expect_more, rows  # 40 documents, most longer than 16 tokens
  assert tok is not None


def test_padding_batches_after_the_end(parquet):
  cfg = config(*parquet, "generate_padding_batch_train=true", "num_epoch=1", "packing=false", "max_target_length=128")
  it = make_iterator(cfg, 4, "train")
  real = list(itertools.islice(it, 10))
  assert all(b["targets_segmentation"].any() for b in real)
  state = it.get_state()
  pad = next(it)
  assert pad["inputs"].shape == (4, 128) and not any(v.any() for v in pad.values())
  again = make_iterator(cfg, 4, "train")
  again.set_state(state)
  assert not next(again)["targets_segmentation"].any()
  cfg = config(*parquet, "num_epoch=1", "packing=false", "max_target_length=128")
  assert len(list(make_iterator(cfg, 4, "train"))) == 10


def test_reuse_example_batch_repeats_the_first_batch(parquet):
  cfg = config(*parquet, "reuse_example_batch=1", "num_epoch=-1")
  it = make_iterator(cfg, 2, "train")
  first, second = next(it), next(it)
  for k in first:
    np.testing.assert_array_equal(first[k], second[k])
  again = make_iterator(cfg, 2, "train")
  again.set_state(it.get_state())
  np.testing.assert_array_equal(next(again)["inputs"], first["inputs"])


def test_add_bos_eos_follow_the_config(tmp_path):
  path = write_jsonl(tmp_path / "a.jsonl", ["hello world"] * 4)
  for bos, eos in ((True, True), (False, True), (True, False)):
    cfg = config("dataset_type=hf", "hf_path=json", f"hf_train_files={path}", f"add_bos={bos}", f"add_eos={eos}",
                 "packing=false", "num_epoch=1")
    tok = tokenizer_for(cfg)
    b = next(make_iterator(cfg, 2, "train"))
    n = int(b["inputs_segmentation"][0].sum())
    seq = list(b["inputs"][0][:n]) + [int(b["targets"][0][n - 1])]
    assert (seq[0] == tok.bos_id) == bos and (seq[-1] == tok.eos_id) == eos


def test_other_tokenizer_types_from_config(tmp_path):
  import tokenizers
  from tokenizers import models, pre_tokenizers
  vocab = {w: i for i, w in enumerate(["<s>", "</s>", "[UNK]", "alpha", "bravo", "charlie", "delta", "echo", "Document"])}
  tk = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
  tk.pre_tokenizer = pre_tokenizers.Whitespace()
  tk.save(str(tmp_path / "tokenizer.json"))
  path = write_jsonl(tmp_path / "a.jsonl", docs(8))
  cfg = config("dataset_type=hf", "hf_path=json", f"hf_train_files={path}", "tokenizer_type=huggingface",
               f"tokenizer_path={tmp_path / 'tokenizer.json'}", "num_epoch=1")
  b = next(make_iterator(cfg, 2, "train"))
  assert b["inputs"].max() < 9 and b["inputs"][0][0] == 0  # <s>


def test_access_token_is_masked_in_the_config_record():
  from maxtext_like.training.loop import config_record
  cfg = config("hf_access_token=hf_secret123")
  assert cfg.dataset.hf_access_token == "hf_secret123"
  rec = config_record(cfg)
  assert rec["flat"]["hf_access_token"] == "***" and "hf_secret123" not in repr(rec)


def test_worker_processes_keep_batches_and_resume(parquet):
  cfg0 = config(*parquet, "num_epoch=-1")
  cfg1 = config(*parquet, "num_epoch=-1", "grain_worker_count=1")
  ref = list(itertools.islice(make_iterator(cfg0, 2, "train"), 4))
  it = make_iterator(cfg1, 2, "train")
  got = [next(it) for _ in range(2)]
  state = it.get_state()
  again = make_iterator(cfg1, 2, "train")
  again.set_state(state)
  got += [next(again) for _ in range(2)]
  for a, b in zip(ref, got):
    np.testing.assert_array_equal(a["inputs"], b["inputs"])


def test_embedded_defaults_split_and_repeat_unless_set():
  from maxtext_like.training.data_source import setting
  cfg = config("dataset_type=embedded")
  assert setting(cfg, "num_epoch") == -1 and setting(cfg, "use_truncation") is False
  cfg = config("dataset_type=embedded", "num_epoch=2", "use_truncation=true")
  assert setting(cfg, "num_epoch") == 2 and setting(cfg, "use_truncation") is True
  cfg = config("dataset_type=hf", "hf_path=json")
  assert setting(cfg, "num_epoch") == 1 and setting(cfg, "use_truncation") is True


def test_data_inspect_shows_what_the_model_sees(parquet, capsys):
  from maxtext_like.data_inspect import main
  assert main([*BASE_ARGS, *parquet, "--rows", "2", "--batches", "3", "--width", "4", "num_epoch=-1"]) == 0
  out = capsys.readouterr().out
  assert "=== row 1:" in out and "segment 1: positions 0.." in out and "t | input  target  seg  pos  loss" in out
  assert "packing efficiency" in out and "tokens/example" in out
  assert main([*BASE_ARGS, "dataset_type=grain", "grain_train_files=/nonexistent/*.arecord"]) == 2
  assert "/nonexistent/*.arecord" in capsys.readouterr().err
