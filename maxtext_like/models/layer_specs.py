"""The small specs the shared layers take: each holds only what its layer reads, under the `ModelSpec` field names.

    spec.attention_spec   AttentionSpec  (Attention, MLA, the kernels; its .rope is the RopeSpec rope.* reads)
    spec.mlp_spec         MlpSpec        (MlpBlock; MoeBlock with its MoeSpec)
    spec.remat_spec       RematSpec      (remat.maybe_remat)

A family's block receives the whole `ModelSpec` (it is the family's own description) and hands each layer its
part; layers never see the model spec. Built once per spec (cached on it).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


def _take(cls, spec, **extra):
  """cls with every field copied by name from `spec`, except those given in `extra`."""
  return cls(**{f.name: extra[f.name] if f.name in extra else getattr(spec, f.name) for f in dataclasses.fields(cls)})


class _Replace:
  def replace(self, **changes):
    return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class RopeSpec(_Replace):
  """Rotary embeddings: the frequency schedule (default, llama3.1 scaling, YaRN) and how it is applied."""

  head_dim: int
  rope_type: str
  rope_max_timescale: int
  rope_min_timescale: int
  rope_use_scale: bool
  rope_linear_scaling_factor: float
  rope_llama31_factor: float
  rope_llama31_low_freq_factor: float
  rope_llama31_high_freq_factor: float
  rope_llama31_original_max_position: int
  max_position_embeddings: int
  original_max_position_embeddings: int
  rope_factor: float
  beta_fast: float
  beta_slow: float
  mscale: float
  rope_interleave: bool
  rope_truncate: bool
  rope_attention_scaling: bool


@dataclasses.dataclass(frozen=True)
class AttentionSpec(_Replace):
  """Self-attention (global, sliding, MLA): projections, kernel, numerics, token order, and its RopeSpec."""

  emb_dim: int
  num_query_heads: int
  num_kv_heads: int
  head_dim: int
  attention: str  # kernel
  flash_block_size: int
  flash_block_q: int
  sliding_window_size: int
  attn_logits_soft_cap: float | None
  query_pre_attn_scalar: float | None
  attention_bias: bool
  use_qk_norm: bool
  fused_qkv: bool
  attention_sink: bool
  normalization_layer_epsilon: float
  float32_qk_product: bool
  float32_logits: bool
  dtype: Any
  weight_dtype: Any
  matmul_precision: str
  dense_init_scale: float
  context_load_balance_shards: int
  context_reorder_strategy: str
  attention_type: str
  q_lora_rank: int
  kv_lora_rank: int
  qk_nope_head_dim: int
  qk_rope_head_dim: int
  v_head_dim: int
  mla_naive_kvcache: bool
  rope: RopeSpec
  pipelined: bool  # the layers run in a pipeline over 'stage' (context attention then falls back to GSPMD)

  def token_slots(self, length: int) -> np.ndarray:
    """Original index of each position of a training sequence of `length` tokens (identity unless reordered)."""
    from maxtext_like.models import load_balance
    return load_balance.permutation(length, self.context_load_balance_shards, self.context_reorder_strategy)


@dataclasses.dataclass(frozen=True)
class MlpSpec(_Replace):
  """The feed-forward block (dense, or each expert of a MoeBlock)."""

  emb_dim: int
  mlp_dim: int
  mlp_activations: tuple[str, ...]
  mlp_activations_limit: float
  dropout_rate: float
  dtype: Any
  weight_dtype: Any
  matmul_precision: str
  dense_init_scale: float


@dataclasses.dataclass(frozen=True)
class RematSpec(_Replace):
  """Which values a decoder layer's backward pass keeps, recomputes or offloads."""

  remat_policy: str
  remat_locations: dict[str, str] = dataclasses.field(hash=False)


def attention_spec(spec) -> AttentionSpec:
  return _take(AttentionSpec, spec, rope=rope_spec(spec), pipelined=spec.pipeline is not None)


def rope_spec(spec) -> RopeSpec:
  return _take(RopeSpec, spec)


def mlp_spec(spec) -> MlpSpec:
  return _take(MlpSpec, spec)


def remat_spec(spec) -> RematSpec:
  return _take(RematSpec, spec)
