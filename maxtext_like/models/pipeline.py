"""Pipeline parallelism over the 'stage' mesh axis: MaxText's circular GPipe schedule, in plain JAX.

Shapes: S stages, R repeats, P layers per stage (L = R·S·P decoder layers), M microbatches of b rows (B = M·b).

Layer l = (r·S + s)·P + j runs as the j-th layer of stage s in repeat r: layers go round-robin over the stages,
R times (the circular schedule; R = 1 is plain GPipe with contiguous blocks of P layers per stage). Parameters keep
the decoder's layout ([..., L at param_scan_axis, ...], logical axis 'layers' -> mesh axis 'stage'), so checkpoints,
conversion and decoding do not change; inside the step the layer axis is viewed as [R, S, P] with S on 'stage'.
For R = 1 that view is local; for R > 1 it moves each stage's layers to it once per step (and the gradients back).

The schedule runs M·R + d·(S-1) iterations, d = 2 with pipeline_delay_activation_forwarding else 1. At iteration t
stage s works on step k = t - d·s (microbatch k mod M, repeat k // M) when 0 <= k < M·R, else on a bubble whose
result is never used. Every stage runs at once: `jax.vmap` over the stage dimension (spmd_axis_name='stage', so
activation constraints inside the layers keep the stage dimension sharded). Activations move to the next stage
with `jnp.roll` over the stage-sharded dimension (a collective permute). A buffer of M microbatches starts as
the embedded inputs; stage 0 reads microbatch k mod M from it, the last stage writes its output back to the same
slot, so after repeat r it holds the inputs of repeat r + 1 and at the end the decoder stack's output
(needs M >= d·(S-1) + 1, guaranteed by the config rule M % S == 0, and M >= 2S with delayed forwarding).

Remat: `set_remat_policy_on_pipeline_iterations` wraps each iteration's stage computation in `jax.checkpoint`
with the remat policy (the default, as MaxText); `set_remat_policy_on_layers_per_stage` wraps each layer.
Blocks whose layers sow MoE auxiliary outputs, and several layer stacks (deepseek), are not pipelined yet.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx
from flax.linen import spmd as linen_spmd
from jax.sharding import NamedSharding, PartitionSpec

from maxtext_like.models import moe as moe_lib
from maxtext_like.models import sharding as sharding_lib
from maxtext_like.models.family import family_of
from maxtext_like.models.remat import maybe_remat
from maxtext_like.models.sharding import ACT_BTD

STAGE_AXIS = "stage"
FSDP_AXES = ("fsdp", "fsdp_transpose")


@dataclasses.dataclass(frozen=True)
class PipelineSpec:
  """The pipeline section of a ModelSpec (MaxText's keys, resolved: no -1 left)."""

  num_stages: int
  num_microbatches: int
  num_repeats: int = 1
  layers_per_stage: int = 1
  delay_activation_forwarding: bool = False  # stage s+1 consumes stage s's output one iteration later
  fsdp_ag_once: bool = False  # all-gather fsdp-sharded layer weights once per step, not per iteration
  scan_iterations: bool = True  # lax.scan over iterations (else a Python loop)
  scan_layers_per_stage: bool = False  # lax.scan over a stage's P layers (else a Python loop)
  remat_iterations: bool = True  # jax.checkpoint (spec.remat_policy) around each iteration's stage step
  remat_layers: bool = False  # jax.checkpoint (spec.remat_policy) around each layer

  def __post_init__(self):
    S, M, R, P = self.num_stages, self.num_microbatches, self.num_repeats, self.layers_per_stage
    if min(S, M, R, P) < 1:
      raise ValueError(f"pipeline sizes must be >= 1: stages={S} microbatches={M} repeats={R} layers_per_stage={P}")
    if M < self.delay * (S - 1) + 1:
      raise ValueError(f"{M} microbatches cannot fill {S} stages (need >= {self.delay * (S - 1) + 1})")

  @property
  def delay(self) -> int:
    return 2 if self.delay_activation_forwarding else 1

  @property
  def num_layers(self) -> int:
    return self.num_repeats * self.num_stages * self.layers_per_stage

  @property
  def num_iterations(self) -> int:
    return self.num_microbatches * self.num_repeats + self.delay * (self.num_stages - 1)


def _active():
  """(mesh, normalised rules) of `sharding.activation_sharding`, or (None, ()) outside it."""
  return sharding_lib._ACTIVE.mesh, sharding_lib._ACTIVE.rules


def _constrain(x, pspec_fn: Callable[[tuple], PartitionSpec]):
  mesh, rules = _active()
  if mesh is None or not rules:
    return x
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, pspec_fn(rules)))


def _constrain_stage_act(x_SbTD):
  """[S, b, T, D]: S on 'stage', the rest as the decoder's activations."""
  return _constrain(x_SbTD, lambda rules: PartitionSpec(STAGE_AXIS, *linen_spmd.logical_to_mesh_axes(ACT_BTD, rules)))


def _layer_names(state, axis: int | None) -> list:
  """Per leaf of `state` (in jax.tree.leaves order): the logical names of a layer parameter with the 'layers' axis
  first (axis None: not stacked yet, a leading None is added), or None without names."""
  out = []
  for v in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, nnx.Variable)):
    n = tuple(v.get_metadata().get("out_sharding") or ()) if isinstance(v, nnx.Variable) else ()
    out.append(None if not n else (None, *n) if axis is None else (n[axis], *n[:axis], *n[axis + 1:]))
  return out


def _constrain_weights_RSP(w_RSP, names_L, drop_fsdp: bool):
  """[R, S, P, ...] layer weights: S on 'stage' (the 'layers' rule); other dims as their logical names say,
  without the fsdp axes when `drop_fsdp` (all-gathered once)."""
  if names_L is None:
    return _constrain(w_RSP, lambda rules: PartitionSpec(None, STAGE_AXIS))

  def pspec(rules):
    if drop_fsdp:
      rules = tuple((k, _drop(v, FSDP_AXES)) for k, v in rules)
    return linen_spmd.logical_to_mesh_axes((None, *names_L[:1], None, *names_L[1:]), rules)

  return _constrain(w_RSP, pspec)


def _drop(mesh_axes, drop):
  if mesh_axes is None:
    return None
  axes = (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes)
  axes = tuple(a for a in axes if a not in drop)
  return None if not axes else axes[0] if len(axes) == 1 else axes


def _stacked_layer_state(decoder):
  """(graphdef of one layer, its parameters stacked on a leading L axis, per-leaf logical names)."""
  spec = decoder.spec
  if len(decoder.stacks) != 1 or decoder.stacks[0].cycle != 1:
    raise NotImplementedError("pipeline parallelism with several layer stacks (e.g. deepseek's dense + MoE layers) "
                              "or layers that repeat with a period (interleaved MoE, NoPE) is not supported yet")
  layers = getattr(decoder, decoder.stacks[0].name)
  if spec.scan_layers:
    graphdef, state = nnx.split(layers)
    names = _layer_names(state, spec.param_scan_axis)
    return graphdef, jax.tree.map(lambda a: jnp.moveaxis(a, spec.param_scan_axis, 0), state), names
  splits = [nnx.split(layer) for layer in layers]
  graphdef = splits[0][0]
  names = _layer_names(splits[0][1], None)
  return graphdef, jax.tree.map(lambda *a: jnp.stack(a), *[s for _, s in splits]), names


def run_pipelined(decoder, x_BTD: jax.Array, positions_BT: jax.Array, segment_ids_BT: jax.Array,
                  dropout_key: jax.Array | None) -> jax.Array:
  """The decoder layers of `decoder` (a models.decoder.Decoder) over x_BTD, pipelined: returns y_BTD."""
  spec = decoder.spec
  p: PipelineSpec = spec.pipeline
  S, M, R, P, d = p.num_stages, p.num_microbatches, p.num_repeats, p.layers_per_stage, p.delay
  B, T, D = x_BTD.shape
  if B % M:
    raise ValueError(f"batch {B} is not divisible by num_pipeline_microbatches={M}")
  b = B // M
  graphdef, state_L, names = _stacked_layer_state(decoder)
  L = jax.tree.leaves(state_L)[0].shape[0]
  if L != p.num_layers:
    raise ValueError(f"{L} layers != stages {S} x repeats {R} x layers per stage {P}")
  w_RSP = jax.tree.map(lambda a: a.reshape(R, S, P, *a.shape[1:]), state_L)
  leaves, treedef = jax.tree.flatten(w_RSP)
  w_RSP = treedef.unflatten([_constrain_weights_RSP(a, n, p.fsdp_ag_once) for a, n in zip(leaves, names)])
  takes_index = family_of(spec).layer_index_at_call

  def layer_apply(w, x_bTD, pos_bT, seg_bT, key, i):
    layer = nnx.merge(graphdef, w)
    extra = {"layer_index": i} if takes_index else {}
    y_bTD, _ = layer(x_bTD, pos_bT, seg_bT, dropout_key=key, cache=None, **extra)
    if moe_lib.pop_layer_aux(layer):
      raise NotImplementedError("pipeline parallelism with MoE layers (auxiliary losses) is not supported yet")
    return y_bTD

  if p.remat_layers:
    layer_apply = maybe_remat(layer_apply, spec.remat_spec, prevent_cse=not p.scan_layers_per_stage)

  def one_stage(w_P, x_bTD, pos_bT, seg_bT, r, s, m):
    """Stage s's P layers of repeat r on microbatch m."""
    def step(x_bTD, j, w):
      i = (r * S + s) * P + j  # the global layer index
      key = None if dropout_key is None else jax.random.fold_in(jax.random.fold_in(dropout_key, m), i)
      return layer_apply(w, x_bTD, pos_bT, seg_bT, key, i)

    if p.scan_layers_per_stage:
      x_bTD, _ = jax.lax.scan(lambda x, xs: (step(x, *xs), None), x_bTD, (jnp.arange(P), w_P))
      return x_bTD
    for j in range(P):
      x_bTD = step(x_bTD, j, jax.tree.map(lambda a: a[j], w_P))
    return x_bTD

  mesh, _ = _active()
  spmd = STAGE_AXIS if mesh is not None and STAGE_AXIS in mesh.axis_names else None

  def stage_step(w_RSP, pos_MbT, seg_MbT, t, in_SbTD):
    """All stages' work at iteration t: [S, b, T, D] -> [S, b, T, D]."""
    s_S = jnp.arange(S)
    k_S = t - d * s_S
    m_S = jnp.mod(k_S, M)
    r_S = jnp.clip(k_S // M, 0, R - 1)
    w_SP = jax.vmap(lambda w, r: jax.tree.map(lambda a: a[r], w), in_axes=(1, 0))(w_RSP, r_S)  # repeat r's weights
    return jax.vmap(one_stage, spmd_axis_name=spmd)(w_SP, in_SbTD, pos_MbT[m_S], seg_MbT[m_S], r_S, s_S, m_S)

  if p.remat_iterations:
    stage_step = maybe_remat(stage_step, spec.remat_spec, prevent_cse=not p.scan_iterations)

  x_MbTD = x_BTD.reshape(M, b, T, D)
  pos_MbT = positions_BT.reshape(M, b, T)
  seg_MbT = segment_ids_BT.reshape(M, b, T)

  def iteration(carry, t):
    prev, buf_MbTD = carry  # prev: stage outputs of iterations t-1 .. t-d
    in_SbTD = jnp.roll(prev[-1], 1, axis=0)  # stage s takes stage s-1's output from iteration t-d
    in_SbTD = in_SbTD.at[0].set(jax.lax.dynamic_index_in_dim(buf_MbTD, jnp.mod(t, M), keepdims=False))
    out_SbTD = _constrain_stage_act(stage_step(w_RSP, pos_MbT, seg_MbT, t, _constrain_stage_act(in_SbTD)))
    k_last = t - d * (S - 1)
    m_last = jnp.mod(k_last, M)
    old = jax.lax.dynamic_index_in_dim(buf_MbTD, m_last, keepdims=False)
    new = jnp.where(k_last >= 0, out_SbTD[S - 1], old)
    buf_MbTD = jax.lax.dynamic_update_index_in_dim(buf_MbTD, new, m_last, 0)
    return ((out_SbTD, *prev[:-1]), buf_MbTD), None

  zeros = _constrain_stage_act(jnp.zeros((S, b, T, D), x_BTD.dtype))
  carry = ((zeros,) * d, x_MbTD)
  if p.scan_iterations:
    carry, _ = jax.lax.scan(iteration, carry, jnp.arange(p.num_iterations))
  else:
    for t in range(p.num_iterations):
      carry, _ = iteration(carry, jnp.int32(t))
  return sharding_lib.constrain(carry[1].reshape(B, T, D), ACT_BTD)
