"""`python -m maxtext_like.train_compile base.yml model_name=... compile_topology_num_devices=64 [k=v ...]`.

Compiles the train step for a target device count without allocating parameters and prints the per-device
memory report. On CPU the target devices are faked (XLA's host platform device count), so a laptop can check
whether a run fits before it is launched.
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
    if per_slice > 0 and "jax" not in sys.modules:
      _fake_devices(per_slice * slices)
    import jax
    from maxtext_like.config import ConfigError, Problem
    from maxtext_like.training.aot import compile_train_step, save_compiled
    want = per_slice * slices if per_slice > 0 else len(jax.devices())
    if len(jax.devices()) < want:
      raise ConfigError([Problem("compile_topology_num_devices", f"needs {want} devices but {len(jax.devices())} "
                                 f"{jax.default_backend()} devices are visible (fake CPU devices need a fresh process)", per_slice)])
    if slices > 1 and cfg.mesh.num_slices == -1:
      from maxtext_like.config import load_config
      cfg = load_config([*argv, f"num_slices={slices}"])
    compiled, report = compile_train_step(cfg, devices=jax.devices()[:want])
    print(report.table(), flush=True)
    if cfg.aot.compiled_trainstep_file:
      save_compiled(compiled, cfg.aot.compiled_trainstep_file)
      print(f"compiled step saved to {cfg.aot.compiled_trainstep_file}", flush=True)
    if report.fits is False:
      raise SystemExit(1)

  return run_entry_point("train_compile", argv, body)


if __name__ == "__main__":
  sys.exit(main())
