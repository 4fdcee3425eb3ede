"""Post-training quantization (PTQ) for serving and evaluation, through qwix's `PtqProvider`.

`quantize_for_serving(model, q)` returns a copy of a float model whose decoder dense kernels are stored quantized
(qwix `QArray`: integer or fp8 values plus float scales, wrapped in qwix's `WithAux` with how they were quantized)
and whose matmuls qwix intercepts: the quantized kernel goes into qwix's quantized `dot_general` as it is, and
activations are quantized on the fly when the scheme quantizes them (int8, int4, fp8; not int8w/int4w).

Which matmuls: the same as quantized training (models/quantization.py): every `DenseGeneral` of the decoder layers
except the MoE router. qwix's own PTQ converts a weight the first time the model runs, by replacing the module's
attribute; our decoder runs its layers as pure functions of split state (for remat and scan), so that replacement
would land on a temporary copy. We therefore convert the kernels here, once, using qwix's rule matching order
(first rule whose module path matches wins) and qwix's `get_how_to_quantize` for the layout of the scales.

`abstract_quantized(...)` builds the same structure without any float weights (nnx.eval_shape), so a quantized
checkpoint restores straight into it (`checkpoint_is_quantized=true`).
"""

from __future__ import annotations

import dataclasses
import math
import re

import jax
import jax.numpy as jnp
import qwix
from flax import nnx
from qwix._src.core import dot_general as qwix_dot_general  # get_how_to_quantize: qwix's own scale layout
from qwix._src.core import qarray as qwix_qarray
from qwix._src.providers.ptq import WithAux

from maxtext_like.models.linears import DenseGeneral
from maxtext_like.models.quantization import LAYERS_PATH, ROUTER_PATH, QuantSpec, intmp_rules

# quantization -> (weight qtype, activation qtype or None for weight-only)
SERVING_QTYPES = {
    "int8": (jnp.int8, jnp.int8),
    "int8w": (jnp.int8, None),
    "int4": (jnp.int4, jnp.int8),  # int4 x int4 matmuls: XLA:CPU/GPU refuse them; int8 activations do not
    "int4w": (jnp.int4, None),
    "fp8": (jnp.float8_e4m3fn, jnp.float8_e4m3fn),
    "fp8_e4m3": (jnp.float8_e4m3fn, jnp.float8_e4m3fn),
    "fp8_e5m2": (jnp.float8_e5m2, jnp.float8_e5m2),
    "fp8_full": (jnp.float8_e4m3fn, jnp.float8_e4m3fn),
}


def ptq_rules(q: QuantSpec) -> list[qwix.QuantizationRule]:
  """Router first (float), then the scheme's rule (or the intmp table) over the decoder layers' dot_generals."""
  router = qwix.QuantizationRule(module_path=ROUTER_PATH)
  if q.quantization == "intmp":
    return [router] + [qwix.QuantizationRule(**kw) for kw in intmp_rules(q.quant_cfg_path)]
  if q.quantization not in SERVING_QTYPES:
    raise ValueError(f"quantization={q.quantization!r} has no serving (PTQ) rule; these do: {sorted(SERVING_QTYPES)}")
  w, a = SERVING_QTYPES[q.quantization]
  tile = 1 / q.local_shard_count if q.local_shard_count > 0 else None  # sub-channel: that many tiles per contraction
  return [router, qwix.QuantizationRule(module_path=LAYERS_PATH, op_names=("dot_general",), weight_qtype=w,
                                        act_qtype=a, weight_calibration_method=q.weight_calibration,
                                        act_calibration_method=q.act_calibration, tile_size=tile)]


def _rule_for(path: str, rules) -> qwix.QuantizationRule | None:
  for r in rules:  # qwix's order: the first rule whose module path matches wins
    if re.fullmatch(r.module_path, path) and (not r.op_names or "dot_general" in r.op_names):
      return r
  return None


def quantize_for_serving(model: nnx.Module, q: QuantSpec, *, replicate_scale: bool = False) -> nnx.Module:
  """A copy of `model` with its decoder kernels quantized (see the module docstring); `model` itself if float.

  `replicate_scale` (replicate_quant_scale) places every scale unsharded on a mesh; otherwise a scale is split
  like its kernel along the axes it keeps (its contracted axes have size 1 and stay whole)."""
  if not q.enabled:
    return model
  rules = ptq_rules(q)
  qmodel = qwix.quantize_model(model, qwix.PtqProvider(rules), skip_nnx_init=True)
  for path, module in nnx.iter_modules(qmodel):
    if not isinstance(module, DenseGeneral):
      continue
    rule = _rule_for("/".join(map(str, path)), rules)
    if rule is None or rule.weight_qtype is None:
      continue
    kernel = module.kernel
    n_in = len(module.in_features)
    value = kernel.get_value()
    how = qwix_dot_general.get_how_to_quantize(
        dimension_numbers=module.dimension_numbers, ndims=(1 + n_in, value.ndim), for_lhs=False,
        tile_size=rule.tile_size, qtype=rule.weight_qtype, calibration_method=rule.weight_calibration_method)
    quantized = WithAux(qwix_qarray.quantize(value, how), how)
    meta = dict(kernel.get_metadata())
    meta["scale_sharding"] = "replicated" if replicate_scale else "kept_axes"
    module.kernel = nnx.Param(quantized, **meta)
  return qmodel


def abstract_quantized(build, q: QuantSpec, **kwargs) -> nnx.Module:
  """The quantized model of `build()` as shapes only: no float or quantized arrays are allocated."""
  return nnx.eval_shape(lambda: quantize_for_serving(build(), q, **kwargs))


def quantized_kernels(model: nnx.Module) -> dict[str, WithAux]:
  """Module path -> quantized kernel, for every DenseGeneral PTQ converted."""
  return {p: m.kernel.get_value() for p, m in dense_layers(model).items() if is_quantized(m.kernel.get_value())}


def dense_layers(model: nnx.Module) -> dict[str, DenseGeneral]:
  """Module path -> every DenseGeneral of the decoder layers (float or quantized), routers included."""
  out = {}
  for path, module in nnx.iter_modules(model):
    name = "/".join(map(str, path))
    if isinstance(module, DenseGeneral) and re.fullmatch(LAYERS_PATH, name):
      out[name] = module
  return out


def matmul_weight_bytes(model: nnx.Module) -> int:
  """Bytes of the decoder layers' dense kernels as stored: float arrays, or quantized values plus scales."""
  return tree_bytes([m.kernel.get_value() for m in dense_layers(model).values()])


def quantized_shardings(value: WithAux, spec, mesh, scale_sharding: str | None) -> WithAux:
  """`value` (a quantized kernel) with a NamedSharding per array: the values split as the float kernel was; the
  scales likewise along the axes they keep (an axis of size 1, or one the mesh does not divide, stays whole), or
  replicated with replicate_quant_scale."""
  from jax.sharding import NamedSharding, PartitionSpec

  def fit(a, replicate: bool):
    if a is None:
      return None
    if replicate:
      return NamedSharding(mesh, PartitionSpec())
    entries = list(spec) + [None] * (a.ndim - len(spec))
    size = lambda e: 1 if e is None else math.prod(mesh.shape[n] for n in ((e,) if isinstance(e, str) else e))
    return NamedSharding(mesh, PartitionSpec(*[e if a.shape[i] % size(e) == 0 and a.shape[i] > 1 else None
                                               for i, e in enumerate(entries)]))

  qa = value.array
  rep = scale_sharding == "replicated"
  return value.replace(array=dataclasses.replace(qa, qvalue=fit(qa.qvalue, False), scale=fit(qa.scale, rep),
                                                 zero_point=fit(qa.zero_point, rep)))


def is_quantized(value) -> bool:
  return isinstance(value, WithAux)


def array_bytes(a) -> int:
  """Bytes an array occupies packed (int4 counts half a byte), as on disk and in accelerator memory."""
  bits = 4 if jnp.dtype(a.dtype) in (jnp.dtype(jnp.int4), jnp.dtype(jnp.uint4)) else jnp.dtype(a.dtype).itemsize * 8
  return (math.prod(a.shape) * bits + 7) // 8


def tree_bytes(tree) -> int:
  return sum(array_bytes(a) for a in jax.tree.leaves(tree) if hasattr(a, "dtype"))
