"""Mesh, abstract train state and its shardings; materialise the state directly into its shardings."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from maxtext_like.config.resolve import Plan
from maxtext_like.models import ModelSpec, build_model
from maxtext_like.models.quantization import QuantSpec, quantize_for_training
from maxtext_like.models.sharding import logical_to_mesh_sharding

SKIP_WINDOW = "loss_window"
REFERENCE = "reference_params"  # DPO's frozen reference (training/dpo.py)


def make_mesh(plan: Plan, devices: list | None = None) -> Mesh:
  devices = list(jax.devices() if devices is None else devices)
  shape = plan.mesh_shape
  if int(np.prod(shape)) != len(devices):
    raise ValueError(f"mesh {dict(zip(plan.mesh_axes, shape))} needs {int(np.prod(shape))} devices, have {len(devices)}")
  if plan.num_slices > 1:
    # Slices are the outer (DCN) level: each mesh axis is dcn x ici, with slices contiguous in the device list.
    ici = np.array(devices, dtype=object).reshape(plan.num_slices, *plan.ici_parallelism)
    arr = np.empty(shape, dtype=object)
    dcn_idx = np.array(np.unravel_index(np.arange(plan.num_slices), plan.dcn_parallelism)).T
    for s, d in enumerate(dcn_idx):
      sl = tuple(slice(int(di) * ic, (int(di) + 1) * ic) for di, ic in zip(d, plan.ici_parallelism))
      arr[sl] = ici[s]
    return Mesh(arr, plan.mesh_axes)
  return Mesh(np.array(devices, dtype=object).reshape(shape), plan.mesh_axes)


@dataclasses.dataclass
class StateLayout:
  """Everything needed to build, shard, restore and step the train state."""

  graphdef: Any
  abstract: dict  # ShapeDtypeStructs with .sharding
  shardings: dict
  init_fn: Any  # jitted: key -> state, materialised into `shardings`
  compute_shardings: dict | None = None  # device-memory shardings of host-offloaded parts, for the step to load them


def _split(model):
  return nnx.split(model, nnx.Param, ...)


def build_state_layout(spec: ModelSpec, optimizer: optax.GradientTransformation, mesh: Mesh, rules, *,
                       loss_window: int, offload_params: bool = False, offload_opt_state: bool = False,
                       quant: QuantSpec | None = None, reference: bool = False) -> StateLayout:
  """Abstract init (no memory), shardings from logical axis names, and a jitted initialiser that writes shards.

  With `quant` the graphdef is the qwix-quantized model's (models/quantization.py): the step and eval then run
  quantized matmuls over the same state, which QAT leaves unchanged. With `reference` (DPO) the state also holds
  "reference_params", a frozen copy of the parameters with their shardings, outside the optimizer.
  """
  abs_model = quantize_for_training(nnx.eval_shape(lambda: build_model(spec, nnx.Rngs(0))), quant or QuantSpec())
  graphdef, abs_params, abs_rest = _split(abs_model)
  param_shardings = logical_to_mesh_sharding(abs_params, mesh, rules)
  replicated = NamedSharding(mesh, PartitionSpec())

  def init(key):
    model = build_model(spec, nnx.Rngs(params=key, dropout=jax.random.fold_in(key, 1)))
    _, params, rest = _split(model)
    params = jax.lax.with_sharding_constraint(params, param_shardings)
    state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": optimizer.init(params), "rest": rest,
             SKIP_WINDOW: jnp.zeros((loss_window,), jnp.float32)}
    if reference:
      state[REFERENCE] = jax.tree.map(jnp.copy, params)
    return state

  check_divisible(abs_params, param_shardings)
  key_abs = jax.ShapeDtypeStruct((2,), jnp.uint32)
  abstract_tree = jax.eval_shape(init, key_abs)
  shardings = {"step": replicated, "params": param_shardings,
               "opt_state": mirror_param_shardings(abstract_tree["opt_state"], abstract_tree["params"], param_shardings, replicated),
               "rest": jax.tree.map(lambda _: replicated, abstract_tree["rest"]), SKIP_WINDOW: replicated}
  if reference:
    shardings[REFERENCE] = param_shardings
  shardings = jax.tree.map(lambda a, s: s, abstract_tree, shardings)
  compute_shardings = None
  if offload_params or offload_opt_state:
    compute_shardings = {"params": shardings["params"], "opt_state": shardings["opt_state"]}
    to_host = lambda tree: jax.tree.map(lambda s: s.with_memory_kind(host_memory_kind(mesh)), tree)
    shardings = dict(shardings)
    if offload_params:
      shardings["params"] = to_host(shardings["params"])
    if offload_opt_state:
      shardings["opt_state"] = to_host(shardings["opt_state"])
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_tree, shardings)
  init_fn = jax.jit(init, out_shardings=shardings)
  return StateLayout(graphdef=graphdef, abstract=abstract, shardings=shardings, init_fn=init_fn,
                     compute_shardings=compute_shardings)


def check_divisible(abs_params, param_shardings) -> None:
  """Every parameter dimension must split evenly over the mesh axes its logical name maps to (else ConfigError)."""
  from maxtext_like.config import ConfigError, Problem
  bad = []
  for (path, leaf), sh in zip(jax.tree_util.tree_flatten_with_path(abs_params)[0], jax.tree.leaves(param_shardings)):
    for dim, axes in zip(leaf.shape, sh.spec):
      names = (axes,) if isinstance(axes, str) else tuple(axes or ())
      ways = int(np.prod([sh.mesh.shape[a] for a in names])) if names else 1
      if dim % ways:
        bad.append(f"{'.'.join(_path_key(path))} {tuple(leaf.shape)}: a dimension of {dim} cannot split {ways} ways over {names}")
        break
  if bad:
    raise ConfigError([Problem("ici/dcn parallelism", f"does not divide the model's parameters ({len(bad)}): " + "; ".join(bad[:4])
                               + ("; ..." if len(bad) > 4 else ""),
                               allowed="sizes that divide the dimensions (heads, mlp, embed, vocab) mapped to each mesh axis")])


def host_memory_kind(mesh: Mesh) -> str:
  """'pinned_host' where the backend has it; otherwise a clear error (offload is impossible there)."""
  from maxtext_like.config import ConfigError, Problem
  kinds = {m.kind for m in mesh.devices.flat[0].addressable_memories()}
  if "pinned_host" not in kinds:
    raise ConfigError([Problem("optimizer_memory_host_offload", f"host offload is not supported on this backend "
                               f"({jax.default_backend()} has memories {sorted(kinds)}, no 'pinned_host')")])
  return "pinned_host"


def sharding_report(abs_params, param_shardings) -> tuple[list[str], float]:
  """(one line per parameter: path, shape, and per dimension the mesh axes of size > 1 it is split over, '-' for
  none; the fraction of parameter elements stored whole on every device). A parameter is replicated when none of
  its dimensions is split."""
  lines, replicated, total = [], 0, 0
  for (path, leaf), sh in zip(jax.tree_util.tree_flatten_with_path(abs_params)[0], jax.tree.leaves(param_shardings)):
    dims = []
    for d in range(len(leaf.shape)):
      axes = sh.spec[d] if d < len(sh.spec) else None
      dims.append([a for a in ((axes,) if isinstance(axes, str) else tuple(axes or ())) if sh.mesh.shape[a] > 1])
    split = int(np.prod([sh.mesh.shape[a] for names in dims for a in names]))
    size = int(np.prod(leaf.shape))
    total += size
    replicated += size if split == 1 else 0
    name = ".".join(k for k in _path_key(path) if k != "value")
    layout = ", ".join("+".join(names) or "-" for names in dims)
    lines.append(f"{name} {tuple(leaf.shape)} [{layout}]{'' if split > 1 else '  replicated'}")
  return lines, replicated / max(total, 1)


def _path_key(path) -> tuple:
  return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def mirror_param_shardings(opt_state, params, param_shardings, replicated):
  """Optimizer-state leaves that mirror a parameter (Adam moments, ...) get that parameter's sharding.

  A leaf mirrors a parameter when its key path ends with the parameter's path and the shapes agree; anything else
  (step counts, scalars) is replicated.
  """
  by_path = {}
  for (path, leaf), sh in zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(param_shardings)):
    by_path[_path_key(path)] = (leaf.shape, sh)

  def pick(path, leaf):
    key = _path_key(path)
    for start in range(len(key)):
      hit = by_path.get(key[start:])
      if hit is not None and hit[0] == leaf.shape:
        return hit[1]
    return replicated

  return jax.tree_util.tree_map_with_path(pick, opt_state)


def batch_sharding(mesh: Mesh, data_sharding: list[list[str]]) -> NamedSharding:
  axes = tuple(a for a in data_sharding[0] if a in mesh.axis_names and mesh.shape[a] > 1)
  return NamedSharding(mesh, PartitionSpec(axes or None))
