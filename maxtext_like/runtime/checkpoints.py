"""Reading checkpoints: fit checks naming every tensor that does not fit, params-only restores, the saved config.

Shared by training (resume), inference and conversion. Errors are `CheckpointError` (bad input, exit code 2).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointError(ValueError):
  """A checkpoint that is missing, corrupt, partial, or does not fit the configured model."""


def _flat_shapes(tree) -> dict[str, tuple]:
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    name = "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)
    shape = getattr(leaf, "shape", None)
    if shape is not None:
      out[name] = tuple(shape)
  return out


def check_fits(saved_meta, abstract, where: str, prefix: str = "") -> None:
  """Raise CheckpointError naming every missing, unexpected or mis-shaped tensor."""
  saved, wanted = _flat_shapes(saved_meta), _flat_shapes(abstract)
  if prefix:
    saved = {k[len(prefix):]: v for k, v in saved.items() if k.startswith(prefix)}
    wanted = {k[len(prefix):]: v for k, v in wanted.items() if k.startswith(prefix)}
  missing = sorted(set(wanted) - set(saved))
  extra = sorted(set(saved) - set(wanted))
  shaped = sorted(f"{k} saved {saved[k]} but the model needs {wanted[k]}" for k in set(saved) & set(wanted) if saved[k] != wanted[k])
  if missing or extra or shaped:
    parts = []
    if shaped:
      parts.append("mis-shaped: " + "; ".join(shaped[:20]) + (" ..." if len(shaped) > 20 else ""))
    if missing:
      parts.append("missing: " + ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else ""))
    if extra:
      parts.append("unexpected: " + ", ".join(extra[:20]) + (" ..." if len(extra) > 20 else ""))
    raise CheckpointError(f"checkpoint {where} does not fit the configured model ({'; '.join(parts)}). "
                          "Check model_name and the model keys against the run that wrote it.")


def restore_from_path(path: str, abstract_state, *, params_only: bool) -> Any:
  """Restore the train state (or its params) from a checkpoint step directory (`.../checkpoints/N`, or its `state` item)."""
  path = os.path.abspath(path)
  item = os.path.join(path, "state") if os.path.isdir(os.path.join(path, "state")) else path
  if not os.path.isdir(item):
    raise CheckpointError(f"checkpoint path {path} does not exist")
  ckptr = ocp.StandardCheckpointer()
  try:
    meta = ckptr.metadata(item)
    meta = getattr(meta, "item_metadata", meta)
  except Exception as e:  # noqa: BLE001
    raise CheckpointError(f"checkpoint {path} is unreadable or incomplete ({type(e).__name__}: {str(e)[:200]})") from None
  target = {"params": abstract_state["params"]} if params_only else abstract_state
  saved = {"params": meta["params"]} if params_only and "params" in meta else meta
  check_fits(saved, target, path)
  try:
    if params_only:
      return _restore_params(item, target)["params"]
    return ckptr.restore(item, abstract_state)
  except CheckpointError:
    raise
  except Exception as e:  # noqa: BLE001
    raise CheckpointError(f"checkpoint {path} could not be restored ({type(e).__name__}: {str(e)[:300]})") from None


def _restore_params(item: str, target) -> Any:
  ckptr = ocp.PyTreeCheckpointer()
  restore_args = jax.tree.map(lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding, global_shape=a.shape, dtype=a.dtype), target)
  return ckptr.restore(item, args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True))


def write_params(path: str, params, record: dict, *, what: str) -> str:
  """A parameters-only step directory: `path/state` (orbax, {"params": params}) and `path/config` (the resolved
  config record), readable as `load_parameters_path`. An existing non-empty `path` is never overwritten."""
  path = os.path.abspath(path)
  if os.path.exists(path) and os.listdir(path):
    raise CheckpointError(f"{what}={path} already exists and is not empty; choose a new directory (nothing was "
                          "overwritten)")
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(os.path.join(path, "state"), {"params": params})
  ckptr.wait_until_finished()
  os.makedirs(os.path.join(path, "config"), exist_ok=True)
  with open(os.path.join(path, "config", "metadata"), "w") as f:
    json.dump(record, f, indent=1)
  return path


def read_saved_config(step_dir: str) -> dict | None:
  p = os.path.join(step_dir, "config", "metadata")
  for cand in (p, os.path.join(step_dir, "config")):
    if os.path.isfile(cand):
      with open(cand) as f:
        return json.load(f)
  return None
