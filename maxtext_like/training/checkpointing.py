"""Orbax checkpoints: train state, data-iterator state and the resolved config saved together.

A save is written to a temporary directory and renamed when complete, so a partial save never becomes `latest`.
Restores compare shapes first and name every tensor that does not fit (CheckpointError, exit code 2).
"""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp

from maxtext_like.runtime.checkpoints import CheckpointError, check_fits


def manager(directory: str, *, period: int, max_to_keep: int | None, async_save: bool) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(save_interval_steps=period, max_to_keep=max_to_keep,
                                         enable_async_checkpointing=async_save, create=True)
  handlers = {"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler(), "config": ocp.JsonCheckpointHandler()}
  return ocp.CheckpointManager(os.path.abspath(directory), options=options, item_handlers=handlers)


def save(mngr: ocp.CheckpointManager, step: int, state, data_state: dict, config: dict, *, force: bool = False) -> bool:
  return mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
                                                  config=ocp.args.JsonSave(config)), force=force)


def restore_latest(mngr: ocp.CheckpointManager, abstract_state) -> tuple[Any, dict, int] | None:
  """(state, data_state, step) of the latest complete checkpoint, or None when there is none."""
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
  check_fits(state_meta, abstract_state, where)
  try:
    restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
  except Exception as e:  # noqa: BLE001
    raise CheckpointError(f"checkpoint {where} could not be restored ({type(e).__name__}: {str(e)[:300]})") from None
  return restored["state"], restored["data"], step
