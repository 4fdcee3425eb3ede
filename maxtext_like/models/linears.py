"""Parameter creation with logical axis names, `DenseGeneral`, activations."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from maxtext_like import kernels

Initializer = Callable[..., jax.Array]


def param(rngs: nnx.Rngs, init: Initializer, shape: Sequence[int], dtype, logical_axes: Sequence[str]) -> nnx.Param:
  """An `nnx.Param` whose `out_sharding` metadata holds logical axis names.

  Sharding is not applied at creation (`eager_sharding=False`): callers
  initialise abstractly, map names to a mesh with
  `sharding.logical_to_mesh_sharding`, and jit the init into those shardings.
  """
  assert len(shape) == len(logical_axes), (shape, logical_axes)
  value = init(rngs.params(), tuple(shape), dtype)
  return nnx.Param(value, out_sharding=tuple(logical_axes), eager_sharding=False)


def kernel_init(scale: float, in_axis: int | Sequence[int], out_axis: int | Sequence[int]) -> Initializer:
  """MaxText's dense init: truncated normal with variance scale / fan_in."""
  return nnx.initializers.variance_scaling(scale, "fan_in", "truncated_normal", in_axis=in_axis, out_axis=out_axis)


def matmul_precision(name: str) -> jax.lax.Precision:
  """'default'|'high'|'highest'|'bfloat16'|'tensorfloat32'|'float32' -> Precision."""
  return jax.lax.Precision(name)


class DenseGeneral(nnx.Module):
  """y = x contracted with `kernel` over the trailing len(in_features) axes.

  kernel shape = in_features + out_features, with one logical name per axis; with use_bias, a
  zero-initialised `bias` of shape out_features (logical names of the output axes) is added.
  """

  def __init__(
      self,
      in_features: Sequence[int],
      out_features: Sequence[int],
      logical_axes: Sequence[str],
      *,
      dtype,
      weight_dtype,
      precision: str = "default",
      init_scale: float = 1.0,
      use_bias: bool = False,
      rngs: nnx.Rngs,
  ):
    self.in_features = tuple(in_features)
    self.out_features = tuple(out_features)
    self.dtype = dtype
    self.precision = precision
    n_in = len(self.in_features)
    shape = self.in_features + self.out_features
    init = kernel_init(init_scale, tuple(range(n_in)), tuple(range(n_in, len(shape))))
    self.kernel = param(rngs, init, shape, weight_dtype, logical_axes)
    if use_bias:
      self.bias = param(rngs, nnx.initializers.zeros, self.out_features, weight_dtype, tuple(logical_axes)[n_in:])

  @property
  def dimension_numbers(self) -> jax.lax.DotDimensionNumbers:
    """x [N, *in_features] . kernel [*in_features, *out_features]: contract the in_features axes."""
    n_in = len(self.in_features)
    return (tuple(range(1, n_in + 1)), tuple(range(n_in))), ((), ())

  def __call__(self, x: jax.Array) -> jax.Array:
    prepared = self._prepare(x)
    xn, kernel, batch_shape, swap = prepared
    # jax.lax.dot_general by name, not jnp.dot: qwix intercepts this function to quantize the matmul
    # (models/quantization.py), and jnp.dot's own jit would hide the call from it. The kernel keeps its stored
    # shape (qwix's PTQ and LoRA work on the parameter as stored); only x's batch axes are merged into one.
    if _small_matmul_applies(xn, kernel, self.dtype, self.precision):
      y = _kernel_matmuls([prepared])[0]
    else:
      y = jax.lax.dot_general(xn, kernel, self.dimension_numbers, precision=matmul_precision(self.precision))
    return self._finish(y, batch_shape, swap)

  def _prepare(self, x: jax.Array):
    """(x as [rows, *in_features] in self.dtype, the kernel, x's batch shape, whether [B, T] was swapped)."""
    n_in = len(self.in_features)
    if x.shape[x.ndim - n_in:] != self.in_features:
      raise ValueError(f"input trailing shape {x.shape[x.ndim - n_in:]} != {self.in_features}")
    kernel = self.kernel.get_value()
    if isinstance(kernel, jax.Array):  # a post-training-quantized kernel (models/ptq.py) goes to qwix as stored
      kernel = kernel.astype(self.dtype)
    # One 2-D matmul: XLA:CPU runs the backward pass of a dot_general with several contracting batch dims
    # (e.g. 'btd,dv->btv') about 3x slower than the same work as [B*T, D] x [D, V] (benchmarks/train_throughput.py).
    # [B, T] with T split over devices does not flatten to one evenly split dimension (the reshape would cost an
    # all-to-all of x and of y); [T, B] does, at the price of a local transpose.
    swap = x.ndim - n_in == 2 and _sequence_sharded()
    x = x.swapaxes(0, 1) if swap else x
    batch_shape = x.shape[:x.ndim - n_in]
    return x.astype(self.dtype).reshape(-1, *self.in_features), kernel, batch_shape, swap

  def _finish(self, y: jax.Array, batch_shape: tuple, swap: bool) -> jax.Array:
    y = y.reshape(*batch_shape, *self.out_features)
    if hasattr(self, "bias"):
      y = y + self.bias[...].astype(self.dtype)
    return y.swapaxes(0, 1) if swap else y


def apply_together(layers, x: jax.Array) -> list[jax.Array]:
  """[layer(x) for layer in layers] for DenseGeneral layers of the same input (q, k and v; a gated MLP's wi_0 and
  wi_1). Where the CPU decode kernel takes every one of them, they are one kernel call (`kernels.small_matmuls`):
  one hand-off to XLA's thread pool for the group instead of one per matmul, ~10% of a batch-1 decode step's
  matmul time on the probe model. Otherwise each layer is called (inside its own call, as qwix expects)."""
  if len(layers) > 1 and kernels.decode_matmuls_enabled():
    prepared = [layer._prepare(x) for layer in layers]
    if all(_small_matmul_applies(xn, kernel, layer.dtype, layer.precision)
           for layer, (xn, kernel, _, _) in zip(layers, prepared)):
      ys = _kernel_matmuls(prepared)
      return [layer._finish(y, batch_shape, swap) for layer, y, (_, _, batch_shape, swap) in zip(layers, ys, prepared)]
  return [layer(x) for layer in layers]


def _kernel_matmuls(prepared) -> list[jax.Array]:
  """x @ kernel for each `DenseGeneral._prepare` result of one input, as one `kernels.small_matmuls` call on the 2-D
  views (x [rows, features], each kernel [features, outputs] as stored)."""
  xn = prepared[0][0]
  return kernels.small_matmuls(xn.reshape(xn.shape[0], -1),
                               [kernel.reshape(xn[0].size, -1) for _, kernel, _, _ in prepared])


_DOT_GENERAL = jax.lax.dot_general  # qwix swaps jax.lax.dot_general while it quantizes or adds LoRA to a model call


def _small_matmul_applies(x, kernel, dtype, precision: str) -> bool:
  """A decode step's float32 matmul of a few rows, which the CPU kernel computes faster than XLA (`kernels`)."""
  return (kernels.decode_matmuls_enabled() and jax.lax.dot_general is _DOT_GENERAL and isinstance(kernel, jax.Array)
          and x.shape[0] <= kernels.MAX_ROWS and dtype == jnp.float32 and x.dtype == kernel.dtype == jnp.float32
          and precision not in ("bfloat16", "tensorfloat32"))


def _sequence_sharded() -> bool:
  """Whether activations are split along the sequence (`activation_length` over mesh axes of size > 1)."""
  from maxtext_like.models.sharding import ACT_BTD, active_pspec
  found = active_pspec(ACT_BTD)
  if found is None:
    return False
  mesh, spec = found
  entry = spec[1] if len(spec) > 1 else None
  axes = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
  return any(mesh.shape[a] > 1 for a in axes)


_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "linear": lambda x: x,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_exact": lambda x: jax.nn.gelu(x, approximate=False),
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """Activation by MaxText name ('linear' is the identity)."""
  try:
    return _ACTIVATIONS[name]
  except KeyError:
    raise ValueError(f"unknown activation {name!r}; allowed: {sorted(_ACTIVATIONS)}") from None
