"""Exact resume, checkpoint contents, and refusal of bad checkpoints."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from maxtext_like.runtime.checkpoints import CheckpointError
from maxtext_like.training.loop import Trainer

ARGS = ["dataset_type=embedded", "learning_rate_schedule_steps=6", "per_device_batch_size=1", "ici_fsdp_parallelism=1", "checkpoint_period=3", "log_period=1"]


def train(cfg):
  return Trainer(cfg, devices=jax.devices()[:2] if False else jax.devices()[:1]).run()


def test_exact_resume_bit_for_bit(tiny_cfg, tmp_path):
  full = train(tiny_cfg(*ARGS, "steps=6", "run_name=full"))
  first = train(tiny_cfg(*ARGS, "steps=3", "run_name=split"))
  resumed = train(tiny_cfg(*ARGS, "steps=6", "run_name=split"))
  assert sorted(resumed.losses) == [3, 4, 5]
  for step in range(6):
    got = first.losses.get(step, resumed.losses.get(step))
    assert got == full.losses[step], step  # bit for bit
  for a, b in zip(jax.tree.leaves(full.final_state["params"]), jax.tree.leaves(resumed.final_state["params"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_checkpoint_holds_state_data_iterator_and_config(tiny_cfg, tmp_path):
  train(tiny_cfg(*ARGS, "steps=3"))
  step_dir = tmp_path / "t" / "checkpoints" / "3"
  assert (step_dir / "state").is_dir() and (step_dir / "data").exists() and (step_dir / "config").exists()
  assert (tmp_path / "t" / "loss_curve.png").is_file()


def test_shape_mismatch_is_refused_naming_tensors(tiny_cfg):
  train(tiny_cfg(*ARGS, "steps=3"))
  with pytest.raises(CheckpointError, match=r"mis-shaped: .*(embedding|kernel)"):
    Trainer(tiny_cfg(*ARGS, "steps=6", "base_emb_dim=32"), devices=jax.devices()[:1]).initial_state()


def test_missing_load_parameters_path(tiny_cfg, tmp_path):
  with pytest.raises(CheckpointError, match="does not exist"):
    Trainer(tiny_cfg(*ARGS, f"load_parameters_path={tmp_path}/nowhere", "run_name=fresh"), devices=jax.devices()[:1]).initial_state()


def test_load_parameters_path_loads_params_only(tiny_cfg, tmp_path):
  src = train(tiny_cfg(*ARGS, "steps=3", "run_name=src"))
  tr = Trainer(tiny_cfg(*ARGS, "steps=6", "run_name=dst", f"load_parameters_path={tmp_path}/src/checkpoints/3"), devices=jax.devices()[:1])
  state, step = tr.initial_state()
  assert step == 0 and int(state["step"]) == 0
  for a, b in zip(jax.tree.leaves(src.final_state["params"]), jax.tree.leaves(state["params"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_corrupt_checkpoint_is_refused(tiny_cfg, tmp_path):
  train(tiny_cfg(*ARGS, "steps=3"))
  state_dir = tmp_path / "t" / "checkpoints" / "3" / "state"
  for root, _, files in os.walk(state_dir):
    for f in files:
      p = os.path.join(root, f)
      with open(p, "wb") as fh:
        fh.write(b"garbage")
  with pytest.raises(CheckpointError):
    Trainer(tiny_cfg(*ARGS, "steps=6"), devices=jax.devices()[:1]).initial_state()


def test_partial_save_is_not_latest(tiny_cfg, tmp_path):
  train(tiny_cfg(*ARGS, "steps=3"))
  ckpt_dir = tmp_path / "t" / "checkpoints"
  # A save that died mid-write leaves an orbax temporary directory; it must not be taken as a checkpoint.
  shutil.copytree(ckpt_dir / "3", ckpt_dir / "6.orbax-checkpoint-tmp-123")
  tr = Trainer(tiny_cfg(*ARGS, "steps=6"), devices=jax.devices()[:1])
  _, step = tr.initial_state()
  assert step == 3
