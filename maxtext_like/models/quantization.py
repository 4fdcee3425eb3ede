"""The config's `quantization` keys -> qwix rules, applied to a built model (training, eval and serving share it).

Quantized training (QAT) goes through `qwix.QtProvider`, as MaxText's `use_qwix_quantization=true` does; we have
no AQT path, so `use_qwix_quantization=false` takes the same route. The rules match module paths
(`decoder/layers/0/mlp/wi_0`, `decoder/layers/self_attention/query` when scanned) and quantize the
`jax.lax.dot_general` calls made there, which are the decoder layers' dense projections (`DenseGeneral`):

- the MoE router projection (`.../gate`) stays in float: a rule without qtypes comes first and wins;
- attention's score / value einsums, MoE expert einsums and the unembedding are not dot_generals of a layer
  and stay in float, as in MaxText's qwix rules (op_names=('dot_general',), module_path 'decoder/.*layers.*').

QAT scales are dynamic (computed from each operand at each call), so a quantized model holds exactly the float
model's state: parameter tree, shardings and checkpoints do not change; only the model's class does (qwix swaps
it for one whose `__call__` intercepts the matmuls), and that travels in the graphdef.
"""

from __future__ import annotations

import dataclasses
import json
import re

import jax.numpy as jnp
import qwix
from flax import nnx

from maxtext_like.models import choices

LAYERS_PATH = r"decoder/.*layers.*"  # every decoder stack (layers, dense_layers, moe_layers, ...)
ROUTER_PATH = r"decoder/.*layers.*/gate"  # MoE router (models/moe.py Gate): left in float

# quantization -> (weight, activation, gradient) qtypes; the values choices.QUANTIZATION_QWIX names.
_QTYPES = {
    "int8": (jnp.int8, jnp.int8, jnp.int8),
    "int4": (jnp.int4, jnp.int8, jnp.int8),  # int4 x int4 matmuls: XLA:CPU/GPU refuse them; int8 activations do not
    "fp8": (jnp.float8_e4m3fn, jnp.float8_e4m3fn, jnp.float8_e4m3fn),
    "fp8_full": (jnp.float8_e4m3fn, jnp.float8_e4m3fn, jnp.float8_e5m2),  # e5m2 gradients: more range, less precision
    "fp8_e4m3": (jnp.float8_e4m3fn, jnp.float8_e4m3fn, jnp.float8_e4m3fn),  # = fp8
    "fp8_e5m2": (jnp.float8_e5m2, jnp.float8_e5m2, jnp.float8_e5m2),  # more range, less precision
    "int8w": (jnp.int8, None, None),  # weights only: activations and gradients stay in float
    "int4w": (jnp.int4, None, None),
}
assert set(_QTYPES) | {"intmp"} == set(choices.QUANTIZATION_QWIX), "choices.QUANTIZATION_QWIX and _QTYPES disagree"


_BITS = {4: jnp.int4, 8: jnp.int8}


class QuantConfigError(ValueError):
  """A quant_cfg_path file that cannot be used; the message names the file and the entry."""


def intmp_rules(path: str) -> list[dict]:
  """MaxText's mixed-precision JSON: {module-path regex: {w_bits, a_bits, w_scale, a_scale, tile_size}}, with
  '__default__' for layers no other key matches. Keys are regexes over our module paths (searched, as MaxText does).
  Returns qwix rule arguments (module_path, op_names, qtypes, calibrations, tile_size), most specific first."""
  try:
    with open(path) as f:
      table = json.load(f)
  except (OSError, ValueError) as e:
    raise QuantConfigError(f"quant_cfg_path={path!r} cannot be read as JSON: {e}") from None
  if not isinstance(table, dict):
    raise QuantConfigError(f"quant_cfg_path={path!r} must hold a JSON object of module-path regex -> settings")
  allowed = {"w_bits", "a_bits", "w_scale", "a_scale", "tile_size"}

  def rule(pattern: str, entry) -> dict:
    if not isinstance(entry, dict) or set(entry) - allowed:
      raise QuantConfigError(f"quant_cfg_path={path!r}: entry {pattern!r} = {entry!r}; each entry is an object with "
                             f"some of {sorted(allowed)}")
    bits = {k: entry.get(k) for k in ("w_bits", "a_bits")}
    for k, b in bits.items():
      if b is not None and b not in _BITS:
        raise QuantConfigError(f"quant_cfg_path={path!r}: {pattern!r} has {k}={b!r}; allowed: 4, 8 or null")
    tile = entry.get("tile_size", -1)
    scale = lambda s: "absmax" if s in (None, 1, 1.0) else f"absmax,{float(s)}"
    return dict(
        module_path=LAYERS_PATH if pattern == "__default__" else f".*(?:{pattern}).*", op_names=("dot_general",),
        weight_qtype=_BITS.get(bits["w_bits"]), act_qtype=_BITS.get(bits["a_bits"]),
        weight_calibration_method=scale(entry.get("w_scale")), act_calibration_method=scale(entry.get("a_scale")),
        tile_size=tile if tile and tile > 0 else None)

  for pattern in table:
    try:
      re.compile(pattern)
    except re.error as e:
      raise QuantConfigError(f"quant_cfg_path={path!r}: key {pattern!r} is not a regular expression ({e})") from None
  specific = [rule(p, e) for p, e in table.items() if p != "__default__"]
  default = [rule("__default__", table["__default__"])] if "__default__" in table else []
  return specific + default


@dataclasses.dataclass(frozen=True)
class QuantSpec:
  """What the model's matmuls are quantized to; `quantization=''` means float."""

  quantization: str = ""
  weight_calibration: str = "absmax"  # qwix methods: absmax[,s], minmax[,s], rms,s, fixed,lo,hi
  act_calibration: str = "absmax"
  bwd_calibration: str = "absmax"
  local_shard_count: int = -1  # > 0: weight (and weight-gradient) scales per that many tiles of the contraction
  quant_cfg_path: str = ""  # intmp: the JSON table of per-module settings (intmp_rules)

  @property
  def enabled(self) -> bool:
    return bool(self.quantization)


def quant_spec(section) -> QuantSpec:
  """From the config's quantization section (cfg.quantization); refused values never get here (config/rules.py)."""
  return QuantSpec(quantization=section.quantization or "",
                   weight_calibration=section.weight_quantization_calibration_method,
                   act_calibration=section.act_quantization_calibration_method,
                   bwd_calibration=section.bwd_quantization_calibration_method,
                   local_shard_count=section.quantization_local_shard_count,
                   quant_cfg_path=section.quant_cfg_path)


def qt_rules(q: QuantSpec) -> list[qwix.QtRule]:
  """Router first (float), then every dot_general of the decoder layers (or the intmp table's rules)."""
  router = qwix.QtRule(module_path=ROUTER_PATH)
  if q.quantization == "intmp":
    return [router] + [qwix.QtRule(**kw) for kw in intmp_rules(q.quant_cfg_path)]
  if q.quantization not in _QTYPES:
    raise ValueError(f"quantization={q.quantization!r} has no qwix training rule; these do: {sorted(_QTYPES)}")
  w, a, g = _QTYPES[q.quantization]
  tile = 1 / q.local_shard_count if q.local_shard_count > 0 else None
  return [
      router,
      qwix.QtRule(module_path=LAYERS_PATH, op_names=("dot_general",), weight_qtype=w, act_qtype=a, bwd_qtype=g,
                  weight_calibration_method=q.weight_calibration, act_calibration_method=q.act_calibration,
                  bwd_calibration_method=q.bwd_calibration, bwd_weight_grad_tile_size=tile if g else None),
  ]


def quantize_for_training(model: nnx.Module, q: QuantSpec) -> nnx.Module:
  """A copy of `model` whose decoder matmuls run quantized (forward and backward); `model` itself if float.

  Works on an abstract model (nnx.eval_shape) too: QAT with dynamic scales creates no variables, so qwix need not
  run the model once (skip_nnx_init).
  """
  if not q.enabled:
    return model
  return qwix.quantize_model(model, qwix.QtProvider(qt_rules(q)), skip_nnx_init=True)
