"""Device-dependent resolution: mesh -1 fill-in and global batch sizes, from a device count (no JAX needed).

`resolve(cfg, num_devices, num_slices)` is pure: tests call it with any device count.
"""

from __future__ import annotations

import dataclasses
import math

from maxtext_like.config.errors import ConfigError, Problem
from maxtext_like.config.schema import Config

MESH_AXES_TO_KEYS = {  # mesh axis -> the ici_/dcn_ key suffix that sizes it
    "data": "data", "stage": "pipeline", "fsdp": "fsdp", "fsdp_transpose": "fsdp_transpose", "sequence": "sequence",
    "context": "context", "context_autoregressive": "context_autoregressive", "tensor": "tensor",
    "tensor_transpose": "tensor_transpose", "tensor_sequence": "tensor_sequence", "expert": "expert",
    "autoregressive": "autoregressive",
}


@dataclasses.dataclass(frozen=True)
class Plan:
  """What a run does on its devices: mesh shape and batch sizes."""

  mesh_axes: tuple[str, ...]
  ici_parallelism: tuple[int, ...]
  dcn_parallelism: tuple[int, ...]
  num_devices: int
  num_slices: int
  global_batch_size_to_load: int  # examples read per step: all microbatches of gradient accumulation
  global_batch_size_to_train_on: int
  micro_batch_size_to_train_on: int
  global_batch_size_to_eval_on: int
  gradient_accumulation_steps: int
  num_pipeline_stages: int = 1  # size of the 'stage' mesh axis
  num_pipeline_microbatches: int = 1  # resolved (-1: stages, or 2 × stages with delayed forwarding)
  num_pipeline_repeats: int = 1  # resolved circular repeats (-1: layers / (stages × layers per stage))

  @property
  def mesh_shape(self) -> tuple[int, ...]:
    return tuple(i * d for i, d in zip(self.ici_parallelism, self.dcn_parallelism))

  def axis_size(self, axis: str) -> int:
    """Devices along one mesh axis (ICI × DCN); 1 for an axis the mesh does not have."""
    return self.mesh_shape[self.mesh_axes.index(axis)] if axis in self.mesh_axes else 1


def fill_parallelism(sizes: list[int], target: int, level: str, keys: list[str]) -> tuple[list[int], list[Problem]]:
  """Replace at most one -1 so that the product equals `target`."""
  problems = []
  fills = [i for i, s in enumerate(sizes) if s == -1]
  known = math.prod(s for s in sizes if s != -1)
  if len(fills) > 1:
    problems.append(Problem(keys[fills[1]], f"only one {level}_*_parallelism may be -1", -1))
    return sizes, problems
  if fills:
    if known <= 0 or target % known:
      problems.append(Problem(keys[fills[0]], f"cannot be filled: {target} {'devices per slice' if level == 'ici' else 'slices'} "
                                              f"is not divisible by the product of the other {level} sizes ({known})", -1))
      return sizes, problems
    sizes = list(sizes)
    sizes[fills[0]] = target // known
  elif known != target:
    problems.append(Problem(f"{level}_*_parallelism", f"product is {known} but there are {target} "
                                                   f"{'devices per slice' if level == 'ici' else 'slices'}", sizes))
  return sizes, problems


def resolve(cfg: Config, num_devices: int, num_slices: int = 1) -> Plan:
  """The Plan for `num_devices` devices in `num_slices` slices; raises ConfigError when they do not fit."""
  problems: list[Problem] = []
  if cfg.mesh.num_slices not in (-1, num_slices):
    problems.append(Problem("num_slices", f"says {cfg.mesh.num_slices} but {num_slices} slice(s) were found", cfg.mesh.num_slices, cfg.source("num_slices")))
  if num_devices % num_slices:
    raise ConfigError([Problem("num_slices", f"{num_devices} devices cannot form {num_slices} equal slices", num_slices)])
  axes = list(cfg.mesh.mesh_axes)
  ici_keys = [f"ici_{MESH_AXES_TO_KEYS[a]}_parallelism" for a in axes]
  dcn_keys = [f"dcn_{MESH_AXES_TO_KEYS[a]}_parallelism" for a in axes]
  ici, p = fill_parallelism([cfg.get(k) for k in ici_keys], num_devices // num_slices, "ici", ici_keys)
  problems += p
  dcn, p = fill_parallelism([cfg.get(k) for k in dcn_keys], num_slices, "dcn", dcn_keys)
  problems += p

  pdbs = cfg.dataset.per_device_batch_size
  accum = cfg.optimizer.gradient_accumulation_steps
  load = pdbs * num_devices
  if load != int(load) or load < 1:
    problems.append(Problem("per_device_batch_size", f"times {num_devices} devices must be a whole number of examples (got {load})",
                            pdbs, cfg.source("per_device_batch_size")))
  eval_load = cfg.derived.eval_per_device_batch_size * num_devices
  if eval_load != int(eval_load) or eval_load < 1:
    problems.append(Problem("eval_per_device_batch_size", f"times {num_devices} devices must be a whole number of examples (got {eval_load})",
                            cfg.dataset.eval_per_device_batch_size, cfg.source("eval_per_device_batch_size")))
  stages, microbatches, repeats, p = pipeline_sizes(cfg, ici[axes.index("stage")] * dcn[axes.index("stage")], load)
  problems += p
  problems += context_problems(cfg, ici[axes.index("context")] * dcn[axes.index("context")])
  if problems:
    raise ConfigError(problems)
  micro = int(load)
  # expansion_factor_real_data (MaxText): E times the rows are loaded (the real ones by 1/E of the processes, the
  # rest placeholders) and the train step keeps the first global_batch_size_to_train_on.
  expansion = int(cfg.dataset.expansion_factor_real_data) if cfg.dataset.expansion_factor_real_data > 1 else 1
  return Plan(
      mesh_axes=tuple(axes), ici_parallelism=tuple(ici), dcn_parallelism=tuple(dcn), num_devices=num_devices, num_slices=num_slices,
      global_batch_size_to_load=micro * expansion * accum, global_batch_size_to_train_on=micro * accum, micro_batch_size_to_train_on=micro,
      global_batch_size_to_eval_on=int(eval_load), gradient_accumulation_steps=accum,
      num_pipeline_stages=stages, num_pipeline_microbatches=microbatches, num_pipeline_repeats=repeats,
  )


def context_problems(cfg: Config, shards: int) -> list[Problem]:
  """The load-balance length check for a context axis that was a -1 fill-in (the rules checked the others)."""
  from maxtext_like.config import rules
  v = cfg.flat()
  if shards <= 1 or rules.context_shards(v) is not None:
    return []
  return list(rules.context_load_balance_fits_length(v, cfg.derived.model_dump(), shards))


def pipeline_sizes(cfg: Config, stages: int, batch_per_step: float) -> tuple[int, int, int, list[Problem]]:
  """(stages, microbatches, repeats, problems) once the 'stage' axis size is known; MaxText's -1 defaults."""
  from maxtext_like.config import rules
  if stages <= 1:
    return 1, 1, 1, []
  v, d = cfg.flat(), cfg.derived.model_dump()
  problems = []
  if rules.pipeline_stages(v) is None:  # 'stage' was a -1 fill-in: the rules could not check it statically
    problems += list(rules.pipeline_layers_fit_stages(v, d, stages)) + list(rules.pipeline_microbatches_fit_stages(v, d, stages))
  p = cfg.pipeline
  microbatches = p.num_pipeline_microbatches
  if microbatches == -1:
    microbatches = 2 * stages if p.pipeline_delay_activation_forwarding else stages
  repeats = p.num_pipeline_repeats
  if repeats == -1:
    repeats = max(d["num_decoder_layers"] // (stages * p.num_layers_per_pipeline_stage), 1)
  if batch_per_step != int(batch_per_step) or int(batch_per_step) % microbatches:
    problems.append(Problem("num_pipeline_microbatches", f"must divide the batch of one forward pass ({batch_per_step:g} examples = "
                            "per_device_batch_size × devices)", microbatches,
                            cfg.source("num_pipeline_microbatches")))
  return stages, microbatches, repeats, problems
