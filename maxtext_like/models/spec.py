"""`ModelSpec`: everything the model needs, with MaxText's flat key names.

The config package builds one from its validated sections; tests build one
directly. Every default makes a tiny float32 llama, so
`ModelSpec(vocab_size=128, emb_dim=64)` is a working model.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax.numpy as jnp
import numpy as np

from maxtext_like.models.choices import (ACTIVATIONS, ATTENTION_KERNELS, ATTENTION_TYPES, MATMUL_PRECISIONS, REMAT_LOCATIONS,  # noqa: F401
                                          REMAT_NAMES, REMAT_POLICIES, ROPE_TYPES)


def _default_remat_locations() -> dict[str, str]:
  # MaxText's defaults: keep the layer input on device, recompute the rest.
  return {name: ("device" if name == "decoder_layer_input" else "remat") for name in REMAT_NAMES}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """What a decoder-only transformer needs; field names are MaxText's."""

  decoder_block: str = "llama2"
  vocab_size: int = 128
  emb_dim: int = 64
  num_query_heads: int = 4
  num_kv_heads: int = 4
  head_dim: int = 16
  mlp_dim: int = 128
  num_decoder_layers: int = 2
  mlp_activations: tuple[str, ...] = ("silu", "linear")
  normalization_layer_epsilon: float = 1e-5
  logits_via_embedding: bool = False
  final_logits_soft_cap: float | None = None
  attn_logits_soft_cap: float | None = None
  sliding_window_size: int = 0  # 0 = global attention
  # Gemma-family options; the defaults keep other blocks unchanged (see models/gemma*.py).
  use_post_attn_norm: bool = False  # RMSNorm on the attention output before the residual add
  use_post_ffw_norm: bool = False  # RMSNorm on the MLP output before the residual add
  query_pre_attn_scalar: float | None = None  # queries scaled by this ** -0.5 (None: head_dim ** -0.5)
  local_rope_max_timescale: int = -1  # > 0: RoPE base of local (sliding-window) layers
  global_rope_max_timescale: int = -1  # > 0: RoPE base of global layers (else rope_max_timescale)
  attention_bias: bool = False  # learned bias on the query/key/value projections (qwen2)
  use_qk_norm: bool = False  # RMSNorm over H of each query and key head, before RoPE (qwen3)
  # GPT-3 (models/gpt3.py); trainable_position_size and use_iota_embed apply to any block.
  fused_qkv: bool = False  # one [D, 3, N, H] q/k/v projection (gpt3)
  trainable_position_size: int = -1  # > 0: learned absolute position embeddings [P, D] added to the tokens
  use_iota_embed: bool = False  # token lookup as a one-hot matmul instead of a gather (same values)
  # Multi-head latent attention (deepseek; models/mla.py), read when attention_type == 'mla'.
  attention_type: str = "global"
  q_lora_rank: int = 0  # 0: queries projected directly, else D -> q_lora_rank -> N x (nope + rope)
  kv_lora_rank: int = 512
  qk_nope_head_dim: int = 128
  qk_rope_head_dim: int = 64
  v_head_dim: int = 128
  mla_naive_kvcache: bool = True  # False: cache the kv latent + rotated k_rope, absorb wkv_b when decoding
  attention_sink: bool = False  # learned per-head logit added to the softmax denominator (gpt_oss)
  mlp_activations_limit: float = -1.0  # > 0: gpt-oss clamped SwiGLU (see models/gpt_oss.py)
  # RoPE
  rope_type: str = "default"
  rope_max_timescale: int = 10_000
  rope_min_timescale: int = 1
  rope_use_scale: bool = True  # apply llama3.1 scaling when rope_type == 'llama3.1'
  rope_linear_scaling_factor: float = 1.0  # 'default' rope: positions / factor
  rope_llama31_factor: float = 8.0
  rope_llama31_low_freq_factor: float = 1.0
  rope_llama31_high_freq_factor: float = 4.0
  rope_llama31_original_max_position: int = 8192
  # YaRN (rope_type == 'yarn'), MaxText's YarnRope keys; see rope.yarn_inv_freq.
  max_position_embeddings: int = 163840
  original_max_position_embeddings: int = 4096
  rope_factor: float = 40.0
  beta_fast: float = 32.0
  beta_slow: float = 1.0
  mscale: float = 1.0  # MLA softmax scale * (0.1 * mscale * ln(rope_factor) + 1) ** 2 (HF's mscale_all_dim)
  rope_interleave: bool = True  # yarn only: rotate pairs (x[2i], x[2i+1]) (DeepSeek) instead of halves
  rope_truncate: bool = True  # yarn only: floor/ceil the correction range
  rope_attention_scaling: bool = False  # yarn only: cos/sin * (0.1 * ln(rope_factor) + 1) (gpt-oss)
  # Regularisation
  dropout_rate: float = 0.0
  enable_dropout: bool = True
  # Numerics
  dtype: Any = jnp.float32  # activations / compute
  weight_dtype: Any = jnp.float32  # parameters
  matmul_precision: str = "default"
  float32_qk_product: bool = False  # cast q and k to fp32 before q.k
  float32_logits: bool = False  # accumulate q.k (attention logits) in fp32
  cast_logits_to_fp32: bool = True  # output logits in fp32
  logits_dot_in_fp32: bool = False  # vocab projection in fp32
  dense_init_scale: float = 1.0
  # Layer stacking and rematerialisation
  scan_layers: bool = True
  param_scan_axis: int = 1
  remat_policy: str = "full"
  remat_locations: dict[str, str] = dataclasses.field(
      default_factory=_default_remat_locations, hash=False
  )
  # Attention kernel
  attention: str = "autoselected"
  flash_block_size: int = 512  # key/value block of the blocked ('flash') kernel (config: sa_block_kv)
  flash_block_q: int = 512  # query block of 'flash' without a KV cache (config: sa_block_q)
  max_target_length: int = 1024  # default KV-cache length
  kv_quant: Any = None  # a models.kv_cache.KVQuant: the KV cache stores quantized keys/values (else None: float)
  # Mixture of experts: a models.moe.MoeSpec (MaxText's MoE keys) for blocks with MoE layers, else None
  moe: Any = None
  # Pipeline parallelism over the 'stage' mesh axis: a models.pipeline.PipelineSpec, else None (training forward only)
  pipeline: Any = None
  # Config keys only this spec's family reads (its Family.config_keys), as (key, value) items; see `option`.
  family_options: tuple[tuple[str, Any], ...] = ()
  # Load-balanced context parallelism (models/load_balance.py): > 1 means the training inputs arrive reordered for
  # this many context shards with `context_reorder_strategy`, and attention masks compare original token indices.
  context_load_balance_shards: int = 1
  context_reorder_strategy: str = "dual_chunk_swap"

  def __post_init__(self):
    # Normalise dtypes ('bfloat16' or jnp.bfloat16 -> np.dtype) so specs compare and hash.
    object.__setattr__(self, "dtype", jnp.dtype(self.dtype))
    object.__setattr__(self, "weight_dtype", jnp.dtype(self.weight_dtype))
    object.__setattr__(self, "mlp_activations", tuple(self.mlp_activations))
    object.__setattr__(self, "remat_locations", {**_default_remat_locations(), **self.remat_locations})
    problems = [p for p in _problems(self) if p]
    if problems:
      from maxtext_like.models.registry import ModelSpecError
      raise ModelSpecError("Invalid ModelSpec: " + "; ".join(problems))

  @property
  def num_query_groups(self) -> int:
    """Query heads per kv head (G in the shape vocabulary)."""
    return self.num_query_heads // self.num_kv_heads

  def option(self, key: str) -> Any:
    """The value of config key `key`, which this spec's family declares in `Family.config_keys`: as configured,
    else its base.yml default. A key the family does not declare is an error (never a silent default)."""
    declared = _family_config_keys(self.decoder_block)
    if key not in declared:
      raise KeyError(f"decoder_block {self.decoder_block!r} declares no config key {key!r} (Family.config_keys: "
                     f"{list(declared)})")
    given = dict(self.family_options)
    if key in given:
      return given[key]
    return _shipped_default(key)

  # The parts each shared layer takes (models/layer_specs.py), built once per spec.
  @functools.cached_property
  def attention_spec(self):
    from maxtext_like.models import layer_specs
    return layer_specs.attention_spec(self)

  @functools.cached_property
  def mlp_spec(self):
    from maxtext_like.models import layer_specs
    return layer_specs.mlp_spec(self)

  @functools.cached_property
  def remat_spec(self):
    from maxtext_like.models import layer_specs
    return layer_specs.remat_spec(self)

  def token_slots(self, length: int) -> np.ndarray:
    """Original index of each position of a training sequence of `length` tokens (identity unless reordered)."""
    from maxtext_like.models import load_balance
    return load_balance.permutation(length, self.context_load_balance_shards, self.context_reorder_strategy)

  def replace(self, **changes) -> "ModelSpec":
    return dataclasses.replace(self, **changes)


# Fields only some families read (listed in their Family's `spec_fields`), with their inert defaults.
FAMILY_FIELDS = {"use_post_attn_norm": False, "use_post_ffw_norm": False, "local_rope_max_timescale": -1,
                 "global_rope_max_timescale": -1, "fused_qkv": False, "attention_type": "global", "attention_sink": False,
                 "mlp_activations_limit": -1.0, "moe": None}


@functools.cache
def _shipped_defaults() -> dict[str, Any]:
  from maxtext_like.config.loader import shipped_defaults
  return shipped_defaults()


def _shipped_default(key: str) -> Any:
  return _shipped_defaults()[key]


def _family_config_keys(name: str) -> tuple[str, ...]:
  from maxtext_like.models.registry import declared  # lazy: families import this module
  d = declared().get(name)
  return () if d is None else d.config_keys


def _family_spec_fields(name: str) -> tuple[str, ...] | None:
  from maxtext_like.models.registry import ModelSpecError, get_family  # lazy: families import this module
  try:
    return get_family(name).spec_fields
  except ModelSpecError:
    return None  # reported when the model is built


def _problems(s: ModelSpec):
  """Yields one message per violated rule."""

  def one_of(name, value, allowed):
    if value not in allowed:
      return f"{name}={value!r} not in {list(allowed)}"
    return None

  for name in ("vocab_size", "emb_dim", "num_query_heads", "num_kv_heads", "head_dim", "mlp_dim",
               "num_decoder_layers", "flash_block_size", "flash_block_q", "max_target_length"):
    if getattr(s, name) <= 0:
      yield f"{name}={getattr(s, name)} must be > 0"
  if s.num_kv_heads > 0 and s.num_query_heads % s.num_kv_heads:
    yield f"num_query_heads={s.num_query_heads} must be a multiple of num_kv_heads={s.num_kv_heads}"
  if s.head_dim % 2:
    yield f"head_dim={s.head_dim} must be even for RoPE"
  if len(s.mlp_activations) not in (1, 2):
    yield f"mlp_activations={s.mlp_activations} must have 1 or 2 entries"
  for act in s.mlp_activations:
    yield one_of("mlp_activations entry", act, ACTIVATIONS)
  yield one_of("attention", s.attention, ATTENTION_KERNELS)
  yield one_of("rope_type", s.rope_type, ROPE_TYPES)
  yield one_of("attention_type", s.attention_type, ATTENTION_TYPES)
  if s.attention_type == "mla":
    for name in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
      if getattr(s, name) <= 0:
        yield f"{name}={getattr(s, name)} must be > 0 for attention_type='mla'"
    if s.q_lora_rank < 0 or s.qk_rope_head_dim % 2:
      yield f"q_lora_rank={s.q_lora_rank} must be >= 0 and qk_rope_head_dim={s.qk_rope_head_dim} even"
  yield one_of("matmul_precision", s.matmul_precision, MATMUL_PRECISIONS)
  yield one_of("remat_policy", s.remat_policy, REMAT_POLICIES)
  for key, where in s.remat_locations.items():
    yield one_of("remat_locations key", key, REMAT_NAMES)
    yield one_of(f"remat_locations[{key!r}]", where, REMAT_LOCATIONS)
  if s.context_load_balance_shards < 1:
    yield f"context_load_balance_shards={s.context_load_balance_shards} must be >= 1"
  yield one_of("context_reorder_strategy", s.context_reorder_strategy, ("dual_chunk_swap", "striped"))
  if s.sliding_window_size < 0:
    yield f"sliding_window_size={s.sliding_window_size} must be >= 0"
  if not 0.0 <= s.dropout_rate < 1.0:
    yield f"dropout_rate={s.dropout_rate} must be in [0, 1)"
  for key, _ in s.family_options:
    if key not in _family_config_keys(s.decoder_block):
      yield f"family option {key!r} is not a config key of decoder_block={s.decoder_block!r}"
  fields = _family_spec_fields(s.decoder_block)
  for name, default in FAMILY_FIELDS.items():  # nothing silently ignored: only families that read them accept them
    if fields is not None and getattr(s, name) != default and name not in fields:
      yield f"{name}={getattr(s, name)!r} is not used by decoder_block={s.decoder_block!r}"
  if s.query_pre_attn_scalar is not None and s.query_pre_attn_scalar <= 0:
    yield f"query_pre_attn_scalar={s.query_pre_attn_scalar} must be > 0 or None"
  for name in ("final_logits_soft_cap", "attn_logits_soft_cap"):
    if getattr(s, name) is not None and getattr(s, name) <= 0:
      yield f"{name}={getattr(s, name)} must be > 0 or None"
