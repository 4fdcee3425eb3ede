"""`python -m maxtext_like.train_compile base.yml model_name=... compile_topology=v5e-256 [k=v ...]`.

Compiles the train step for a target without allocating parameters and prints the per-device memory report.
`compile_topology=v5e-256` (v4-N, v5e-N, v5p-N, v6e-N; `compile_topology_num_slices` slices) compiles with TPU's
own compiler (libtpu, which setup.sh installs beside the environment) for that slice, as MaxText's train_compile
does, and checks the step against the chip's HBM. `compile_topology_num_devices=64` instead compiles for 64 fake
CPU devices (XLA's host platform device count). `compiled_trainstep_file=PATH` saves the compiled step.
"""

from __future__ import annotations

import os
import sys

from maxtext_like.cli_common import run_entry_point


def _fake_devices(n: int) -> None:
  """Ask XLA for n host devices; must happen before JAX initialises its backend."""
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
  os.environ["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={n}"])


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv

  def body(cfg):
    slices = max(cfg.aot.compile_topology_num_slices, 1)
    per_slice = cfg.aot.compile_topology_num_devices
    memory_gb = cfg.aot.compile_device_memory_gb
    if cfg.aot.compile_topology:  # a TPU slice described by libtpu: compiled by TPU's compiler on this host
      from maxtext_like.training.topologies import topology_devices
      devices, target = topology_devices(cfg.aot.compile_topology, slices)
      memory_gb = memory_gb or target.hbm_gb
      print(f"compiling for {slices} x {target.name} ({target.topology}, {len(devices)} devices, "
            f"{target.hbm_gb:g} GiB HBM each)", flush=True)
    else:
      if per_slice > 0 and "jax" not in sys.modules:
        _fake_devices(per_slice * slices)
      import jax
      from maxtext_like.config import ConfigError, Problem
      want = per_slice * slices if per_slice > 0 else len(jax.devices())
      if len(jax.devices()) < want:
        raise ConfigError([Problem("compile_topology_num_devices", f"needs {want} devices but {len(jax.devices())} "
                                   f"{jax.default_backend()} devices are visible (fake CPU devices need a fresh process)", per_slice)])
      devices = jax.devices()[:want]
    from maxtext_like.training.aot import compile_train_step, save_compiled
    if slices > 1 and cfg.mesh.num_slices == -1:
      from maxtext_like.config import load_config
      cfg = load_config([*argv, f"num_slices={slices}"])
    compiled, report = compile_train_step(cfg, devices=devices, memory_gb=memory_gb)
    print(report.table(), flush=True)
    if cfg.aot.compiled_trainstep_file:
      save_compiled(compiled, cfg.aot.compiled_trainstep_file, devices)
      print(f"compiled step saved to {cfg.aot.compiled_trainstep_file}", flush=True)
    if report.fits is False:
      raise SystemExit(1)

  return run_entry_point("train_compile", argv, body)


if __name__ == "__main__":
  sys.exit(main())
