"""Logical axis names -> mesh shardings, for parameters and activations.

Parameters carry logical names in their `out_sharding` metadata (see
`linears.param`). Activations call `constrain(x, ACT_BTD)`; that is a no-op
unless `activation_sharding(mesh, rules)` is active, so the model runs
unchanged on one device.

Rules are MaxText's table: a sequence of `(logical_name, mesh_axes)` where
mesh_axes is a mesh axis name, a list of them, or None. Earlier rules win and
a mesh axis is used at most once per array (flax's `logical_to_mesh_axes`).
Mesh axes missing from the mesh are dropped, so one table serves many meshes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
from collections.abc import Sequence
from typing import Any

import jax
from flax import nnx
from flax.core import spmd as core_spmd
from flax.linen import spmd as linen_spmd
from jax.sharding import Mesh, NamedSharding, PartitionSpec

LogicalRules = Sequence[tuple[str, Any]]

# Logical names of activations, by shape suffix.
ACT_BT = ("activation_batch", "activation_length")
ACT_BTD = ("activation_batch", "activation_length", "activation_embed")
ACT_BTF = ("activation_batch", "activation_length", "activation_mlp")
ACT_BTV = ("activation_batch", "activation_length", "activation_vocab")
ACT_BTNH = ("activation_batch", "activation_length", "activation_heads", "activation_kv")
ACT_BSKH = ("activation_batch", "activation_length", "activation_kv_heads", "activation_kv")
# Keys/values as attention reads them: whole sequences (context parallelism's all-gather strategy).
ACT_BSKH_ATTEND = ("activation_batch", "activation_kv_length", "activation_kv_heads", "activation_kv")


def normalize_rules(rules: LogicalRules, mesh: Mesh) -> tuple[tuple[str, Any], ...]:
  """Lists become tuples; mesh axes absent from `mesh` are dropped."""
  out = []
  for logical, mesh_axes in rules:
    if mesh_axes is None:
      out.append((logical, None))
      continue
    axes = (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes)
    axes = tuple(a for a in axes if a in mesh.axis_names)
    out.append((logical, None if not axes else axes[0] if len(axes) == 1 else axes))
  return tuple(out)


def logical_to_pspec(logical_axes: Sequence[str | None], mesh: Mesh, rules: LogicalRules) -> PartitionSpec:
  """PartitionSpec for an array whose dimensions have these logical names."""
  return linen_spmd.logical_to_mesh_axes(tuple(logical_axes), normalize_rules(rules, mesh))


def logical_to_mesh_sharding(abstract_state: Any, mesh: Mesh, rules: LogicalRules) -> Any:
  """NamedShardings for an nnx State (abstract or concrete).

  Each `nnx.Variable` is replaced by a copy holding a `NamedSharding`, the
  convention of `nnx.get_named_sharding`, so the result can be passed as
  `out_shardings` for a jitted function returning that state. Variables
  without logical names are replicated.
  """

  def to_sharding(x):
    if isinstance(x, nnx.Variable):
      names = x.get_metadata().get("out_sharding")
      ndim = len(x.get_value().shape)
      spec = logical_to_pspec(names, mesh, rules) if names else PartitionSpec()
      if len(spec) > ndim:
        raise ValueError(f"logical axes {names} longer than shape {x.get_value().shape}")
      if not isinstance(x.get_value(), jax.Array | jax.ShapeDtypeStruct):  # a quantized kernel: values and scales
        from maxtext_like.models.ptq import quantized_shardings
        return x.replace(quantized_shardings(x.get_value(), spec, mesh, x.get_metadata().get("scale_sharding")))
      return x.replace(NamedSharding(mesh, spec))
    if hasattr(x, "shape"):
      return NamedSharding(mesh, PartitionSpec())
    return x

  return jax.tree.map(to_sharding, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))


@dataclasses.dataclass
class _Active(threading.local):
  mesh: Mesh | None = None
  rules: tuple[tuple[str, Any], ...] = ()


_ACTIVE = _Active()


@contextlib.contextmanager
def activation_sharding(mesh: Mesh, rules: LogicalRules):
  """Within this context `constrain` adds sharding constraints on `mesh`.

  Also sets flax's global logical axis rules, so `nnx.get_partition_spec`
  resolves logical names the same way.
  """
  prev = (_ACTIVE.mesh, _ACTIVE.rules)
  normalized = normalize_rules(rules, mesh)
  _ACTIVE.mesh, _ACTIVE.rules = mesh, normalized
  try:
    with core_spmd.logical_axis_rules(normalized):
      yield
  finally:
    _ACTIVE.mesh, _ACTIVE.rules = prev


def under_activation_sharding(fn, mesh: Mesh, rules: LogicalRules):
  """`fn` that enters `activation_sharding(mesh, rules)` itself when traced: a jitted step built from it keeps its
  activation constraints whoever calls it (no context for the caller to forget)."""

  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    with activation_sharding(mesh, rules):
      return fn(*args, **kwargs)

  return wrapped


def active_pspec(logical_axes: Sequence[str | None]) -> tuple[Mesh, PartitionSpec] | None:
  """(mesh, PartitionSpec) of these logical names under the active `activation_sharding`, else None."""
  if _ACTIVE.mesh is None or not _ACTIVE.rules:
    return None
  return _ACTIVE.mesh, linen_spmd.logical_to_mesh_axes(tuple(logical_axes), _ACTIVE.rules)


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
  """`with_sharding_constraint` through logical names; no-op without rules."""
  if _ACTIVE.mesh is None or not _ACTIVE.rules:
    return x
  spec = linen_spmd.logical_to_mesh_axes(tuple(logical_axes), _ACTIVE.rules)
  return jax.lax.with_sharding_constraint(x, NamedSharding(_ACTIVE.mesh, spec))
