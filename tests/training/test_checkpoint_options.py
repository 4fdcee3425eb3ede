"""Orbax storage options (OCDBT, Zarr3, target data file size, concurrent GB), single-replica restoring and
continuous checkpointing: what lands on disk, and that every variant restores the same state."""

import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from maxtext_like.runtime import checkpoints as reading
from maxtext_like.training import checkpointing as ckpt
from maxtext_like.training.loop import Trainer


def _state():
  mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "fsdp"))
  w = jnp.arange(64 * 256, dtype=jnp.float32).reshape(64, 256)  # 64 KiB
  state = {"params": {"w": jax.device_put(w, NamedSharding(mesh, P(None, "fsdp")))},
           "step": jax.device_put(jnp.array(3), NamedSharding(mesh, P()))}
  return state, jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), state)


def _save(directory, options):
  state, abstract = _state()
  m = ckpt.manager(str(directory), period=1, max_to_keep=None, async_save=False, options=options)
  ckpt.save(m, 3, state, {"train": [{}]}, {}, force=True)
  m.wait_until_finished()
  return state, abstract, m


@pytest.mark.parametrize("ocdbt,zarr3", [(True, True), (True, False), (False, True), (False, False)])
def test_storage_formats_round_trip(tmp_path, ocdbt, zarr3):
  state, abstract, m = _save(tmp_path, ckpt.Options(use_ocdbt=ocdbt, use_zarr3=zarr3))
  item = tmp_path / "3" / "state"
  assert (item / "manifest.ocdbt").exists() == ocdbt
  if not ocdbt:  # plain zarr arrays: version 3 writes zarr.json, version 2 .zarray
    assert (item / "params.w" / ("zarr.json" if zarr3 else ".zarray")).exists()
  restored, data, step = ckpt.restore_latest(m, abstract)
  assert step == 3 and data == {"train": [{}]}
  np.testing.assert_array_equal(restored["params"]["w"], state["params"]["w"])
  params = reading.restore_from_path(str(tmp_path / "3"), abstract, params_only=True)  # decode's reader
  np.testing.assert_array_equal(params["w"], state["params"]["w"])


def test_target_data_file_size_splits_the_data_files(tmp_path):
  def data_files(directory, size):
    _save(directory, ckpt.Options(target_file_size=size))
    return [f for f in glob.glob(str(directory / "3" / "state" / "**" / "d" / "*"), recursive=True) if os.path.isfile(f)]
  # ~40 KB of arrays. How many files a large target gives depends on orbax's per-device writers (5 to 12 seen), so
  # the check is on the small target alone: no data file past twice the target, and the data spread over several.
  big = [os.path.getsize(f) for f in data_files(tmp_path / "big", 2 * 1024**3)]
  small = [os.path.getsize(f) for f in data_files(tmp_path / "small", 8 * 1024)]
  assert max(small) <= 16 * 1024 and sum(s > 4096 for s in small) >= 3, small
  assert sum(small) >= 0.9 * sum(big)  # the same data


def test_single_replica_restore_equals_a_normal_restore(tmp_path):
  state, abstract, _ = _save(tmp_path, ckpt.Options())
  m = ckpt.manager(str(tmp_path), period=1, max_to_keep=None, async_save=False,
                   options=ckpt.Options(single_replica_restore=True))
  restored, _, _ = ckpt.restore_latest(m, abstract)
  assert restored["params"]["w"].sharding == state["params"]["w"].sharding
  np.testing.assert_array_equal(restored["params"]["w"], state["params"]["w"])
  assert isinstance(ckpt.ocp.type_handlers.get_type_handler(jax.Array), ckpt.ocp.type_handlers.ArrayHandler)
  assert not isinstance(ckpt.ocp.type_handlers.get_type_handler(jax.Array),
                        ckpt.ocp.type_handlers.SingleReplicaArrayHandler)  # the global registry is put back


def test_options_come_from_the_config(tiny_cfg):
  cfg = tiny_cfg("checkpoint_storage_use_ocdbt=false", "checkpoint_storage_use_zarr3=false",
                 "checkpoint_storage_concurrent_gb=4", "checkpoint_storage_target_data_file_size_bytes=1048576",
                 "enable_single_replica_ckpt_restoring=true", "enable_continuous_checkpointing=true",
                 "load_checkpoint_only_once=true")
  assert ckpt.Options.of(cfg.checkpointing) == ckpt.Options(False, False, 4, 1048576, True, True)


def test_continuous_checkpointing_saves_between_periods(tiny_cfg):
  cfg = tiny_cfg("steps=4", "per_device_batch_size=1", "dataset_type=synthetic", "checkpoint_period=1000",
                 "save_checkpoint_on_completion=false", "enable_continuous_checkpointing=true")
  tr = Trainer(cfg)
  tr.run()
  steps = tr.mngr.all_steps()
  assert len(steps) >= 2 and all(0 < s <= 4 for s in steps)  # saved whenever the previous save had finished
  again = Trainer(cfg)
  _, start = again.initial_state()
  assert start == max(steps)


def test_safetensors_source_loads_the_hugging_face_directory(tmp_path):
  """load_parameters_path=<HF dir> with source_checkpoint_layout=safetensors gives the parameters that
  `convert to_maxtext` writes; a mismatching model is refused naming the keys."""
  import parity_cases as pc
  from maxtext_like.config import ConfigError, load_config
  from maxtext_like.convert import to_maxtext
  from maxtext_like.runtime.checkpoints import CheckpointError
  pc.hf_model("llama2", "llama2_gqa3").save_pretrained(tmp_path / "hf")
  ours = to_maxtext(str(tmp_path / "hf"), str(tmp_path / "ours"))
  common = ["base.yml", f"model_name={ours}/model.yml", "dataset_type=synthetic", "per_device_batch_size=1",
            "max_target_length=32", "max_prefill_predict_length=16", "enable_checkpointing=false",
            f"base_output_directory={tmp_path / 'runs'}", "run_name=t"]
  loaded = [Trainer(load_config([*common, f"load_parameters_path={p}", *extra], env={})).initial_state()[0]["params"]
            for p, extra in ((ours, ()), (tmp_path / "hf", ("source_checkpoint_layout=safetensors",)))]
  a, b = (jax.tree_util.tree_flatten_with_path(p)[0] for p in loaded)
  assert [k for k, _ in a] == [k for k, _ in b]
  for (_, x), (_, y) in zip(a, b):
    assert x.sharding == y.sharding
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  with pytest.raises(CheckpointError, match="does not match the chosen model.*base_emb_dim"):
    Trainer(load_config([*common, f"load_parameters_path={tmp_path / 'hf'}", "source_checkpoint_layout=safetensors",
                         "override_model_config=true", "base_emb_dim=128"], env={})).initial_state()
  with pytest.raises(ConfigError, match="source_checkpoint_layout.*load_parameters_path"):
    load_config(["base.yml", "source_checkpoint_layout=safetensors"], env={})
