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


def stacked_key(spec: ModelSpec, path: str) -> tuple[str, int | None]:
  """(key in the checkpoint's flat state, layer index or None) for a dotted unscanned path."""
  m = LAYER.fullmatch(path)
  if spec.scan_layers and m:
    return f"decoder.{m.group(1)}.{m.group(3)}", int(m.group(2))
  return path, None


def stack_size(spec: ModelSpec, key: str) -> int:
  """Number of layers of the stack holding `key` (a stacked_key result, e.g. 'decoder.moe_layers.mlp.wo')."""
  from maxtext_like.models.decoder import layer_stacks
  return {f"decoder.{name}": n for name, n, _ in layer_stacks(spec)}[".".join(key.split(".")[:2])]


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


def iter_unscanned(spec: ModelSpec, state: nnx.State):
  """(dotted unscanned path, numpy array) for every parameter of a restored state, layer by layer."""
  for path, var in nnx.to_flat_state(state):
    name = ".".join(str(k) for k in path)
    value = np.asarray(jax.device_get(var[...] if hasattr(var, "__getitem__") else var))
    stack = re.fullmatch(r"decoder\.(\w*layers)\.(.+)", name)
    if spec.scan_layers and stack:
      for i in range(value.shape[spec.param_scan_axis]):
        yield f"decoder.{stack.group(1)}.{i}.{stack.group(2)}", np.take(value, i, axis=spec.param_scan_axis)
    else:
      yield name, value
