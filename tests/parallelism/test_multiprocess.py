"""Two processes on localhost (4 CPU devices each) train like one process with 8 devices, and resume."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import portpicker
import pytest

from maxtext_like.config import ConfigError, load_config
from train_lib import subprocess_env
from maxtext_like.training.distributed import settings

TINY = ["override_model_config=true", "base_emb_dim=64", "base_num_query_heads=4", "base_num_kv_heads=2", "head_dim=16",
        "base_mlp_dim=128", "base_num_decoder_layers=2", "vocab_size=512", "max_target_length=32", "max_prefill_predict_length=8",
        "per_device_batch_size=1", "enable_tensorboard=false", "log_period=1", "checkpoint_period=5", "dataset_type=synthetic",
        "learning_rate_schedule_steps=8", "log_config=false"]


def _train(cwd, run, steps, *extra, devices=8):
  return subprocess.Popen([sys.executable, "-m", "maxtext_like.train", "base.yml", *TINY, f"run_name={run}", f"steps={steps}",
                           f"metrics_file={cwd}/{run}_{steps}.jsonl", *extra], cwd=cwd, env=subprocess_env(devices),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _two_processes(cwd, run, steps):
  port = portpicker.pick_unused_port()
  procs = [_train(cwd, run, steps, f"jax_coordinator_address=127.0.0.1:{port}", "jax_num_processes=2", f"jax_process_id={i}",
                  devices=4) for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  return outs


def _losses(path):
  return {r["step"]: r["loss"] for r in map(json.loads, Path(path).read_text().splitlines())}


@pytest.mark.slow  # subprocess training jobs; deselect with -m 'not slow'
def test_two_processes_equal_one_and_resume(tmp_path):
  single = _train(tmp_path, "one", 5)
  out, err = single.communicate(timeout=600)
  assert single.returncode == 0, err[-3000:]
  _two_processes(tmp_path, "two", 5)
  one, two = _losses(tmp_path / "one_5.jsonl"), _losses(tmp_path / "two_5.jsonl")
  assert sorted(one) == sorted(two) == [1, 2, 3, 4, 5]
  np.testing.assert_allclose([two[s] for s in sorted(two)], [one[s] for s in sorted(one)], rtol=1e-5)
  assert (tmp_path / "outputs" / "two" / "checkpoints" / "5" / "state").is_dir()

  # Same process count: continues exactly where it stopped (compare with the single-process run continued too).
  outs = _two_processes(tmp_path, "two", 8)
  assert "resumed from" in outs[0][0]
  single = _train(tmp_path, "one", 8)
  single.communicate(timeout=600)
  np.testing.assert_allclose([_losses(tmp_path / "two_8.jsonl")[s] for s in (6, 7, 8)],
                             [_losses(tmp_path / "one_8.jsonl")[s] for s in (6, 7, 8)], rtol=1e-5)

  # A different process count: the 2-process checkpoint resumes in one process (synthetic data is process-count free).
  other = _train(tmp_path, "two", 10)
  out, err = other.communicate(timeout=600)
  assert other.returncode == 0, err[-3000:]
  assert "resumed from" in out and set(_losses(tmp_path / "two_10.jsonl")) == {9, 10}


def test_settings_from_keys_and_environment():
  cfg = load_config(["base.yml", "jax_coordinator_address=10.0.0.1:1234", "jax_num_processes=4", "jax_process_id=3"], env={})
  assert settings(cfg, env={}) == {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3,
                                   "initialization_timeout": 300}
  base = load_config(["base.yml"], env={})
  assert settings(base, env={}) is None
  assert settings(base, env={"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"})["process_id"] == 1
  assert settings(base, env={"SLURM_NTASKS": "4"}) == {"initialization_timeout": 300}
  with pytest.raises(ConfigError, match="jax_process_id"):
    settings(load_config(["base.yml", "jax_coordinator_address=h:1", "jax_num_processes=2"], env={}), env={})
  assert settings(load_config(["base.yml", "skip_jax_distributed_system=true"], env={}), env={"SLURM_NTASKS": "4"}) is None
