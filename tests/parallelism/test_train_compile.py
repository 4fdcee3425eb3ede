"""Ahead-of-time compile: abstract only, memory report, fit check, saved executable loads for the same topology."""

import os
import subprocess
import sys

import jax
import pytest

from maxtext_like.config import ConfigError, load_config
from maxtext_like.training.aot import compile_train_step, load_compiled, save_compiled

TINY = ["override_model_config=true", "base_emb_dim=64", "base_num_query_heads=4", "base_num_kv_heads=2", "head_dim=16",
        "base_mlp_dim=128", "base_num_decoder_layers=2", "vocab_size=512", "max_target_length=32", "max_prefill_predict_length=8",
        "per_device_batch_size=2", "dataset_type=synthetic"]


def test_report_on_8_fake_devices_with_fsdp_sharded_state():
  cfg = load_config(["base.yml", *TINY], env={})
  compiled, r = compile_train_step(cfg)
  assert r.num_devices == 8 and r.mesh["fsdp"] == 8
  param_bytes = r.params * 4
  assert r.params_bytes_per_device == pytest.approx(param_bytes / 8, rel=0.2)  # sharded, not replicated
  assert r.opt_state_bytes_per_device == pytest.approx(2 * param_bytes / 8, rel=0.2)  # Adam moments follow the params
  assert r.temp_bytes_per_device > 0 and r.flops_per_step_formula > 0
  assert "parameters / device" in r.table()


def test_fit_check_and_suggestions():
  cfg = load_config(["base.yml", *TINY, "compile_device_memory_gb=0.0001", "ici_fsdp_parallelism=1", "ici_data_parallelism=8"], env={})
  _, r = compile_train_step(cfg)
  assert r.fits is False and any("ici_fsdp_parallelism" in s for s in r.suggestions)
  _, ok = compile_train_step(load_config(["base.yml", *TINY, "compile_device_memory_gb=16"], env={}))
  assert ok.fits is True


def test_saved_executable_runs_only_on_matching_topology(tmp_path):
  cfg = load_config(["base.yml", *TINY], env={})
  compiled, _ = compile_train_step(cfg)
  path = str(tmp_path / "step.pkl")
  save_compiled(compiled, path)
  assert load_compiled(path, len(jax.devices())) is not None
  with pytest.raises(ConfigError, match="compiled for 8"):
    load_compiled(path, 4)


@pytest.mark.slow
def test_cli_fakes_the_target_device_count(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  out = subprocess.run([sys.executable, "-m", "maxtext_like.train_compile", "base.yml", *TINY, "compile_topology_num_devices=16",
                        "ici_tensor_parallelism=2"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "| devices | 16 |" in out.stdout and "fsdp=8 tensor=2" in out.stdout


def test_train_uses_the_saved_step(tmp_path):
  from maxtext_like.training.loop import Trainer
  argv = ["base.yml", *TINY, "enable_checkpointing=false", f"base_output_directory={tmp_path}", "run_name=aot", "steps=2"]
  compiled, _ = compile_train_step(load_config(argv, env={}))
  path = str(tmp_path / "step.pkl")
  save_compiled(compiled, path)
  reference = Trainer(load_config(argv, env={})).run()
  loaded = Trainer(load_config([*argv, f"compiled_trainstep_file={path}"], env={}))
  assert not hasattr(loaded.train_step, "lower")  # the deserialized executable, not a fresh jit
  assert loaded.run().losses == reference.losses
