"""Ahead-of-time compile of the train step for a target device count, with a per-device memory report.

Nothing is allocated: parameters, optimizer state and the batch are abstract (shapes + shardings).
"""

from __future__ import annotations

import dataclasses
import pickle

import jax
import jax.numpy as jnp
import numpy as np

from maxtext_like.config import Config
from maxtext_like.data.features import BATCH_KEYS
from maxtext_like.models import count_params
from maxtext_like.training.flops import train_flops_per_step

GB = 1024**3


@dataclasses.dataclass
class CompileReport:
  num_devices: int
  mesh: dict
  params: int
  params_bytes_per_device: int
  opt_state_bytes_per_device: int
  temp_bytes_per_device: int
  argument_bytes_per_device: int
  output_bytes_per_device: int
  flops_per_step_formula: float
  flops_per_step_xla: float | None
  compile_seconds: float
  fits: bool | None
  suggestions: list[str]

  def table(self) -> str:
    rows = [("devices", self.num_devices), ("mesh", " ".join(f"{k}={v}" for k, v in self.mesh.items() if v > 1) or "1 device"),
            ("parameters", f"{self.params:,}"),
            ("parameters / device", f"{self.params_bytes_per_device / GB:.3f} GiB"),
            ("optimizer state / device", f"{self.opt_state_bytes_per_device / GB:.3f} GiB"),
            ("activations + temporaries / device", f"{self.temp_bytes_per_device / GB:.3f} GiB"),
            ("total / device (arguments + temporaries)", f"{(self.argument_bytes_per_device + self.temp_bytes_per_device) / GB:.3f} GiB"),
            ("train FLOPs / step (MaxText formula)", f"{self.flops_per_step_formula:.4g}"),
            ("train FLOPs / step / device (XLA cost analysis)", "n/a" if self.flops_per_step_xla is None else f"{self.flops_per_step_xla:.4g}"),
            ("compile time", f"{self.compile_seconds:.1f} s")]
    if self.fits is not None:
      rows.append(("fits", "yes" if self.fits else "NO"))
    out = ["| item | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]
    if self.suggestions:
      out += ["", "To fit:", *[f"- {s}" for s in self.suggestions]]
    return "\n".join(out)


def _bytes_per_device(tree) -> int:
  total = 0
  for leaf in jax.tree.leaves(tree):
    shard = leaf.sharding.shard_shape(leaf.shape) if getattr(leaf, "sharding", None) is not None else leaf.shape
    total += int(np.prod(shard)) * jnp.dtype(leaf.dtype).itemsize
  return total


def compile_train_step(cfg: Config, devices: list | None = None, memory_gb: float | None = None):
  """(compiled step, CompileReport) for the config on `devices` (default: all); the fits check is against
  `memory_gb` per device (default compile_device_memory_gb; 0: no check)."""
  import time
  from maxtext_like.training.loop import Trainer
  trainer = Trainer(cfg, devices=devices, with_io=False)
  seq = cfg.inference.max_target_length
  batch = {k: jax.ShapeDtypeStruct((trainer.plan.global_batch_size_to_load, seq), jnp.int32, sharding=trainer.batch_sharding)
           for k in BATCH_KEYS}
  t = time.perf_counter()
  with jax.set_mesh(trainer.mesh):
    compiled = trainer.train_step.lower(trainer.layout.abstract, batch).compile()
  seconds = time.perf_counter() - t
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
  xla_flops = float(cost.get("flops")) if isinstance(cost, dict) and cost.get("flops") is not None else None
  abstract = trainer.layout.abstract
  report = CompileReport(
      num_devices=len(trainer.devices), mesh=dict(zip(trainer.plan.mesh_axes, trainer.plan.mesh_shape)),
      params=count_params(trainer.spec), params_bytes_per_device=_bytes_per_device(abstract["params"]),
      opt_state_bytes_per_device=_bytes_per_device(abstract["opt_state"]),
      temp_bytes_per_device=int(getattr(mem, "temp_size_in_bytes", 0)),
      argument_bytes_per_device=int(getattr(mem, "argument_size_in_bytes", 0)),
      output_bytes_per_device=int(getattr(mem, "output_size_in_bytes", 0)),
      flops_per_step_formula=train_flops_per_step(trainer.spec, trainer.plan.global_batch_size_to_train_on, seq),
      flops_per_step_xla=xla_flops, compile_seconds=seconds, fits=None, suggestions=[])
  limit = (cfg.aot.compile_device_memory_gb if memory_gb is None else memory_gb) * GB
  if limit > 0:
    need = report.argument_bytes_per_device + report.temp_bytes_per_device
    report.fits = need <= limit
    if not report.fits:
      report.suggestions = suggestions(cfg, report, limit)
  return compiled, report


def suggestions(cfg: Config, r: CompileReport, limit: float) -> list[str]:
  out = []
  state = r.params_bytes_per_device + r.opt_state_bytes_per_device
  if state > 0.5 * limit:
    out.append(f"parameters + optimizer state take {state / GB:.2f} GiB per device: shard them over more devices "
               f"(raise ici_fsdp_parallelism, now {r.mesh.get('fsdp', 1)}) or use more devices")
  if r.temp_bytes_per_device > 0.3 * limit:
    if cfg.remat.remat_policy not in ("full",):
      out.append(f"activations take {r.temp_bytes_per_device / GB:.2f} GiB per device: remat_policy=full recomputes more and keeps less")
    out.append(f"lower per_device_batch_size (now {cfg.dataset.per_device_batch_size}) and raise gradient_accumulation_steps "
               "to keep the global batch")
  return out or ["use more devices or a smaller model"]


def save_compiled(compiled, path: str, devices: list | None = None) -> None:
  """The compiled step with the device count and platform it was compiled for (default: this process's devices)."""
  from jax.experimental import serialize_executable
  devices = list(jax.devices()) if devices is None else devices
  payload = serialize_executable.serialize(compiled)
  with open(path, "wb") as f:
    pickle.dump({"payload": payload, "devices": len(devices), "platform": devices[0].platform}, f)


def load_compiled(path: str, num_devices: int):
  """The compiled step saved by train_compile, if it was compiled for this topology (else a clear error)."""
  from jax.experimental import serialize_executable
  from maxtext_like.config import ConfigError, Problem
  with open(path, "rb") as f:
    saved = pickle.load(f)
  if saved["devices"] != num_devices or saved["platform"] != jax.default_backend():
    raise ConfigError([Problem("compiled_trainstep_file", f"was compiled for {saved['devices']} {saved['platform']} devices; "
                               f"this run has {num_devices} {jax.default_backend()} devices", path)])
  serialized, in_tree, out_tree = saved["payload"]
  return serialize_executable.deserialize_and_load(serialized, in_tree, out_tree)
