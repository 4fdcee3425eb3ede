"""The model's own config section: a `ModelSpec` built from the validated config."""

from __future__ import annotations

from maxtext_like.config import Config
from maxtext_like.models import ModelSpec
from maxtext_like.models.choices import REMAT_NAMES
from maxtext_like.models.kv_cache import KVQuant
from maxtext_like.models.moe import MoeSpec
from maxtext_like.models.pipeline import PipelineSpec
from maxtext_like.runtime.kernel_names import attention_kernel, config_notices, say_once


def model_spec(cfg: Config, plan=None) -> ModelSpec:
  """The ModelSpec of `cfg`; with a resolved `plan` (config.resolve.Plan) that has pipeline stages, pipelined."""
  import jax
  m, a, r, d = cfg.model, cfg.attention, cfg.rope, cfg.derived
  remat = cfg.remat
  platform = jax.default_backend()
  # paged: the engine's cache layout; cuDNN names: what runs on this platform
  kernel, note = attention_kernel("autoselected" if a.attention == "paged" else a.attention, platform)
  say_once([note, *config_notices(cfg, platform)])
  return ModelSpec(
      decoder_block=m.decoder_block,
      vocab_size=cfg.tokenizer.vocab_size,
      emb_dim=d.emb_dim,
      num_query_heads=d.num_query_heads,
      num_kv_heads=d.num_kv_heads,
      head_dim=m.head_dim,
      mlp_dim=d.mlp_dim,
      num_decoder_layers=d.num_decoder_layers,
      mlp_activations=tuple(m.mlp_activations),
      normalization_layer_epsilon=m.normalization_layer_epsilon,
      logits_via_embedding=m.logits_via_embedding,
      final_logits_soft_cap=m.final_logits_soft_cap,
      attn_logits_soft_cap=a.attn_logits_soft_cap,
      sliding_window_size=a.sliding_window_size,
      use_post_attn_norm=a.use_post_attn_norm,
      use_post_ffw_norm=a.use_post_ffw_norm,
      query_pre_attn_scalar=a.query_pre_attn_scalar if a.query_pre_attn_scalar > 0 else None,
      local_rope_max_timescale=r.local_rope_max_timescale,
      global_rope_max_timescale=r.global_rope_max_timescale,
      rope_linear_scaling_factor=r.rope_linear_scaling_factor,
      attention_bias=m.attention_bias,
      use_qk_norm=a.use_qk_norm,
      fused_qkv=m.fused_qkv,
      trainable_position_size=r.trainable_position_size,
      use_iota_embed=r.use_iota_embed,
      rope_type=r.rope_type,
      attention_type=a.attention_type,
      attention_sink=a.attention_sink,
      mlp_activations_limit=m.mlp_activations_limit,
      **({k: getattr(a, k) for k in ("q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim",
                                      "v_head_dim", "mla_naive_kvcache")} if a.attention_type == "mla" else {}),
      **{k: getattr(r, k) for k in ("max_position_embeddings", "original_max_position_embeddings", "rope_factor",
                                     "beta_fast", "beta_slow", "mscale", "rope_interleave", "rope_truncate",
                                     "rope_attention_scaling")},
      rope_max_timescale=r.rope_max_timescale,
      rope_min_timescale=r.rope_min_timescale,
      rope_use_scale=r.rope_use_scale,
      rope_llama31_factor=r.rope_llama31_factor,
      rope_llama31_low_freq_factor=r.rope_llama31_low_freq_factor,
      rope_llama31_high_freq_factor=r.rope_llama31_high_freq_factor,
      rope_llama31_original_max_position=r.rope_llama31_original_max_position,
      dropout_rate=cfg.training.dropout_rate,
      enable_dropout=cfg.training.enable_dropout,
      dtype=cfg.dtypes.dtype,
      weight_dtype=cfg.dtypes.weight_dtype,
      matmul_precision=cfg.dtypes.matmul_precision,
      float32_qk_product=a.float32_qk_product,
      float32_logits=a.float32_logits,
      cast_logits_to_fp32=m.cast_logits_to_fp32,
      logits_dot_in_fp32=m.logits_dot_in_fp32,
      dense_init_scale=m.dense_init_scale,
      scan_layers=cfg.mesh.scan_layers,
      param_scan_axis=cfg.mesh.param_scan_axis,
      remat_policy=remat.remat_policy,
      remat_locations={k: getattr(remat, k) for k in REMAT_NAMES},
      attention=kernel,
      flash_block_q=a.sa_block_q,
      flash_block_size=a.sa_block_kv,
      max_target_length=cfg.inference.max_target_length,
      kv_quant=kv_quant(cfg),
      moe=moe_spec(cfg),
      family_options=family_options(cfg),
      pipeline=pipeline_spec(cfg, plan),
      **context_load_balance(cfg, plan),
  )


def kv_quant(cfg: Config) -> KVQuant | None:
  """The KV cache's storage (quantize_kvcache, kv_quant_dtype, kv_quant_axis); None keeps it float."""
  q = cfg.quantization
  return KVQuant(q.kv_quant_dtype, q.kv_quant_axis) if q.quantize_kvcache else None


def family_options(cfg: Config) -> tuple[tuple[str, object], ...]:
  """The config keys the family declares (`Family.config_keys`, models/registry.py) with their values."""
  from maxtext_like.models import registry
  d = registry.declared().get(cfg.model.decoder_block)
  return () if d is None else tuple((key, cfg.get(key)) for key in d.config_keys)


def context_load_balance(cfg: Config, plan) -> dict:
  """Spec fields of load-balanced context parallelism (models/load_balance.py): training over a context axis > 1."""
  shards = plan.axis_size("context") if plan is not None else 1
  if shards <= 1 or not cfg.mesh.context_parallel_load_balance:
    return {}
  from maxtext_like.models import load_balance
  return {"context_load_balance_shards": shards,
          "context_reorder_strategy": load_balance.strategy_of(cfg.mesh.context_parallel_reorder_strategy)}


def pipeline_spec(cfg: Config, plan) -> PipelineSpec | None:
  """The pipeline section with the plan's resolved sizes, or None without pipeline stages."""
  if plan is None or plan.num_pipeline_stages <= 1:
    return None
  p = cfg.pipeline
  return PipelineSpec(
      num_stages=plan.num_pipeline_stages, num_microbatches=plan.num_pipeline_microbatches,
      num_repeats=plan.num_pipeline_repeats, layers_per_stage=p.num_layers_per_pipeline_stage,
      delay_activation_forwarding=p.pipeline_delay_activation_forwarding, fsdp_ag_once=p.pipeline_fsdp_ag_once,
      scan_iterations=p.scan_pipeline_iterations, scan_layers_per_stage=p.scan_layers_per_stage,
      remat_iterations=p.set_remat_policy_on_pipeline_iterations, remat_layers=p.set_remat_policy_on_layers_per_stage)


def moe_spec(cfg: Config) -> MoeSpec | None:
  """The MoE section as a MoeSpec for families declared `moe=True` (models/registry.py), else None."""
  from maxtext_like.models import registry
  if cfg.model.decoder_block not in registry.moe_decoder_blocks():
    return None
  e = cfg.moe
  return MoeSpec(
      mlp_dim=cfg.derived.moe_mlp_dim,
      **{k: getattr(e, k) for k in (
          "num_experts", "num_experts_per_tok", "capacity_factor", "sparse_matmul", "megablox",
          "load_balance_loss_weight", "use_random_routing", "norm_topk_prob", "routed_score_func",
          "routed_scaling_factor", "routed_bias", "routed_bias_update_rate", "n_routing_groups", "topk_routing_group",
          "shared_experts", "first_num_dense_layers", "interleave_moe_layer_step", "float32_weight_sum",
          "float32_gate_logits", "mlp_bias")})
