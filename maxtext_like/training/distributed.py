"""Multi-process runs on JAX's own runtime: `jax.distributed.initialize` from config keys or the cluster environment.

Single-process runs skip it. On CPU the gloo collectives carry cross-process traffic (the localhost test path).
"""

from __future__ import annotations

import os

from maxtext_like.config import Config, ConfigError, Problem

_CLUSTER_HINTS = ("SLURM_NTASKS", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS", "OMPI_COMM_WORLD_SIZE")


def settings(cfg: Config, env=os.environ) -> dict | None:
  """Arguments for jax.distributed.initialize, or None for a single-process run. Pure: no JAX."""
  if cfg.get("skip_jax_distributed_system"):
    return None
  m = cfg.mesh
  addr = m.jax_coordinator_address or env.get("JAX_COORDINATOR_ADDRESS", "")
  nproc = m.jax_num_processes if m.jax_num_processes > 0 else int(env.get("JAX_NUM_PROCESSES", "-1"))
  pid = m.jax_process_id if m.jax_process_id >= 0 else int(env.get("JAX_PROCESS_ID", "-1"))
  timeout = cfg.get("jax_distributed_initialization_timeout")
  if addr or nproc > 1:
    problems = []
    if not addr:
      problems.append(Problem("jax_coordinator_address", "is required for a multi-process run (or set JAX_COORDINATOR_ADDRESS)", addr))
    if nproc < 1:
      problems.append(Problem("jax_num_processes", "is required with a coordinator address (or set JAX_NUM_PROCESSES)", nproc))
    if not 0 <= pid < max(nproc, 1):
      problems.append(Problem("jax_process_id", f"must be in 0..{nproc - 1} (or set JAX_PROCESS_ID)", pid))
    if problems:
      raise ConfigError(problems)
    return {"coordinator_address": addr, "num_processes": nproc, "process_id": pid, "initialization_timeout": timeout}
  slurm_multi = int(env.get("SLURM_NTASKS", "1") or 1) > 1
  if slurm_multi or any(env.get(k) for k in _CLUSTER_HINTS[1:]):
    return {"initialization_timeout": timeout}  # jax's cluster detection fills in the rest
  return None


def initialize(cfg: Config) -> None:
  args = settings(cfg)
  if args is None:
    return
  import jax
  if jax.config.jax_platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS", "") == "cpu":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**args)
