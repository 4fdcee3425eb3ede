"""Decoder: the stack of L decoder layers, final norm and output logits.

scan_layers=True stores one layer module whose parameters are stacked on
axis `param_scan_axis` (logical name 'layers') and runs it under
`jax.lax.scan`; False keeps L separate layers (decoder.layers.0, ...) and a
Python loop. Both wrap each layer in `remat.maybe_remat` when training.

The family (`family.Family`, typed fields) says how layers are grouped: `Family.stacks(spec)` gives one or more
`LayerStack`s, each its own scan, run in order (e.g. deepseek's `dense_layers` then `moe_layers`). A stack with
`cycle` = c > 1 holds layers that differ with period c (MoE every c-th layer, NoPE every 4th): the loop layout
builds layer i with `layer_index=i`; the scanned layout scans units of c layers (`LayerCycle`, parameters
`decoder.<stack>.sublayers.<j>.*`, sublayer j built with `layer_index=j`), so stacks must start at a multiple of c.
KV caches stay one [L, ...] array; stack j reads its slice.

Auxiliary outputs (MoE load-balance losses, routed-bias updates) are returned, not side channels:
`Decoder.__call__` gives `(logits_BTV, kv, aux)` with aux = {'lb_loss': scalar summed over layers,
'bias_delta': {'/'-joined param path: delta shaped like the param}}.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
from flax import nnx

from maxtext_like.models import moe as moe_lib
from maxtext_like.models.embeddings import Embed
from maxtext_like.models.family import Family, LayerStack, family_of
from maxtext_like.models.kv_cache import LayerKV
from maxtext_like.models.linears import DenseGeneral
from maxtext_like.models.norms import RMSNorm
from maxtext_like.models.registry import ModelSpecError
from maxtext_like.models.remat import maybe_remat
from maxtext_like.models.sharding import ACT_BTV, constrain
from maxtext_like.models.spec import ModelSpec

LAYERS_AXIS_NAME = "layers"


def layer_stacks(spec: ModelSpec) -> tuple[LayerStack, ...]:
  """The family's layer stacks, in run order."""
  return family_of(spec).stacks(spec)


class LayerCycle(nnx.Module):
  """`cycle` consecutive layers that differ by position, scanned as one unit (sublayer j: `layer_index=j`)."""

  def __init__(self, family: Family, spec: ModelSpec, cycle: int, *, rngs: nnx.Rngs, **block_kwargs):
    self.sublayers = nnx.List([family.block(spec, rngs=rngs, layer_index=j, **block_kwargs) for j in range(cycle)])
    self.index_at_call = family.layer_index_at_call

  def __call__(self, x_BTD, positions_BT, segment_ids_BT, *, dropout_key=None, cache: LayerKV | None = None,
               layer_index=None):
    """cache holds this unit's c layers: k/v (and scales) [c, B, S, ...]; layer_index is the unit's index."""
    outs = []
    c = len(self.sublayers)
    for j, layer in enumerate(self.sublayers):
      key = None if dropout_key is None else jax.random.fold_in(dropout_key, j)
      kv = None if cache is None else cache.with_arrays(tuple(a[j] for a in cache.arrays()))
      extra = {"layer_index": layer_index * c + j} if self.index_at_call else {}
      x_BTD, kv = layer(x_BTD, positions_BT, segment_ids_BT, dropout_key=key, cache=kv, **extra)
      if kv is not None:
        outs.append(kv.arrays())
    if cache is None:
      return x_BTD, None
    return x_BTD, cache.with_arrays(tuple(jnp.stack(p) for p in zip(*outs)))


def _unit_builder(family: Family, spec: ModelSpec, st: LayerStack):
  """(number of scanned units, constructor of one unit) for a stack in the scanned layout."""
  if st.cycle == 1:
    return st.num_layers, lambda rngs: family.block(spec, rngs=rngs, **st.block_kwargs)
  if st.num_layers % st.cycle:
    raise ModelSpecError(f"decoder_block={spec.decoder_block!r}: the scanned layout groups the {st.num_layers} layers of "
                     f"stack {st.name!r} in units of {st.cycle}, which must divide them; set scan_layers=false")
  return st.num_layers // st.cycle, lambda rngs: LayerCycle(family, spec, st.cycle, rngs=rngs, **st.block_kwargs)


def stacked_layers(make, num_layers: int, spec: ModelSpec, rngs: nnx.Rngs) -> nnx.Module:
  """One module from `make(rngs)` whose params have an extra axis `param_scan_axis` of size num_layers."""

  @nnx.split_rngs(splits=num_layers)
  @nnx.vmap(in_axes=(0,), out_axes=spec.param_scan_axis, transform_metadata={nnx.PARTITION_NAME: LAYERS_AXIS_NAME})
  def create(rngs: nnx.Rngs):
    return make(rngs)

  return create(rngs.fork())


class Decoder(nnx.Module):
  """Layers, `decoder_norm`, and `logits_dense` unless logits are tied."""

  def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs):
    self.spec = spec
    family = family_of(spec)
    self.stacks = family.stacks(spec)
    self.index_at_call = family.layer_index_at_call
    offset = 0
    for st in self.stacks:
      if spec.scan_layers:
        n, make = _unit_builder(family, spec, st)
        setattr(self, st.name, stacked_layers(make, n, spec, rngs))
      else:
        index = (lambda j: {"layer_index": offset + j}) if st.cycle > 1 else (lambda j: {})  # noqa: B023
        setattr(self, st.name, nnx.List([family.block(spec, rngs=rngs, **st.block_kwargs, **index(j))
                                         for j in range(st.num_layers)]))
      offset += st.num_layers
    if family.final_norm is not None:
      self.decoder_norm = family.final_norm(spec, rngs)
    else:
      self.decoder_norm = RMSNorm(spec.emb_dim, epsilon=spec.normalization_layer_epsilon, dtype=spec.dtype,
                                  weight_dtype=spec.weight_dtype, rngs=rngs, scale_offset=family.norm_scale_offset)
    self.dropout = nnx.Dropout(spec.dropout_rate)
    if not spec.logits_via_embedding:
      self.logits_dense = DenseGeneral(
          (spec.emb_dim,), (spec.vocab_size,), ("embed", "vocab"),
          dtype=jnp.float32 if spec.logits_dot_in_fp32 else spec.dtype, weight_dtype=spec.weight_dtype,
          precision=spec.matmul_precision, init_scale=spec.dense_init_scale, rngs=rngs)

  def __call__(self, x_BTD: jax.Array, positions_BT: jax.Array, segment_ids_BT: jax.Array, *,
               embedder: Embed, dropout_key: jax.Array | None = None,
               cache: tuple | None = None, logits_at: jax.Array | None = None):
    """Returns (logits_BTV, the cache's new arrays or None, aux) (aux: see the module docstring).

    `cache` is (arrays, index_B, segment_ids_BS, page_table_BM or None): arrays = `KVCache.arrays()`, [L, ...]
    keys, values (and their scales when quantized); segment ids already cover this call's tokens (paged: the
    arrays are page pools, see models/kv_cache.py). `logits_at` (int32 [B]): logits of that position only, [B, 1, V].
    """
    layer_key, final_key = (None, None) if dropout_key is None else tuple(jax.random.split(dropout_key))
    aux = moe_lib.empty_aux()
    if self.spec.pipeline is not None and cache is None:  # pipeline parallelism over 'stage' (models/pipeline.py)
      from maxtext_like.models.pipeline import run_pipelined
      x_BTD, kv = run_pipelined(self, x_BTD, positions_BT, segment_ids_BT, layer_key), None
    else:
      offset, kvs, whole = 0, [], cache
      for st in self.stacks:
        n = st.num_layers
        if self.spec.scan_layers:
          sub = None if cache is None else (tuple(a[offset:offset + n] for a in cache[0]), *cache[1:])
          x_BTD, kv = self._run_scanned(st, offset, x_BTD, positions_BT, segment_ids_BT, layer_key, sub, aux)
          kvs.append(kv)
        else:  # each layer updates its part of the whole cache in place (LayerKV.layer)
          x_BTD, whole = self._run_looped(st, offset, x_BTD, positions_BT, segment_ids_BT, layer_key, whole, aux)
        offset += n
      if cache is None:
        kv = None
      elif not self.spec.scan_layers:
        kv = whole[0]
      else:
        kv = kvs[0] if len(kvs) == 1 else tuple(jnp.concatenate(p) for p in zip(*kvs))
    if logits_at is not None:
      x_BTD = jnp.take_along_axis(x_BTD, logits_at.astype(jnp.int32)[:, None, None], axis=1)
    y_BTD = self.decoder_norm(x_BTD)
    y_BTD = self.dropout(y_BTD, deterministic=final_key is None, rngs=final_key)
    return self.logits(y_BTD, embedder), kv, aux

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

  def _layer_fn(self, graphdef, positions_BT, segment_ids_BT, cache, *, in_scan: bool, takes_index: bool,
                index: int | None = None, cache_layer: int | None = None):
    """Pure (layer_state, x, kv, key, i) -> (x, kv, aux) (kv: the cache arrays), rematted when training.

    With `takes_index` the layer gets `layer_index=`: the static `index` when given (loop), else the traced i (scan).
    """

    def apply(state, x_BTD, kv, key, i):
      layer = nnx.merge(graphdef, state)
      layer_kv = None if cache is None else LayerKV.of(kv, *cache[1:], layer=cache_layer)
      extra = {"layer_index": i if index is None else index} if takes_index else {}
      y_BTD, layer_kv = layer(x_BTD, positions_BT, segment_ids_BT, dropout_key=key, cache=layer_kv, **extra)
      aux = moe_lib.pop_layer_aux(layer)  # MoE losses / bias updates sown by the layer ({} for dense layers)
      return (y_BTD, None, aux) if layer_kv is None else (y_BTD, layer_kv.arrays(), aux)

    return apply if cache is not None else maybe_remat(apply, self.spec.remat_spec, prevent_cse=not in_scan)

  def _run_looped(self, st: LayerStack, offset, x_BTD, positions_BT, segment_ids_BT, dropout_key, cache, aux):
    """cache: the whole (arrays, index_B, segment_ids_BS, page_table_BM); layer i writes its part."""
    for j, layer in enumerate(getattr(self, st.name)):
      i = offset + j
      graphdef, state = nnx.split(layer)
      fn = self._layer_fn(graphdef, positions_BT, segment_ids_BT, cache, in_scan=False,
                          takes_index=self.index_at_call, index=i, cache_layer=i)
      key = None if dropout_key is None else jax.random.fold_in(dropout_key, i)
      x_BTD, kv, layer_aux = fn(state, x_BTD, None if cache is None else cache[0], key, i)
      moe_lib.add_aux(aux, layer_aux, ("decoder", st.name, j))
      if cache is not None:
        cache = (kv, *cache[1:])
    return x_BTD, cache

  def _run_scanned(self, st: LayerStack, offset, x_BTD, positions_BT, segment_ids_BT, dropout_key, cache, aux):
    axis, c = self.spec.param_scan_axis, st.cycle
    graphdef, state = nnx.split(getattr(self, st.name))
    state_L = jax.tree.map(lambda a: jnp.moveaxis(a, axis, 0), state)
    fn = self._layer_fn(graphdef, positions_BT, segment_ids_BT, cache, in_scan=True,
                        takes_index=self.index_at_call or c > 1)

    def body(x_BTD, xs):
      layer_state, i, kv = xs
      key = None if dropout_key is None else jax.random.fold_in(dropout_key, i)
      x_BTD, kv, layer_aux = fn(layer_state, x_BTD, kv, key, i)
      return x_BTD, (kv, layer_aux)

    n = st.num_layers // c  # scanned units (layers, or cycles of c layers)
    kv = None if cache is None else cache[0]
    if cache is not None and c > 1:  # [L, ...] -> [units, c, ...]
      kv = tuple(a.reshape(n, c, *a.shape[1:]) for a in kv)
    xs = (state_L, offset // c + jnp.arange(n), kv)
    x_BTD, (kv, layer_aux) = jax.lax.scan(body, x_BTD, xs)
    layer_aux = {p: jnp.moveaxis(a, 0, axis) if p[-1] == "bias_delta" and a.ndim > axis else a  # as the params
                 for p, a in layer_aux.items()}
    moe_lib.add_aux(aux, layer_aux, ("decoder", st.name))
    if cache is None:
      return x_BTD, None
    if c > 1:
      kv = tuple(a.reshape(n * c, *a.shape[2:]) for a in kv)
    return x_BTD, kv
