"""The tiny random transformers model(s) of every family, with weights at O(1) scale, and our spec for each: the
table families/test_parity.py runs for every registered decoder_block, and the family and convert tests' models.

A case is either spec-first (our ModelSpec; the HF config is the one our mapping writes) or config-first (an HF
config; our spec is what the converter derives from it, through a model.yml and the config system).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

from hf_parity_lib import (hf_config, hf_model_for, hf_model_from, redraw_fan_in, redraw_layernorm, redraw_llama,
                           redraw_llama4, redraw_normal, spec_from_hf)
from maxtext_like.models import ModelSpec


@dataclasses.dataclass(frozen=True)
class Case:
  hf: Callable[[], Any]  # the transformers model, weights redrawn
  spec: Callable[[Any], ModelSpec]  # our spec for it
  layouts: tuple[bool, ...] = (False, True)  # scan_layers values the logits are compared in
  greedy: bool | None = None  # scan_layers of the greedy-generation comparison; None: not in this case
  new_tokens: int = 20
  greedy_hf: Callable[[], Any] | None = None  # the model generation is compared with, when not `hf`
  patches: tuple[tuple[Any, str, Any], ...] = ()  # (object, attribute, value) set while both models run


def spec_first(spec: ModelSpec, redraw, greedy_redraw=None, **kw) -> Case:
  return Case(hf=lambda: redraw(hf_model_for(spec)), spec=lambda hf: spec,
              greedy_hf=greedy_redraw and (lambda: greedy_redraw(hf_model_for(spec))), **kw)


def config_first(architecture: str, config: dict, redraw, *overrides: str, **kw) -> Case:
  return Case(hf=lambda: redraw(hf_model_from(architecture, **config)),
              spec=lambda hf: spec_from_hf(hf_config(hf), *overrides), **kw)


# ---- llama2 / mistral / qwen2 / qwen3 (also the convert tests' models) ----------------------------------------

LLAMA = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
             head_dim=16, vocab_size=256, rms_norm_eps=1e-6)
LLAMA31 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
           "original_max_position_embeddings": 8192}
LLAMA32 = dict(LLAMA31, factor=32.0)  # Llama 3.2 1B/3B


def llama_like(architecture: str, layouts, greedy=None, **config) -> Case:
  return config_first(architecture, {**LLAMA, **config}, redraw_llama, layouts=layouts, greedy=greedy)


# ---- mixtral / qwen3_moe --------------------------------------------------------------------------------------

MOE = dict(LLAMA, hidden_size=32, intermediate_size=48, num_attention_heads=4, num_experts_per_tok=2)


def moe_like(architecture: str, layouts, greedy=None, **config) -> Case:
  return config_first(architecture, {**MOE, **config}, redraw_llama, "megablox=false", layouts=layouts,
                      greedy=greedy)


# ---- gemma / gemma2 / gemma3 ----------------------------------------------------------------------------------

GEMMA_WINDOW = 8  # sliding window of the tiny models; test sequences are longer
GEMMA = dict(vocab_size=128, emb_dim=32, num_query_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=64,
             mlp_activations=("gelu", "linear"), normalization_layer_epsilon=1e-6, logits_via_embedding=True,
             remat_policy="none", attention="dot_product", scan_layers=False, dtype="float32", weight_dtype="float32")
GEMMA_SPECS = {
    "gemma": ModelSpec(decoder_block="gemma", num_decoder_layers=2, **GEMMA),
    # 3 pairs = 6 HF layers; small caps so the soft caps bite; query_pre_attn_scalar != head_dim
    "gemma2": ModelSpec(decoder_block="gemma2", num_decoder_layers=3, sliding_window_size=GEMMA_WINDOW,
                        attn_logits_soft_cap=2.0, final_logits_soft_cap=3.0, use_post_attn_norm=True,
                        use_post_ffw_norm=True, query_pre_attn_scalar=12.0, **GEMMA),
    # 7 layers: local x5, global, local; linear-scaled global RoPE as the 4b+ presets
    "gemma3": ModelSpec(decoder_block="gemma3", num_decoder_layers=7, sliding_window_size=GEMMA_WINDOW,
                        use_post_attn_norm=True, use_post_ffw_norm=True, query_pre_attn_scalar=12.0,
                        rope_max_timescale=1_000_000, local_rope_max_timescale=10_000,
                        rope_linear_scaling_factor=8.0, **GEMMA),
}


def gemma_like(spec: ModelSpec) -> Case:
  # generation: small embeddings, so the tied model does not just repeat a token
  return spec_first(spec, redraw_normal, functools.partial(redraw_normal, embed_std=0.05), greedy=True)


# ---- gpt3 / olmo3 ---------------------------------------------------------------------------------------------

OLMO_WINDOW = 6  # sliding window of the tiny olmo3; test sequences are longer
GPT_OLMO = dict(vocab_size=128, emb_dim=32, num_query_heads=4, num_kv_heads=4, head_dim=8, mlp_dim=64,
                remat_policy="none", attention="dot_product", scan_layers=False, dtype="float32",
                weight_dtype="float32")
GPT_OLMO_SPECS = {
    # fused q/k/v, learned positions, LayerNorm with bias, tied logits
    "gpt3": ModelSpec(decoder_block="gpt3", num_decoder_layers=2, mlp_activations=("gelu",), fused_qkv=True,
                      trainable_position_size=64, logits_via_embedding=True, use_iota_embed=True,
                      normalization_layer_epsilon=1e-5, **GPT_OLMO),
    "gpt3_unfused": ModelSpec(decoder_block="gpt3", num_decoder_layers=2, mlp_activations=("gelu",),
                              trainable_position_size=64, logits_via_embedding=False,
                              normalization_layer_epsilon=1e-5, **GPT_OLMO),
    # no sliding window: OLMo 2
    "olmo2": ModelSpec(decoder_block="olmo3", num_decoder_layers=2, **{**GPT_OLMO, "num_kv_heads": 2},
                       use_qk_norm=True, rope_max_timescale=500_000, normalization_layer_epsilon=1e-6),
    # 5 layers: sliding x3, full, sliding; YaRN (factor 8, attention factor 1.208) on the full layer only, as
    # the olmo3-7b / 32b presets (original context 16 so the ramp covers some of the 4 frequencies)
    "olmo3": ModelSpec(decoder_block="olmo3", num_decoder_layers=5, **{**GPT_OLMO, "num_kv_heads": 2},
                       use_qk_norm=True, sliding_window_size=OLMO_WINDOW, rope_max_timescale=500_000,
                       normalization_layer_epsilon=1e-6, rope_type="yarn", rope_factor=8.0,
                       original_max_position_embeddings=16, max_position_embeddings=128, rope_interleave=False,
                       rope_attention_scaling=True),
}


def gpt_olmo_like(name: str) -> Case:
  # the scanned layout and generation on the main variants only: the unfused gpt3 and OLMo 2 share those paths
  main = name in ("gpt3", "olmo3")
  return spec_first(GPT_OLMO_SPECS[name], redraw_layernorm, functools.partial(redraw_layernorm, embed_std=0.1),
                    layouts=(False, True) if main else (False,), greedy=True if main else None)


# ---- deepseek (MLA + YaRN + MoE) ------------------------------------------------------------------------------

DEEPSEEK_YARN = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "beta_fast": 32,
                 "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707, "rope_theta": 10000.0}
DEEPSEEK = dict(vocab_size=96, hidden_size=32, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=3,
                num_attention_heads=4, num_key_value_heads=4, n_routed_experts=8, num_experts_per_tok=3,
                n_shared_experts=2, first_k_dense_replace=1, kv_lora_rank=16, qk_rope_head_dim=8,
                qk_nope_head_dim=12, v_head_dim=10, n_group=4, topk_group=2, routed_scaling_factor=2.5,
                max_position_embeddings=64, rope_scaling=DEEPSEEK_YARN)
DEEPSEEK_CASES = {  # name -> (architecture, config)
    "v3": ("DeepseekV3ForCausalLM", dict(DEEPSEEK, q_lora_rank=12)),
    "v2_groups": ("DeepseekV2ForCausalLM", dict(DEEPSEEK, q_lora_rank=None, topk_method="group_limited_greedy")),
}

# ---- gpt_oss --------------------------------------------------------------------------------------------------

GPT_OSS = dict(vocab_size=256, hidden_size=32, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, head_dim=8, num_local_experts=4, num_experts_per_tok=2, sliding_window=5,
               max_position_embeddings=64, swiglu_limit=1.5,  # low limit: the clamps are active on O(1) activations
               rope_parameters={"rope_type": "yarn", "factor": 4.0, "beta_fast": 32.0, "beta_slow": 1.0,
                                "truncate": False, "original_max_position_embeddings": 16, "rope_theta": 150000.0})

# ---- llama4 ---------------------------------------------------------------------------------------------------

# Both tiny models have chunked attention (chunk 3) on their RoPE layers, NoPE layers (every 2nd / every 4th) and
# temperature tuning, whose floor_scale is 4 here instead of 8192 (the family's constant is patched, HF reads its
# config) so that it acts within 24 tokens.
LLAMA4 = dict(vocab_size=128, hidden_size=32, intermediate_size=16, intermediate_size_mlp=48, num_hidden_layers=4,
              num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_local_experts=4, rms_norm_eps=1e-5,
              max_position_embeddings=1024, attention_chunk_size=3, attn_temperature_tuning=True, floor_scale=4,
              attn_scale=0.1, tie_word_embeddings=False)
LLAMA4_CASES = {
    # Scout: all layers MoE, top-1, QK norm, llama3 RoPE scaling with low == high (16 / 1 / 1; original 64 so that
    # the scaling acts on head_dim 8)
    "scout": dict(num_experts_per_tok=1, interleave_moe_layer_step=1, no_rope_layer_interval=2, use_qk_norm=True,
                  rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 16.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 1.0, "original_max_position_embeddings": 64}),
    # Maverick: MoE every 2nd layer (dense MLPs of intermediate_size_mlp between), no QK norm, plain RoPE; top-2
    "maverick": dict(num_experts_per_tok=2, interleave_moe_layer_step=2, no_rope_layer_interval=4, use_qk_norm=False,
                     rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
}


def llama4_patches():
  from maxtext_like.models.families import llama4
  return ((llama4, "TEMPERATURE_TUNING", (4.0, 0.1)),)


def llama4_like(name: str, greedy: bool) -> Case:
  return config_first("Llama4ForCausalLM", {**LLAMA4, **LLAMA4_CASES[name]}, redraw_llama4, "max_target_length=48",
                      "max_prefill_predict_length=8", greedy=greedy, new_tokens=10, patches=llama4_patches())


# ---- the table: decoder_block -> {case name: Case} ------------------------------------------------------------

CASES: dict[str, dict[str, Case]] = {
    "llama2": {
        "llama2_gqa3": llama_like("LlamaForCausalLM", (False,), greedy=False),
        "llama3.1_rope": llama_like("LlamaForCausalLM", (True,), rope_theta=500000.0, rope_scaling=LLAMA31,
                                    max_position_embeddings=131072),
        "llama3.2_rope32_tied": llama_like("LlamaForCausalLM", (False,), rope_theta=500000.0, rope_scaling=LLAMA32,
                                           max_position_embeddings=131072, tie_word_embeddings=True),
    },
    "mistral": {"mistral_window": llama_like("MistralForCausalLM", (False, True), greedy=True, sliding_window=7)},
    "qwen2": {"qwen2_bias": llama_like("Qwen2ForCausalLM", (False, True), greedy=False, rope_theta=1e6)},
    "qwen3": {
        "qwen3_tied": llama_like("Qwen3ForCausalLM", (True,), greedy=True, tie_word_embeddings=True),
        "qwen3_untied": llama_like("Qwen3ForCausalLM", (False,), tie_word_embeddings=False),
    },
    "mixtral": {"mixtral": moe_like("MixtralForCausalLM", (False, True), greedy=False, num_local_experts=8)},
    "qwen3_moe": {
        "qwen3_moe": moe_like("Qwen3MoeForCausalLM", (True,), greedy=True, num_experts=8, moe_intermediate_size=24,
                              norm_topk_prob=True),
        "qwen3_moe_unnormalised": moe_like("Qwen3MoeForCausalLM", (False,), num_experts=4, moe_intermediate_size=24,
                                           norm_topk_prob=False),
        "qwen3_moe_sparse_step2": moe_like("Qwen3MoeForCausalLM", (False,), num_experts=4, moe_intermediate_size=24,
                                           norm_topk_prob=True, decoder_sparse_step=2, num_hidden_layers=4),
    },
    **{name: {name: gemma_like(spec)} for name, spec in GEMMA_SPECS.items()},
    "gpt3": {name: gpt_olmo_like(name) for name in ("gpt3", "gpt3_unfused")},
    "olmo3": {name: gpt_olmo_like(name) for name in ("olmo2", "olmo3")},
    "deepseek": {name: config_first(arch, config, redraw_fan_in, "megablox=false", greedy=True)
                 for name, (arch, config) in DEEPSEEK_CASES.items()},
    "gpt_oss": {"gpt_oss": config_first("GptOssForCausalLM", GPT_OSS, functools.partial(redraw_fan_in, scale=1.0),
                                        "megablox=false", greedy=True)},
    "llama4": {"scout": llama4_like("scout", greedy=True), "maverick": llama4_like("maverick", greedy=False)},
}


@functools.cache
def hf_model(block: str, name: str):
  """The case's transformers model, built once per session (tests must not change it)."""
  return CASES[block][name].hf()


@functools.cache
def spec(block: str, name: str) -> ModelSpec:
  return CASES[block][name].spec(hf_model(block, name))
