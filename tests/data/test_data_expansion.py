"""expansion_factor_real_data: 1/E of the processes load the real rows (E x more each), the others placeholders."""

import numpy as np
import pytest

from maxtext_like.config import ConfigError
from maxtext_like.config.resolve import resolve
from maxtext_like.training.data_source import make_iterator

from batch_checks import segments
from data_files import config, docs, write_jsonl


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  from data_files import write_parquet
  d = tmp_path_factory.mktemp("exp")
  return ["dataset_type=grain", "grain_file_type=parquet", f"grain_train_files={write_parquet(d / 'a.parquet', docs(40))}",
          f"grain_eval_files={write_parquet(d / 'e.parquet', docs(8, offset=50))}", "num_epoch=-1"]


def test_resolve_loads_expansion_times_the_trained_rows():
  plan = resolve(config("per_device_batch_size=2", "gradient_accumulation_steps=3", "expansion_factor_real_data=4"), 8)
  assert (plan.global_batch_size_to_load, plan.global_batch_size_to_train_on, plan.micro_batch_size_to_train_on) == (192, 48, 16)
  plan = resolve(config("per_device_batch_size=2"), 8)
  assert plan.global_batch_size_to_load == plan.global_batch_size_to_train_on == 16


@pytest.mark.parametrize("kind", ["grain", "synthetic"])
def test_loading_processes_hold_the_real_rows_of_a_run_without_expansion(files, kind):
  args = files if kind == "grain" else ["dataset_type=synthetic"]
  expanded, plain = config(*args, "expansion_factor_real_data=2"), config(*args)
  # 4 processes, E=2: a loaded batch of 16 rows (4 per process); processes 0, 1 read the 8 real rows.
  its = [make_iterator(expanded, 16, "train", p, 4) for p in range(4)]
  refs = [make_iterator(plain, 8, "train", p, 2) for p in range(2)]
  for _ in range(3):
    local = [next(it) for it in its]
    assert all(b["inputs"].shape == (4, 32) for b in local)
    for b, ref in zip(local[:2], (next(r) for r in refs)):
      list(segments(b))
      for k in ref:
        np.testing.assert_array_equal(b[k], ref[k], err_msg=k)
    for b in local[2:]:  # placeholders: all padding, nothing in the loss
      assert all(not v.any() for v in b.values())
  state = its[3].get_state()
  its[3].set_state(state)
  with pytest.raises(ValueError, match="placeholder"):
    its[3].set_state(its[0].get_state())


def test_eval_is_loaded_by_every_process(files):
  cfg = config(*files, "expansion_factor_real_data=2")
  batches = [next(make_iterator(cfg, 4, "eval", p, 2)) for p in range(2)]
  assert all(b["targets_segmentation"].any() for b in batches)


@pytest.mark.parametrize("value", [0, 0.5, 1.5, -2])
def test_values_other_than_minus_one_or_whole_numbers_are_refused(value):
  with pytest.raises(ConfigError, match="expansion_factor_real_data"):
    config(f"expansion_factor_real_data={value}")


def test_expansion_must_divide_the_process_count(files):
  cfg = config(*files, "expansion_factor_real_data=3")
  with pytest.raises(ConfigError, match="divides the process count"):
    make_iterator(cfg, 8, "train", 0, 4)
  with pytest.raises(ConfigError, match="divides the process count"):
    make_iterator(cfg, 2, "train", 0, 1)  # one process cannot hand its rows to another
  assert next(make_iterator(config(*files, "expansion_factor_real_data=1"), 2, "train"))["inputs"].shape == (2, 32)
