"""Orbax checkpoints: train state, data-iterator state and the resolved config saved together.

A save is written to a temporary directory and renamed when complete, so a partial save never becomes `latest`.
Restores compare shapes first and name every tensor that does not fit (CheckpointError, exit code 2).
The storage keys (OCDBT, Zarr3, concurrent GB, target file size), single-replica restoring and continuous
checkpointing are orbax's own options, carried by the manager.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from maxtext_like.runtime.checkpoints import CheckpointError, check_fits


@dataclasses.dataclass(frozen=True)
class Options:
  """The checkpointing section's orbax options."""
  use_ocdbt: bool = True
  use_zarr3: bool = True
  concurrent_gb: int = 96
  target_file_size: int = 2 * 1024**3
  single_replica_restore: bool = False
  continuous: bool = False

  @classmethod
  def of(cls, c) -> Options:
    return cls(use_ocdbt=c.checkpoint_storage_use_ocdbt, use_zarr3=c.checkpoint_storage_use_zarr3,
               concurrent_gb=c.checkpoint_storage_concurrent_gb,
               target_file_size=c.checkpoint_storage_target_data_file_size_bytes,
               single_replica_restore=c.enable_single_replica_ckpt_restoring,
               continuous=c.enable_continuous_checkpointing)


class Manager(ocp.CheckpointManager):
  """Orbax's CheckpointManager that remembers the run's storage options for `save` and `restore_latest`."""

  def __init__(self, directory: str, storage: Options, **kwargs):
    self.storage = storage
    super().__init__(directory, **kwargs)


def manager(directory: str, *, period: int, max_to_keep: int | None, async_save: bool,
            options: Options = Options()) -> Manager:
  policy = ocp.checkpoint_managers.ContinuousCheckpointingPolicy() if options.continuous else None
  mngr_options = ocp.CheckpointManagerOptions(save_interval_steps=period, max_to_keep=max_to_keep,
                                              enable_async_checkpointing=async_save, create=True,
                                              save_decision_policy=policy)
  state = ocp.PyTreeCheckpointHandler(use_ocdbt=options.use_ocdbt, use_zarr3=options.use_zarr3,
                                      save_concurrent_gb=options.concurrent_gb,
                                      restore_concurrent_gb=options.concurrent_gb)
  handlers = {"state": state, "data": ocp.JsonCheckpointHandler(), "config": ocp.JsonCheckpointHandler()}
  return Manager(os.path.abspath(directory), storage=options, options=mngr_options, item_handlers=handlers)


def policy_save_due(mngr, step: int) -> bool:
  """A save between the checkpoint_period ones: enable_continuous_checkpointing (whenever the previous save has
  finished) or an emergency manager's local save (every local_checkpoint_period steps)."""
  from maxtext_like.training.emergency import EmergencyManager
  if mngr is None:
    return False
  return (isinstance(mngr, EmergencyManager) or getattr(mngr, "storage", Options()).continuous) and mngr.should_save(step)


def save(mngr, step: int, state, data_state: dict, config: dict, *, force: bool = False) -> bool:
  from maxtext_like.training.emergency import EmergencyManager
  if isinstance(mngr, EmergencyManager):  # the train state through orbax's emergency manager; no config item
    return mngr.save(step, state, data_state, force=force)
  o = getattr(mngr, "storage", Options())
  # chunk_byte_size and the OCDBT target file size bound the size of each data file (checkpoint_storage_target_*).
  save_args = jax.tree.map(lambda _: ocp.SaveArgs(chunk_byte_size=o.target_file_size if o.use_zarr3 else None), state)
  item = ocp.args.PyTreeSave(item=state, save_args=save_args,
                             ocdbt_target_data_file_size=o.target_file_size if o.use_ocdbt else None)
  return mngr.save(step, args=ocp.args.Composite(state=item, data=ocp.args.JsonSave(data_state),
                                                  config=ocp.args.JsonSave(config)), force=force)


def _restore_args(abstract_state, single_replica: bool):
  """Per-array restore arguments: into each array's sharding; with single_replica, read by the first replica
  along the mesh's first axis and broadcast to the others (orbax's SingleReplicaArrayHandler)."""
  if not single_replica:
    return ocp.checkpoint_utils.construct_restore_args(abstract_state)

  def one(a):
    mesh, spec = a.sharding.mesh, a.sharding.spec
    replica = mesh.devices[:1]  # replica 0 along the first mesh axis
    return ocp.type_handlers.SingleReplicaArrayRestoreArgs(
        sharding=a.sharding, single_replica_sharding=jax.sharding.NamedSharding(jax.sharding.Mesh(replica, mesh.axis_names), spec),
        global_shape=a.shape, dtype=a.dtype)
  return jax.tree.map(one, abstract_state)


@contextlib.contextmanager
def _array_handler(single_replica: bool):
  """Orbax picks the jax.Array handler from a global registry: swap in the single-replica one for this restore only."""
  if not single_replica:
    yield
    return
  ocp.type_handlers.register_type_handler(
      jax.Array, ocp.type_handlers.SingleReplicaArrayHandler(replica_axis_index=0, broadcast_memory_limit_bytes=1000 * 1024**2),
      override=True)
  try:
    yield
  finally:
    ocp.type_handlers.register_type_handler(jax.Array, ocp.type_handlers.ArrayHandler(), override=True)


def restore_latest(mngr, abstract_state) -> tuple[Any, dict, int] | None:
  """(state, data_state, step) of the latest complete checkpoint, or None when there is none."""
  from maxtext_like.training.emergency import EmergencyManager
  if isinstance(mngr, EmergencyManager):
    return mngr.restore_latest(abstract_state)
  step = mngr.latest_step()
  if step is None:
    return None
  where = f"{mngr.directory}/{step}"
  try:
    meta = mngr.item_metadata(step)
    state_meta = meta["state"] if isinstance(meta, dict) or hasattr(meta, "__getitem__") else meta.state
  except Exception as e:  # noqa: BLE001 - orbax raises many kinds for corrupt metadata
    raise CheckpointError(f"checkpoint {where} is unreadable or incomplete ({type(e).__name__}: {e})") from None
  if state_meta is None:
    raise CheckpointError(f"checkpoint {where} has no train state")
  check_fits(getattr(state_meta, "tree", state_meta), abstract_state, where)
  single = getattr(mngr, "storage", Options()).single_replica_restore
  try:
    with _array_handler(single):
      item = ocp.args.PyTreeRestore(item=abstract_state, restore_args=_restore_args(abstract_state, single))
      restored = mngr.restore(step, args=ocp.args.Composite(state=item, data=ocp.args.JsonRestore()))
  except Exception as e:  # noqa: BLE001
    raise CheckpointError(f"checkpoint {where} could not be restored ({type(e).__name__}: {str(e)[:300]})") from None
  return restored["state"], restored["data"], step
