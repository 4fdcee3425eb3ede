"""Our parameter layout: dotted unscanned paths <-> (scanned) nnx state, from shapes only."""

from __future__ import annotations

import re

import jax
import numpy as np
from flax import nnx

from maxtext_like.models import ModelSpec, build_model

LAYER = re.compile(r"decoder\.(\w*layers)\.(\d+)\.(.+)")  # any stack: layers, dense_layers, moe_layers (decoder.layer_stacks)


def abstract_params(spec: ModelSpec) -> nnx.State:
  model = nnx.eval_shape(lambda: build_model(spec, nnx.Rngs(0)))
  return nnx.state(model, nnx.Param)


def flat_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
  """Dotted unscanned path -> shape, for every parameter of the model."""
  state = abstract_params(spec.replace(scan_layers=False))
  return {".".join(str(k) for k in path): tuple(v.shape) for path, v in nnx.to_flat_state(state)}


def _cycles(spec: ModelSpec) -> dict[str, int]:
  from maxtext_like.models.decoder import layer_stacks
  return {st.name: st.cycle for st in layer_stacks(spec)}


def stacked_key(spec: ModelSpec, path: str) -> tuple[str, int | None]:
  """(key in the checkpoint's flat state, index along the scan axis or None) for a dotted unscanned path.

  A stack of period c (`LayerStack.cycle`) is scanned in units of c layers: layer i is sublayer i % c of unit i // c.
  """
  m = LAYER.fullmatch(path)
  if spec.scan_layers and m:
    name, i, rest = m.group(1), int(m.group(2)), m.group(3)
    c = _cycles(spec).get(name, 1)
    if c > 1:
      return f"decoder.{name}.sublayers.{i % c}.{rest}", i // c
    return f"decoder.{name}.{rest}", i
  return path, None


def stack_size(spec: ModelSpec, key: str) -> int:
  """Length of the scan axis of `key` (a stacked_key result, e.g. 'decoder.moe_layers.mlp.wo'): layers, or units."""
  from maxtext_like.models.decoder import layer_stacks
  return {f"decoder.{st.name}": st.num_layers // st.cycle for st in layer_stacks(spec)}[".".join(key.split(".")[:2])]


_SLICE = re.compile(r"(.+)\[(\d+)\]")


def split_slice(path: str) -> tuple[str, int | None]:
  """'decoder.layers.0.mlp.wi_0[3]' -> ('decoder.layers.0.mlp.wi_0', 3): a mapping's address of index 3 along axis
  0 of that parameter (one HF tensor per expert of a stacked [E, ...] kernel); plain paths -> (path, None)."""
  m = _SLICE.fullmatch(path)
  return (m.group(1), int(m.group(2))) if m else (path, None)


def fill_state(spec: ModelSpec, arrays: dict[str, np.ndarray]) -> nnx.State:
  """The model's param state (scanned or not, as spec) with leaves taken from `arrays` by dotted path."""
  state = abstract_params(spec)
  flat = []
  for path, var in nnx.to_flat_state(state):
    flat.append((path, var.replace(arrays[".".join(str(k) for k in path)])))
  return nnx.from_flat_state(flat)


def iter_unscanned(spec: ModelSpec, state: nnx.State, *, to_host: bool = True):
  """(dotted unscanned path, array) for every parameter of a restored state, layer by layer: numpy arrays, or
  with `to_host=False` device arrays (sliced where they are)."""
  for path, var in nnx.to_flat_state(state):
    name = ".".join(str(k) for k in path)
    value = var[...] if hasattr(var, "__getitem__") else var
    value = np.asarray(jax.device_get(value)) if to_host else value
    stack = re.fullmatch(r"decoder\.(\w*layers)\.(?:sublayers\.(\d+)\.)?(.+)", name)
    if spec.scan_layers and stack:
      c = _cycles(spec).get(stack.group(1), 1)
      j = int(stack.group(2) or 0)
      for u in range(value.shape[spec.param_scan_axis]):
        take = np.take if to_host else jax.numpy.take
        yield f"decoder.{stack.group(1)}.{u * c + j}.{stack.group(3)}", take(value, u, axis=spec.param_scan_axis)
    else:
      yield name, value
