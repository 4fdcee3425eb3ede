"""LoRA and QLoRA on the decoder's dense projections, through qwix's `LoraProvider` (MaxText's `lora:` keys).

A targeted `DenseGeneral` (module path matching `lora_module_path`) gets two `nnx.LoRAParam`s next to its kernel,
named as qwix names them: `kernel_lora_a` [prod(in_features), r] and `kernel_lora_b` [r, prod(out_features)], and
its matmul becomes  y = x·W + (x·A)·B · alpha/r  (qwix intercepts the layer's `jax.lax.dot_general`, which sees the
kernel in its stored N-D shape). B starts at zero, so a fresh adapter leaves the model's output unchanged.

The adapters are created here rather than by qwix's first call: in the scanned layout the layers run under
`jax.lax.scan` on a merged copy, where a parameter created during the call would be lost. A scanned stack's
adapters carry the layer axis at `param_scan_axis` (logical name 'layers') like its kernels, so the scan slices
them per layer too. QLoRA (`lora_weight_qtype`) stores the frozen base kernels of the targeted layers quantized
(qwix `WithAux[QArray]`, per layer for a scanned stack); the adapters stay in the kernel's float dtype.
"""

from __future__ import annotations

import dataclasses
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import qwix
from flax import nnx
from qwix._src.core import dot_general as qwix_dot_general
from qwix._src.core import qarray
from qwix._src.providers import ptq

from maxtext_like.models import choices
from maxtext_like.models.linears import DenseGeneral
from maxtext_like.models.registry import ModelSpecError

# Target modules when lora_module_path is '': the attention projections and the dense MLP of every decoder layer
# (unscanned 'decoder/layers/3/mlp/wi_0' and scanned 'decoder/layers/mlp/wi_0' alike), as MaxText's
# configs/post_train/lora_module_path.yml does per model; MoE expert einsums and routers are not dense projections.
DEFAULT_MODULE_PATH = r"decoder/.*layers.*/self_attention\w*/(query|key|value|out)|decoder/.*layers.*/mlp\w*/(wi_0|wi_1|wo)"
FAMILY_MODULE_PATHS = {
    "gpt3": r"decoder/.*layers.*/self_attention/(qkv_proj|out)|decoder/.*layers.*/mlp/(wi|wo)",
    "deepseek": r"decoder/.*layers.*/self_attention/(query|wq_a|wq_b|wkv_a|wkv_b|out)|decoder/.*layers.*/(mlp|shared_experts)\w*/(wi_0|wi_1|wo)",
}

_QTYPES = {"nf4": "nf4", "int4": jnp.int4, "int8": jnp.int8, "fp8": jnp.float8_e4m3fn}
assert set(_QTYPES) == set(choices.LORA_WEIGHT_QTYPES), "choices.LORA_WEIGHT_QTYPES and _QTYPES disagree"

A, B = "kernel_lora_a", "kernel_lora_b"


class LoraError(ModelSpecError):
  """An adapter that does not fit its base, or LoRA keys that target nothing (bad input, exit code 2)."""


@dataclasses.dataclass(frozen=True)
class LoraSpec:
  """The adapter's shape and where it goes; `module_path` '' means the family's default."""

  rank: int
  alpha: float
  module_path: str = ""
  weight_qtype: str | None = None
  tile_size: int | None = None

  @property
  def scale(self) -> float:
    return self.alpha / self.rank


def lora_spec(finetune) -> LoraSpec | None:
  """From the config's finetune section (cfg.finetune); None unless enable_lora."""
  if not finetune.enable_lora:
    return None
  return LoraSpec(rank=finetune.lora_rank, alpha=finetune.lora_alpha, module_path=finetune.lora_module_path,
                  weight_qtype=finetune.lora_weight_qtype or None, tile_size=finetune.lora_tile_size or None)


def module_pattern(lspec: LoraSpec, decoder_block: str) -> str:
  return lspec.module_path or FAMILY_MODULE_PATHS.get(decoder_block, DEFAULT_MODULE_PATH)


def dense_modules(model: nnx.Module) -> dict[str, DenseGeneral]:
  """'/'-joined module path (qwix's form) -> every DenseGeneral of the model."""
  return {"/".join(map(str, path)): m for path, m in nnx.iter_modules(model) if isinstance(m, DenseGeneral)}


def targets(model: nnx.Module, pattern: str) -> dict[str, DenseGeneral]:
  """The dense projections whose path fully matches `pattern`; LoraError naming the candidates if none does."""
  dense = dense_modules(model)
  hit = {p: m for p, m in dense.items() if re.fullmatch(pattern, p)}
  if not hit:
    raise LoraError(f"lora_module_path={pattern!r} matches none of the model's dense projections; they are: "
                    + ", ".join(sorted(dense)))
  return hit


def layer_axis(m: DenseGeneral) -> int | None:
  """The kernel's stacked-layer axis (scanned layout), None for a single layer."""
  axes = _kernel_axes(m)
  return axes.index("layers") if "layers" in axes else None


def _kernel_axes(m: DenseGeneral) -> tuple:
  return tuple(m.kernel.get_metadata().get("out_sharding") or (None,) * len(m.kernel.shape))


def adapter_shapes(m: DenseGeneral, rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """(A's shape, B's shape), with the layer axis where the kernel has it."""
  a, b = (math.prod(m.in_features), rank), (rank, math.prod(m.out_features))
  k = layer_axis(m)
  if k is None:
    return a, b
  n = m.kernel.shape[k]
  return a[:k] + (n,) + a[k:], b[:k] + (n,) + b[k:]


def add_adapters(model: nnx.Module, lspec: LoraSpec, decoder_block: str, key: jax.Array) -> list[str]:
  """Creates A (he-uniform over fan-in, qwix's default) and B (zeros) on every target, in place; their paths."""
  found = targets(model, module_pattern(lspec, decoder_block))
  for i, (path, m) in enumerate(sorted(found.items())):
    axes = _kernel_axes(m)
    k = layer_axis(m)
    n_in = len(m.in_features)
    plain = tuple(a for a in axes if a != "layers")
    a_axes, b_axes = (plain[0], None), (None, plain[n_in])  # qwix: A inherits the first contracting axis, B the first output axis
    if k is not None:
      a_axes, b_axes = a_axes[:k] + ("layers",) + a_axes[k:], b_axes[:k] + ("layers",) + b_axes[k:]
    a_shape, b_shape = adapter_shapes(m, lspec.rank)
    dtype = m.kernel.get_value().dtype  # adapters come before QLoRA quantizes the kernel
    bound = math.sqrt(6.0 / math.prod(m.in_features))
    a = jax.random.uniform(jax.random.fold_in(key, i), a_shape, dtype, -bound, bound)
    setattr(m, A, nnx.LoRAParam(a, out_sharding=a_axes, eager_sharding=False))
    setattr(m, B, nnx.LoRAParam(jnp.zeros(b_shape, dtype), out_sharding=b_axes, eager_sharding=False))
  return sorted(found)


def _how(m: DenseGeneral, lspec: LoraSpec) -> qarray.HowToQuantize:
  """qwix's recipe for this layer's kernel as its dot_general uses it (x [N, *in] against kernel [*in, *out])."""
  n_in, n_out = len(m.in_features), len(m.out_features)
  return qwix_dot_general.get_how_to_quantize(dimension_numbers=m.dimension_numbers, ndims=(1 + n_in, n_in + n_out),
                                              for_lhs=False,
                                              qtype=_QTYPES[lspec.weight_qtype], calibration_method="absmax",
                                              tile_size=lspec.tile_size)


def quantize_base(model: nnx.Module, lspec: LoraSpec, paths: list[str]) -> None:
  """QLoRA: the targeted kernels are stored as qwix `WithAux[QArray]` inside their `nnx.Param` (as models/ptq.py
  stores serving kernels), quantized per layer for a scanned stack; in place."""
  dense = dense_modules(model)
  for path in paths:
    m = dense[path]
    how = _how(m, lspec)
    k = layer_axis(m)
    quantize = lambda w: qarray.quantize(w, how)  # noqa: E731
    if k is not None:
      quantize = jax.vmap(quantize, in_axes=k, out_axes=k)
    m.kernel = nnx.Param(ptq.WithAux(quantize(m.kernel.get_value()), how), **m.kernel.get_metadata())


def lora_rules(lspec: LoraSpec, paths: list[str]) -> list[qwix.LoraRule]:
  """One rule for exactly the adapted modules (qwix would create adapters itself on any other module it matched)."""
  return [qwix.LoraRule(module_path="|".join(re.escape(p) for p in paths), rank=lspec.rank, alpha=lspec.alpha,
                        weight_qtype=_QTYPES[lspec.weight_qtype] if lspec.weight_qtype else None,
                        tile_size=lspec.tile_size)]


def apply_lora(model: nnx.Module, lspec: LoraSpec, decoder_block: str, key: jax.Array) -> nnx.Module:
  """A copy of `model` with adapters on its targets (and, for QLoRA, those kernels quantized), whose targeted
  matmuls add the low-rank update. Works on an abstract model (nnx.eval_shape) too."""
  model = nnx.clone(model)
  paths = add_adapters(model, lspec, decoder_block, key)
  if lspec.weight_qtype:
    quantize_base(model, lspec, paths)
  return qwix.quantize_model(model, qwix.LoraProvider(lora_rules(lspec, paths)), skip_nnx_init=True)


def lora_model(spec, lspec: LoraSpec, key: jax.Array, base: nnx.State | None = None) -> nnx.Module:
  """The model of `spec` from `key` (its parameters replaced by `base` when given) with adapters applied; the
  adapters' key is fold_in(key, 2) (0/1: parameters/dropout)."""
  from maxtext_like.models.transformer import build_model
  model = build_model(spec, nnx.Rngs(params=key, dropout=jax.random.fold_in(key, 1)))
  if base is not None:
    nnx.update(model, base)
  return apply_lora(model, lspec, spec.decoder_block, jax.random.fold_in(key, 2))


def abstract_adapters(spec, lspec: LoraSpec) -> nnx.State:
  """The adapters' shapes and logical axes (nnx.eval_shape, no memory)."""
  return nnx.state(nnx.eval_shape(lambda: lora_model(spec, lspec, jax.random.PRNGKey(0))), nnx.LoRAParam)


def adapter_pairs(adapters: nnx.State) -> dict[tuple, tuple[jax.Array, jax.Array]]:
  """Module path (state keys) -> (A, B) of an adapter state (nnx.state(model, nnx.LoRAParam))."""
  out: dict[tuple, dict] = {}
  for path, var in nnx.to_flat_state(adapters):
    out.setdefault(tuple(path[:-1]), {})[str(path[-1])] = var[...] if hasattr(var, "__getitem__") else var
  return {p: (d[A], d[B]) for p, d in out.items()}


def kernel_delta(kernel_shape: tuple[int, ...], a: jax.Array, b: jax.Array, scale: float, k: int | None) -> jax.Array:
  """(A·B)·scale in the kernel's stored shape (layer axis k kept where the kernel has it)."""
  if k is None:
    return (a @ b).reshape(kernel_shape) * scale
  per_layer = tuple(s for i, s in enumerate(kernel_shape) if i != k)
  d = jnp.einsum("...ir,...ro->...io", jnp.moveaxis(a, k, 0), jnp.moveaxis(b, k, 0))
  return jnp.moveaxis(d.reshape(-1, *per_layer), 0, k) * scale


def merge_into(params: nnx.State, adapters: nnx.State, lspec: LoraSpec, scan_axis: int) -> nnx.State:
  """The base params with every adapter folded in: W + A·B·alpha/r (in float32, cast back to W's dtype)."""
  flat = dict(nnx.to_flat_state(params))
  for mod, (a, b) in adapter_pairs(adapters).items():
    key = (*mod, "kernel")
    if key not in flat:
      raise LoraError(f"the adapter has {'/'.join(map(str, mod))} but the base model has no kernel there")
    w = flat[key][...]
    k = scan_axis if a.ndim == 3 else None  # a stacked adapter: [in, L, r] with L at the scan axis
    delta = kernel_delta(w.shape, a.astype(jnp.float32), b.astype(jnp.float32), lspec.scale, k)
    flat[key] = flat[key].replace((w.astype(jnp.float32) + delta).astype(w.dtype))
  return nnx.from_flat_state(list(flat.items()))


def count_adapter_params(adapters: nnx.State) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(adapters))
