"""Emergency checkpointing (`enable_emergency_checkpoint`) through orbax's emergency CheckpointManager: frequent
saves of each slice's shards to a local directory (`local_checkpoint_directory`, every `local_checkpoint_period`
steps) and periodic persistent saves (`checkpoint_period`); a restart restores the newest complete step, local or
persistent, broadcasting the state from the slice that holds it.

Orbax's slices are the replicas along the mesh's first axis, one process (host) group each: with one slice it keeps
only the persistent tier, so this needs two or more processes, each holding whole replicas. The data iterator's
state (JSON, per process) is written beside each save, locally and, for persistent saves, in the persistent
directory; the train state alone goes through orbax.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from maxtext_like.config import ConfigError, Problem
from maxtext_like.runtime.checkpoints import CheckpointError


def _slices_are_processes(mesh) -> str:
  """'' when every index of the mesh's first axis is owned by its own processes; else what is wrong."""
  owners = [frozenset(d.process_index for d in np.asarray(mesh.devices)[i].reshape(-1))
            for i in range(mesh.devices.shape[0])]
  if len(owners) < 2:
    return f"the mesh's first axis ({mesh.axis_names[0]}) has size {len(owners)}: it must hold the replicas (slices)"
  if any(a & b for i, a in enumerate(owners) for b in owners[i + 1:]):
    return (f"the replicas along the mesh's first axis ({mesh.axis_names[0]}) share processes "
            f"({[sorted(o) for o in owners]}): each replica must live on its own processes")
  return ""


class EmergencyManager:
  """Orbax's emergency manager plus the per-step data-iterator state; the small interface the loop uses."""

  def __init__(self, c, checkpoint_dir: str, mesh, abstract_state):
    problems = []
    if jax.process_count() < 2:
      problems.append(Problem("enable_emergency_checkpoint", "needs two or more processes: orbax keeps local "
                              "checkpoints only for the slices that do not write the persistent ones, and one "
                              "process is one slice", True))
    elif why := _slices_are_processes(mesh):
      problems.append(Problem("enable_emergency_checkpoint", f"{why} (e.g. ici_data_parallelism or "
                              "dcn_data_parallelism = the number of processes)", True))
    if problems:
      raise ConfigError(problems)
    from absl import flags
    from orbax.checkpoint._src.multihost import multihost
    from orbax.checkpoint.experimental.emergency import checkpoint_manager as ecm
    if not flags.FLAGS.is_parsed():  # orbax's emergency code reads absl flags
      flags.FLAGS.mark_as_parsed()
    multihost.initialize_runtime_to_distributed_ids()
    multihost.initialize_distributed_to_device_ids()
    self.local = os.path.join(os.path.abspath(c.local_checkpoint_directory), f"process_{jax.process_index()}")
    self.persistent = os.path.abspath(checkpoint_dir)
    os.makedirs(self.local, exist_ok=True)
    os.makedirs(self.persistent, exist_ok=True)
    self.period = c.checkpoint_period
    options = ecm.CheckpointManagerOptions(
        local=ecm.LocalCheckpointOptions(save_interval_steps=c.local_checkpoint_period, max_to_keep=2),
        persistent=ecm.PersistentCheckpointOptions(save_interval_steps=c.checkpoint_period,
                                                   max_to_keep=c.max_num_checkpoints_to_keep))
    self.abstract = abstract_state
    with jax.set_mesh(None):
      self.mngr = ecm.CheckpointManager(self.local, self.persistent, global_mesh=mesh, abstract_state=abstract_state,
                                        options=options)
    self.directory = self.persistent

  # Orbax's cross-slice agreement runs its own shard_map over a (host, device) mesh: outside the loop's mesh context.
  def latest_step(self) -> int | None:
    with jax.set_mesh(None):
      return self.mngr.latest_step()

  def all_steps(self) -> list[int]:
    with jax.set_mesh(None):
      return list(self.mngr.all_steps())

  def should_save(self, step: int) -> bool:
    with jax.set_mesh(None):
      return self.mngr.should_save(step)

  def wait_until_finished(self) -> None:
    with jax.set_mesh(None):
      self.mngr.wait_until_finished()

  def save(self, step: int, state, data_state: dict, *, force: bool = False) -> bool:
    with jax.set_mesh(None):
      saved = self.mngr.save(step, args=ocp.args.Composite(state=ocp.args.PyTreeSave(item=state)), force=force)
    if saved:
      self._write_data_state(self.local, step, data_state)
      if step % self.period == 0 and jax.process_index() == 0:
        self._write_data_state(self.persistent, step, data_state)
    return saved

  def restore_latest(self, abstract_state) -> tuple[Any, dict, int] | None:
    step = self.latest_step()
    if step is None:
      return None
    data = self._read_data_state(step)
    restore_args = ocp.checkpoint_utils.construct_restore_args(abstract_state)
    try:
      with jax.set_mesh(None):
        restored = self.mngr.restore(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(item=abstract_state, restore_args=restore_args)))
    except Exception as e:  # noqa: BLE001
      raise CheckpointError(f"emergency checkpoint step {step} could not be restored "
                            f"({type(e).__name__}: {str(e)[:300]})") from None
    persistent = [int(n) for n in os.listdir(self.persistent) if n.isdigit()]
    if jax.process_index() == 0 and step not in persistent:
      print(f"emergency checkpoint: step {step} restored from the local tier (persistent checkpoints up to "
            f"{max(persistent, default='none')})", flush=True)
    return restored["state"], data, step

  @staticmethod
  def _write_data_state(directory: str, step: int, data_state: dict) -> None:
    path = os.path.join(directory, "data_state", f"{step}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
      json.dump(data_state, f)
    os.replace(path + ".tmp", path)

  def _read_data_state(self, step: int) -> dict:
    for directory in (self.local, self.persistent):
      path = os.path.join(directory, "data_state", f"{step}.json")
      if os.path.isfile(path):
        with open(path) as f:
          return json.load(f)
    raise CheckpointError(f"emergency checkpoint step {step} has no data-iterator state in {self.local}/data_state "
                          f"or {self.persistent}/data_state")
