"""Decoder: the stack of L decoder layers, final norm and output logits.

scan_layers=True stores one layer module whose parameters are stacked on
axis `param_scan_axis` (logical name 'layers') and runs it under
`jax.lax.scan`; False keeps L separate layers (decoder.layers.0, ...) and a
Python loop. Both wrap each layer in `remat.maybe_remat` when training.

Layers form one stack `layers` unless the block has a `layer_stacks(spec)` trait: then several stacks (each
its own scan), run in order, e.g. deepseek's `dense_layers` (first_num_dense_layers) then `moe_layers`. KV
caches stay one [L, ...] array; stack j reads its slice.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from maxtext_like.models import moe as moe_lib
from maxtext_like.models.embeddings import Embed
from maxtext_like.models.kv_cache import LayerKV
from maxtext_like.models.linears import DenseGeneral
from maxtext_like.models.norms import RMSNorm
from maxtext_like.models.registry import get_decoder_block
from maxtext_like.models.remat import maybe_remat
from maxtext_like.models.sharding import ACT_BTV, constrain
from maxtext_like.models.spec import ModelSpec

LAYERS_AXIS_NAME = "layers"


def layer_stacks(spec: ModelSpec) -> tuple[tuple[str, int, tuple], ...]:
  """(attribute name, number of layers, block keyword arguments as items) per stack, in run order."""
  fn = spec.family_trait("layer_stacks")
  if fn is None:
    return (("layers", spec.num_decoder_layers, ()),)
  return tuple((name, n, tuple(sorted(kw.items()))) for name, n, kw in fn(spec) if n > 0)


def stacked_layers(block_cls: type, spec: ModelSpec, rngs: nnx.Rngs, num_layers: int | None = None,
                   **block_kwargs) -> nnx.Module:
  """One `block_cls` whose params have an extra axis `param_scan_axis` of size L (default num_decoder_layers)."""

  @nnx.split_rngs(splits=spec.num_decoder_layers if num_layers is None else num_layers)
  @nnx.vmap(in_axes=(0,), out_axes=spec.param_scan_axis, transform_metadata={nnx.PARTITION_NAME: LAYERS_AXIS_NAME})
  def create(rngs: nnx.Rngs):
    return block_cls(spec, rngs=rngs, **block_kwargs)

  return create(rngs.fork())


class Decoder(nnx.Module):
  """Layers, `decoder_norm`, and `logits_dense` unless logits are tied."""

  def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs):
    self.spec = spec
    block_cls = get_decoder_block(spec.decoder_block)
    self.stacks = layer_stacks(spec)
    # Loop layout: a block with `init_takes_layer_index = True` is built with `layer_index=` (its global index), so
    # its layers may differ (e.g. MoE every k-th layer, interleave_moe_layer_step).
    by_index = not spec.scan_layers and spec.family_trait("init_takes_layer_index", False)
    offset = 0
    for name, n, kw in self.stacks:
      if spec.scan_layers:
        setattr(self, name, stacked_layers(block_cls, spec, rngs, n, **dict(kw)))
      else:
        setattr(self, name, nnx.List([block_cls(spec, rngs=rngs, **dict(kw), **({"layer_index": offset + j} if by_index
                                                                                 else {})) for j in range(n)]))
      offset += n
    make_final_norm = spec.family_trait("make_final_norm")  # a family's own final norm (gpt3: LayerNorm)
    if make_final_norm is not None:
      self.decoder_norm = make_final_norm(spec, rngs)
    else:
      self.decoder_norm = RMSNorm(spec.emb_dim, epsilon=spec.normalization_layer_epsilon, dtype=spec.dtype,
                                  weight_dtype=spec.weight_dtype, rngs=rngs,
                                  scale_offset=spec.family_trait("norm_scale_offset", 0.0))
    self.dropout = nnx.Dropout(spec.dropout_rate)
    if not spec.logits_via_embedding:
      self.logits_dense = DenseGeneral(
          (spec.emb_dim,), (spec.vocab_size,), ("embed", "vocab"),
          dtype=jnp.float32 if spec.logits_dot_in_fp32 else spec.dtype, weight_dtype=spec.weight_dtype,
          precision=spec.matmul_precision, init_scale=spec.dense_init_scale, rngs=rngs)

  def __call__(self, x_BTD: jax.Array, positions_BT: jax.Array, segment_ids_BT: jax.Array, *,
               embedder: Embed, dropout_key: jax.Array | None = None,
               cache: tuple[jax.Array, jax.Array, jax.Array, jax.Array] | None = None):
    """Returns (logits_BTV, (k_LBSKH, v_LBSKH) or None).

    `cache` is (k_LBSKH, v_LBSKH, index_B, segment_ids_BS) with segment ids
    already covering this call's tokens.
    """
    layer_key, final_key = (None, None) if dropout_key is None else tuple(jax.random.split(dropout_key))
    run = self._run_scanned if self.spec.scan_layers else self._run_looped
    if self.spec.pipeline is not None and cache is None:  # pipeline parallelism over 'stage' (models/pipeline.py)
      from maxtext_like.models.pipeline import run_pipelined
      x_BTD, kv = run_pipelined(self, x_BTD, positions_BT, segment_ids_BT, layer_key), None
    elif len(self.stacks) == 1:
      x_BTD, kv = run(getattr(self, self.stacks[0][0]), 0, x_BTD, positions_BT, segment_ids_BT, layer_key, cache)
    else:
      offset, kvs = 0, []
      for name, n, _ in self.stacks:
        sub = None if cache is None else (cache[0][offset:offset + n], cache[1][offset:offset + n], *cache[2:])
        x_BTD, kv = run(getattr(self, name), offset, x_BTD, positions_BT, segment_ids_BT, layer_key, sub)
        kvs.append(kv)
        offset += n
      kv = None if cache is None else tuple(jnp.concatenate(parts) for parts in zip(*kvs))
    y_BTD = self.decoder_norm(x_BTD)
    y_BTD = self.dropout(y_BTD, deterministic=final_key is None, rngs=final_key)
    return self.logits(y_BTD, embedder), kv

  def logits(self, y_BTD: jax.Array, embedder: Embed) -> jax.Array:
    spec = self.spec
    if spec.logits_via_embedding:
      logits_BTV = embedder.attend(y_BTD, jnp.float32 if spec.logits_dot_in_fp32 else spec.dtype)
    else:
      logits_BTV = self.logits_dense(y_BTD)
    if spec.final_logits_soft_cap:
      cap = spec.final_logits_soft_cap
      logits_BTV = cap * jnp.tanh(logits_BTV / cap)
    if spec.cast_logits_to_fp32:
      logits_BTV = logits_BTV.astype(jnp.float32)
    return constrain(logits_BTV, ACT_BTV)

  def _layer_fn(self, graphdef, positions_BT, segment_ids_BT, cache, *, in_scan: bool, index: int | None = None):
    """Pure (layer_state, x, k, v, key, i) -> (x, k, v), rematted when training.

    Blocks with `takes_layer_index = True` get `layer_index=`: the static `index` when given (loop), else
    the traced i (scan).
    """
    takes_index = self.spec.family_trait("takes_layer_index", False)

    def apply(state, x_BTD, k_BSKH, v_BSKH, key, i):
      layer = nnx.merge(graphdef, state)
      layer_kv = None if cache is None else LayerKV(k_BSKH, v_BSKH, cache[2], cache[3])
      extra = {"layer_index": i if index is None else index} if takes_index else {}
      y_BTD, layer_kv = layer(x_BTD, positions_BT, segment_ids_BT, dropout_key=key, cache=layer_kv, **extra)
      aux = moe_lib.pop_layer_aux(layer)  # MoE losses / bias updates sown by the layer ({} for dense layers)
      return (y_BTD, None, None, aux) if layer_kv is None else (y_BTD, layer_kv.k_BSKH, layer_kv.v_BSKH, aux)

    return apply if cache is not None else maybe_remat(apply, self.spec, prevent_cse=not in_scan)

  def _stack_name(self, layers) -> str:
    return next(name for name, _, _ in self.stacks if getattr(self, name) is layers)

  def _run_looped(self, layers, offset, x_BTD, positions_BT, segment_ids_BT, dropout_key, cache):
    ks, vs = [], []
    for j, layer in enumerate(layers):
      i = offset + j
      graphdef, state = nnx.split(layer)
      fn = self._layer_fn(graphdef, positions_BT, segment_ids_BT, cache, in_scan=False, index=i)
      key = None if dropout_key is None else jax.random.fold_in(dropout_key, i)
      k, v = (None, None) if cache is None else (cache[0][j], cache[1][j])
      x_BTD, k, v, aux = fn(state, x_BTD, k, v, key, i)
      moe_lib.record_aux(aux, ("decoder", self._stack_name(layers), j))
      ks.append(k)
      vs.append(v)
    return x_BTD, None if cache is None else (jnp.stack(ks), jnp.stack(vs))

  def _run_scanned(self, layers, offset, x_BTD, positions_BT, segment_ids_BT, dropout_key, cache):
    axis = self.spec.param_scan_axis
    graphdef, state = nnx.split(layers)
    state_L = jax.tree.map(lambda a: jnp.moveaxis(a, axis, 0), state)
    fn = self._layer_fn(graphdef, positions_BT, segment_ids_BT, cache, in_scan=True)

    def body(x_BTD, xs):
      layer_state, i, k_BSKH, v_BSKH = xs
      key = None if dropout_key is None else jax.random.fold_in(dropout_key, i)
      x_BTD, k_BSKH, v_BSKH, aux = fn(layer_state, x_BTD, k_BSKH, v_BSKH, key, i)
      return x_BTD, (k_BSKH, v_BSKH, aux)

    k_LBSKH, v_LBSKH = (None, None) if cache is None else cache[:2]
    n = jax.tree.leaves(state_L)[0].shape[0]
    xs = (state_L, offset + jnp.arange(n), k_LBSKH, v_LBSKH)
    x_BTD, (k_LBSKH, v_LBSKH, aux) = jax.lax.scan(body, x_BTD, xs)
    aux = {p: jnp.moveaxis(a, 0, axis) if a.ndim > axis else a for p, a in aux.items()}  # laid out like the params
    moe_lib.record_aux(aux, ("decoder", self._stack_name(layers)))
    return x_BTD, None if cache is None else (k_LBSKH, v_LBSKH)
