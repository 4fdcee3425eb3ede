"""Emergency checkpointing with orbax's emergency CheckpointManager on two processes (one slice each): local saves
every step, persistent every 3; kill -9 after a local save that no persistent save covers; the restart restores the
newest local step and continues exactly as an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import portpicker
import pytest

from maxtext_like.config import ConfigError, load_config
from train_lib import subprocess_env

TINY = ["override_model_config=true", "base_emb_dim=64", "base_num_query_heads=4", "base_num_kv_heads=2", "head_dim=16",
        "base_mlp_dim=128", "base_num_decoder_layers=2", "vocab_size=512", "max_target_length=32",
        "max_prefill_predict_length=8", "per_device_batch_size=1", "enable_tensorboard=false", "log_period=1",
        "dataset_type=synthetic", "learning_rate_schedule_steps=8", "log_config=false", "async_checkpointing=false",
        "ici_data_parallelism=2", "run_name=em"]


def _train(cwd, tag, steps, *extra, procs=2):
  port = portpicker.pick_unused_port()
  dist = lambda i: [f"jax_coordinator_address=127.0.0.1:{port}", "jax_num_processes=2", f"jax_process_id={i}"] if procs > 1 else []  # noqa: E731
  return [subprocess.Popen([sys.executable, "-m", "maxtext_like.train", "base.yml", *TINY, f"steps={steps}",
                            f"metrics_file={cwd}/{tag}.jsonl", *extra, *dist(i)], cwd=cwd, env=subprocess_env(8 // procs),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(procs)]


def _wait(procs):
  outs = [p.communicate(timeout=600)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outs)
  return outs


def _steps(d: Path) -> list[int]:
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if d.is_dir() else []


def _losses(path):
  return {r["step"]: r["loss"] for r in map(json.loads, Path(path).read_text().splitlines())}


@pytest.mark.slow  # three subprocess training runs
def test_kill_between_local_and_persistent_saves_resumes_from_local(tmp_path):
  emergency = ["enable_emergency_checkpoint=true", f"local_checkpoint_directory={tmp_path}/local",
               "local_checkpoint_period=1", "checkpoint_period=3"]
  reference = _train(tmp_path, "reference", 8, "enable_checkpointing=false", procs=1)
  procs = _train(tmp_path, "killed", 1000, *emergency)
  local, persistent = tmp_path / "local" / "process_1", tmp_path / "outputs" / "em" / "checkpoints"
  deadline = time.time() + 600
  while time.time() < deadline and not any(s >= 5 and s % 3 for s in _steps(local)):
    assert all(p.poll() is None for p in procs), procs[0].communicate()[0][-3000:]
    time.sleep(0.02)
  for p in procs:
    p.send_signal(signal.SIGKILL)
    p.wait()
  newest = max(_steps(local))
  assert max(_steps(persistent)) < newest  # the newest state exists only in the local tier
  out = _wait(_train(tmp_path, "resumed", 8, *emergency))
  restored = int(out[0].split("emergency checkpoint: step ")[1].split()[0])
  assert restored >= 5 and f"resumed from outputs/em/checkpoints/{restored}" in out[0]
  _wait(reference)
  ref, resumed = _losses(tmp_path / "reference.jsonl"), _losses(tmp_path / "resumed.jsonl")
  assert sorted(resumed) == list(range(restored + 1, 9))
  np.testing.assert_allclose([resumed[s] for s in sorted(resumed)], [ref[s] for s in sorted(resumed)], rtol=1e-5)


def test_emergency_keys_are_checked_and_multi_tier_is_refused_with_its_reason():
  with pytest.raises(ConfigError, match="local_checkpoint_directory.*required"):
    load_config(["base.yml", "enable_emergency_checkpoint=true", "local_checkpoint_period=1"], env={})
  with pytest.raises(ConfigError, match="enable_multi_tier_checkpointing.*replicator service"):
    load_config(["base.yml", "enable_multi_tier_checkpointing=true"], env={})


def test_one_process_is_refused(tiny_cfg_one_process):
  from maxtext_like.training.loop import Trainer
  with pytest.raises(ConfigError, match="two or more processes"):
    Trainer(tiny_cfg_one_process)


@pytest.fixture
def tiny_cfg_one_process(tmp_path):
  return load_config(["base.yml", *TINY, "steps=2", "enable_emergency_checkpoint=true",
                      f"local_checkpoint_directory={tmp_path}/local", "local_checkpoint_period=1",
                      f"base_output_directory={tmp_path}"], env={})
