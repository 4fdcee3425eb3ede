"""Device-dependent resolution without devices: mesh fill-in and batch sizes."""

import pytest

from maxtext_like.config import ConfigError, load_config
from maxtext_like.config.resolve import fill_parallelism, resolve


def cfg(*argv):
  return load_config(["base.yml", *argv], env={})


def test_fill_in_of_minus_one():
  assert fill_parallelism([1, -1, 2], 8, "ici", ["a", "b", "c"])[0] == [1, 4, 2]
  sizes, problems = fill_parallelism([3, -1], 8, "ici", ["a", "b"])
  assert problems and "not divisible" in problems[0].message
  sizes, problems = fill_parallelism([2, 2], 8, "ici", ["a", "b"])
  assert problems and "product is 4" in problems[0].message


def test_default_plan_on_8_devices():
  plan = resolve(cfg("per_device_batch_size=2"), 8)
  assert plan.mesh_shape[plan.mesh_axes.index("fsdp")] == 8
  assert plan.global_batch_size_to_train_on == 16


def test_mixed_axes_and_slices():
  plan = resolve(cfg("ici_fsdp_parallelism=2", "ici_tensor_parallelism=-1", "dcn_data_parallelism=-1"), 8, num_slices=2)
  shape = dict(zip(plan.mesh_axes, plan.mesh_shape))
  assert shape["fsdp"] == 2 and shape["tensor"] == 2 and shape["data"] == 2


def test_fractional_per_device_batch_and_accumulation():
  plan = resolve(cfg("per_device_batch_size=0.25", "gradient_accumulation_steps=3"), 8)
  assert plan.micro_batch_size_to_train_on == 2 and plan.global_batch_size_to_train_on == 6
  with pytest.raises(ConfigError, match="whole number"):
    resolve(cfg("per_device_batch_size=0.3"), 8)


def test_wrong_product_is_refused():
  with pytest.raises(ConfigError, match="product"):
    resolve(cfg("ici_fsdp_parallelism=2", "ici_tensor_parallelism=2"), 8)
  with pytest.raises(ConfigError, match="num_slices"):
    resolve(cfg("num_slices=4"), 8, num_slices=2)
