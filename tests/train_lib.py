"""Shared by the training, parallelism and quantization tests: config makers, and running a Trainer's step."""

import os

import numpy as np

from maxtext_like.config import load_config
from maxtext_like.models.sharding import activation_sharding
from maxtext_like.training.loop import Trainer, to_global


def subprocess_env(devices: int) -> dict:
  """This process's environment for a training subprocess with `devices` fake CPU devices (no M_ overrides and no
  distributed settings of our own leak in)."""
  env = {k: v for k, v in os.environ.items() if not k.startswith(("M_", "JAX_COORD", "JAX_NUM_PROC", "JAX_PROCESS"))}
  inherited = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
  env["XLA_FLAGS"] = " ".join([*inherited, f"--xla_force_host_platform_device_count={devices}"])
  env["JAX_PLATFORMS"] = "cpu"
  return env


def run_steps(cfg, n, devices=None):
  tr = Trainer(cfg, devices=devices)
  state, _ = tr.initial_state()
  losses, norms = [], []
  with tr.mesh, activation_sharding(tr.mesh, tr.rules):
    for _ in range(n):
      state, m = tr.train_step(state, to_global(next(tr.data), tr.batch_sharding))
      losses.append(float(m["loss"]))
      norms.append(float(m["grad_norm"]))
  return tr, state, np.array(losses), np.array(norms)


def config_maker(args, out_dir):
  """`make(*argv)`: base.yml + `args` with outputs under `out_dir`, then `argv` (a later value of a key wins)."""
  def make(*argv):
    return load_config(["base.yml", *args, f"base_output_directory={out_dir}", *argv], env={})
  return make
