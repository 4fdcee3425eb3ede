"""Cache-less self-attention (training, eval, scoring): static token indices, a block-sparse flash kernel, and
context parallelism as one `shard_map`.

Without a KV cache every token index is known when tracing: slot order, or the load-balanced order of
models/load_balance.py. The 'flash' kernel then skips key blocks no query of a block can see
(`attention_kernels.block_sparse_flash`), which halves causal attention's work.

When the sequence is sharded (the `context` / `sequence` mesh axes through `activation_length`) and keys/values are
whole sequences (`activation_kv_length` unsharded: the all-gather strategy), the kernel runs per shard inside a
`shard_map`: each shard attends its own queries to the gathered keys and skips by its own token indices, chosen with
`lax.switch` on the shard's position. Causal work per shard is then lopsided unless the sequence was reordered with
`context_parallel_load_balance`; with it every shard does the same work. The other kernels, and layouts the
shard_map does not fit (a dimension that does not divide its mesh axes, pipeline stages), are left to GSPMD.
"""

from __future__ import annotations

import functools
import math

import jax
from jax.sharding import PartitionSpec as P

from maxtext_like.models import attention_kernels, load_balance
from maxtext_like.models.sharding import ACT_BSKH_ATTEND, ACT_BTNH, active_pspec


def self_attention(q_BTNH, k_BTKH, v_BTKH, segment_ids_BT, spec, opts: attention_kernels.AttentionOptions,
                   sinks_N=None) -> jax.Array:
  """out_BTNH of a sequence attending to itself with `spec`'s kernel (`attention`) and token order."""
  B, T = segment_ids_BT.shape
  kernel = attention_kernels.resolve_kernel(spec.attention, T)
  if kernel != "flash":
    q_idx_BT, kv_idx_S = load_balance.attention_indices(spec, B, T)
    return attention_kernels.attend(kernel, q_BTNH, k_BTKH, v_BTKH, q_idx_BT, segment_ids_BT, segment_ids_BT, opts,
                                    sinks_N=sinks_N, kv_idx_S=kv_idx_S)
  slots_T = spec.token_slots(T)
  run = functools.partial(attention_kernels.block_sparse_flash, opts=opts, block_q=spec.flash_block_q,
                          block_kv=spec.flash_block_size)
  layout = sequence_shards(q_BTNH.shape, k_BTKH.shape, spec)
  if layout is None:
    return run(q_BTNH, k_BTKH, v_BTKH, slots_T, slots_T, segment_ids_BT, segment_ids_BT, sinks_N=sinks_N)

  mesh, q_spec, kv_spec, axes = layout
  n = math.prod(mesh.shape[a] for a in axes)
  rows = T // n
  with_sinks = sinks_N is not None

  def branch(c, q, k, v, seg_q, seg_kv, *sinks):
    return run(q, k, v, slots_T[c * rows:(c + 1) * rows], slots_T, seg_q, seg_kv, sinks_N=sinks[0] if sinks else None)

  def local(q, k, v, seg_q, seg_kv, *sinks):
    shard = 0
    for a in axes:  # a dimension split over several mesh axes is split major-to-minor in their order
      shard = shard * mesh.shape[a] + jax.lax.axis_index(a)
    return jax.lax.switch(shard, [functools.partial(branch, c) for c in range(n)], q, k, v, seg_q, seg_kv, *sinks)

  in_specs = (q_spec, kv_spec, kv_spec, P(*q_spec[:2]), P(*kv_spec[:2])) + ((P(q_spec[2]),) if with_sinks else ())
  args = (q_BTNH, k_BTKH, v_BTKH, segment_ids_BT, segment_ids_BT) + ((sinks_N,) if with_sinks else ())
  # check_vma=False: the kernels start scan carries from constants, which the varying-axes check rejects; gradients
  # of the replicated keys/values are still summed over the shards (tests/training compare them with one device).
  return jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=q_spec, check_vma=False)(*args)


def sequence_shards(q_shape, kv_shape, spec):
  """(mesh, q PartitionSpec, kv PartitionSpec, mesh axes of the query sequence) when attention should run per
  sequence shard, else None."""
  found = active_pspec(ACT_BTNH)
  if found is None or spec.pipelined:
    return None
  mesh, q_spec = found
  kv_spec = active_pspec(ACT_BSKH_ATTEND)[1]
  q_spec, kv_spec = (tuple(s) + (None,) * (4 - len(s)) for s in (q_spec, kv_spec))
  axes = tuple(a for a in _axes(q_spec[1]) if mesh.shape[a] > 1)
  if not axes or any(mesh.shape[a] > 1 for a in _axes(kv_spec[1])):
    return None
  for shape, pspec in ((q_shape, q_spec), (kv_shape, kv_spec)):
    if any(size % math.prod(mesh.shape[a] for a in _axes(entry)) for size, entry in zip(shape, pspec)):
      return None
  q_heads, kv_heads = _axes(q_spec[2]), _axes(kv_spec[2])
  if q_heads != kv_heads:  # GQA groups must stay on one device: query and kv heads split over the same axes
    return None
  return mesh, P(*q_spec), P(*kv_spec), axes


def _axes(entry) -> tuple[str, ...]:
  return () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
