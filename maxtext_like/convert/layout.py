"""Our parameter layout: dotted unscanned paths <-> (scanned) nnx state, from shapes only."""

from __future__ import annotations

import re

import jax
import numpy as np
from flax import nnx

from maxtext_like.models import ModelSpec, build_model

LAYER = re.compile(r"decoder\.layers\.(\d+)\.(.+)")


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
    return f"decoder.layers.{m.group(2)}", int(m.group(1))
  return path, None


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
    if spec.scan_layers and name.startswith("decoder.layers."):
      rest = name[len("decoder.layers."):]
      for i in range(value.shape[spec.param_scan_axis]):
        yield f"decoder.layers.{i}.{rest}", np.take(value, i, axis=spec.param_scan_axis)
    else:
      yield name, value
