"""DeepSeek-V2 / V3 (decoder_block 'deepseek'): MLA attention (models/mla.py) with YaRN RoPE, then a dense MLP
for the first `first_num_dense_layers` layers (stack `dense_layers`) and a `moe.MoeBlock` with shared experts for
the rest (stack `moe_layers`).

Routing: V2 = softmax scores, top-k without renormalisation, optional group-limited greedy (a group scored by its
best expert: `routing_group_score='max'`, chosen here whenever routed_score_func is softmax); V3 = sigmoid
scores + `routed_bias` (HF's e_score_correction_bias) for selection, groups scored by their top-2 sum,
renormalised (norm_topk_prob) and times routed_scaling_factor.

Hugging Face `DeepseekV2ForCausalLM` / `DeepseekV3ForCausalLM` (save_pretrained layout of transformers 5.23);
HF layer i is our `decoder.dense_layers.i` for i < first_num_dense_layers, else `decoder.moe_layers.(i - k)`
(`decoder.layers.i` when there are no dense layers). W.T = transposed torch Linear weight:
  self_attn.q_proj                  self_attention.query.kernel   W.T.reshape(D, N, Hn+Hr)  (q_lora_rank 0)
  self_attn.q_a_proj / q_b_proj     self_attention.wq_a.kernel W.T [D, Q] / wq_b.kernel W.T.reshape(Q, N, Hn+Hr)
  self_attn.q_a_layernorm           self_attention.q_norm.scale
  self_attn.kv_a_proj_with_mqa      self_attention.wkv_a.kernel  W.T [D, R+Hr]
  self_attn.kv_a_layernorm          self_attention.kv_norm.scale
  self_attn.kv_b_proj               self_attention.wkv_b.kernel  W.T.reshape(R, N, Hn+Hv)
  self_attn.o_proj                  self_attention.out.kernel    W.T.reshape(N, Hv, D)
  mlp.{gate,up,down}_proj           mlp.wi_0 / wi_1 / wo .kernel (dense layers)
  mlp.gate.weight                   mlp.gate.kernel W.T [D, E];  mlp.gate.e_score_correction_bias -> mlp.gate.bias
  mlp.experts.e.{gate,up,down}_proj mlp.wi_0[e] / wi_1[e] / wo[e] = W.T
  mlp.shared_experts.{gate,up,down}_proj   mlp.shared_experts.wi_0 / wi_1 / wo .kernel
RoPE dims are copied as they are: our MLA rotates DeepSeek's interleaved pairs itself (`rope_interleave`).
"""

from __future__ import annotations

from flax import nnx

from maxtext_like.models import mla
from maxtext_like.models.family import Family
from maxtext_like.models.hf_registry import HFConfigError, Table, TableMapping
from maxtext_like.models.families.llama import (GLOBAL_ROWS, NORM_ROWS, LlamaDecoderLayer, mlp_rows,
                                               rope_theta_and_scaling)
from maxtext_like.models.moe_block import hf_expert_rows, moe_decoder_layer, moe_layer_stacks
from maxtext_like.models.spec import ModelSpec


def _cache_dims(spec: ModelSpec) -> tuple[int, int, int]:
  if spec.attention_type == "mla":
    return mla.kv_cache_dims(spec.attention_spec)
  return spec.num_kv_heads, spec.head_dim, spec.head_dim


def deepseek_decoder_layer(spec: ModelSpec, *, rngs: nnx.Rngs, moe: bool = True) -> LlamaDecoderLayer:
  """The llama block with MLA (attention_type='mla') and a dense MLP (moe=False) or routed + shared experts."""
  attention = (lambda r: mla.MLA(spec.attention_spec, rngs=r)) if spec.attention_type == "mla" else None
  if not moe:
    return LlamaDecoderLayer(spec, rngs=rngs, attention=attention)
  m = spec.moe
  if m.routed_score_func != "sigmoid" and m.n_routing_groups > 0:  # V2 group_limited_greedy
    spec = spec.replace(moe=m.replace(routing_group_score="max"))
  return moe_decoder_layer(spec, rngs=rngs, attention=attention)


# ---- Hugging Face mapping ----------------------------------------------------------------------------------

# (HF suffix below model.layers.i, our suffix below decoder.{dense_,moe_,}layers.j, kind in hf_registry.KINDS)
_LAYER_TABLE = Table(NORM_ROWS, (
    ("self_attn.q_proj.weight", "self_attention.query.kernel", "mla_q"),
    ("self_attn.q_a_proj.weight", "self_attention.wq_a.kernel", "T"),
    ("self_attn.q_a_layernorm.weight", "self_attention.q_norm.scale", "copy"),
    ("self_attn.q_b_proj.weight", "self_attention.wq_b.kernel", "mla_q_b"),
    ("self_attn.kv_a_proj_with_mqa.weight", "self_attention.wkv_a.kernel", "T"),
    ("self_attn.kv_a_layernorm.weight", "self_attention.kv_norm.scale", "copy"),
    ("self_attn.kv_b_proj.weight", "self_attention.wkv_b.kernel", "mla_kv_b"),
    ("self_attn.o_proj.weight", "self_attention.out.kernel", "mla_o"),
    ("mlp.gate.e_score_correction_bias", "mlp.gate.bias", "copy"),
), mlp_rows(), mlp_rows("mlp.shared_experts.", "mlp.shared_experts."),
    hf_expert_rows("mlp.", {"gate_proj": "wi_0", "up_proj": "wi_1", "down_proj": "wo"}))


def _get(hf: dict, key: str, default=None):
  return hf[key] if hf.get(key) is not None else default


class DeepseekHF(TableMapping):
  """DeepseekV2ForCausalLM (softmax routing, greedy or group-limited greedy) and DeepseekV3ForCausalLM."""

  architectures = ("DeepseekV2ForCausalLM", "DeepseekV3ForCausalLM")
  layer_table, global_table = _LAYER_TABLE, Table(GLOBAL_ROWS)

  def model_keys_from_hf(self, hf: dict) -> dict:
    problems = []
    v3 = hf.get("model_type") == "deepseek_v3" or "DeepseekV3ForCausalLM" in (hf.get("architectures") or [])
    N = hf["num_attention_heads"]
    keys = {
        "decoder_block": "deepseek",
        "base_emb_dim": hf["hidden_size"],
        "base_num_query_heads": N,
        "base_num_kv_heads": _get(hf, "num_key_value_heads", N),
        "head_dim": hf["qk_nope_head_dim"] + hf["qk_rope_head_dim"],
        "base_mlp_dim": hf["intermediate_size"],
        "base_moe_mlp_dim": hf["moe_intermediate_size"],
        "base_num_decoder_layers": hf["num_hidden_layers"],
        "first_num_dense_layers": int(_get(hf, "first_k_dense_replace", 0)),
        "vocab_size": hf["vocab_size"],
        "normalization_layer_epsilon": float(_get(hf, "rms_norm_eps", 1e-6)),
        "mlp_activations": ["silu", "linear"],
        "logits_via_embedding": bool(hf.get("tie_word_embeddings", False)),
        "attention_type": "mla",
        "q_lora_rank": int(_get(hf, "q_lora_rank", 0)),
        "kv_lora_rank": hf["kv_lora_rank"],
        "qk_nope_head_dim": hf["qk_nope_head_dim"],
        "qk_rope_head_dim": hf["qk_rope_head_dim"],
        "v_head_dim": hf["v_head_dim"],
        "num_experts": int(_get(hf, "n_routed_experts", _get(hf, "num_local_experts", 0))),
        "num_experts_per_tok": int(hf["num_experts_per_tok"]),
        "shared_experts": int(_get(hf, "n_shared_experts", 0)),
        "routed_scaling_factor": float(_get(hf, "routed_scaling_factor", 1.0)),
        "rope_interleave": bool(_get(hf, "rope_interleave", True)) if v3 else True,
    }
    if keys["logits_via_embedding"]:
      keys["normalize_embedding_logits"] = False
    if v3:
      keys.update(routed_score_func="sigmoid", routed_bias=True, norm_topk_prob=bool(_get(hf, "norm_topk_prob", True)),
                  n_routing_groups=int(_get(hf, "n_group", 1)), topk_routing_group=int(_get(hf, "topk_group", 1)))
    else:
      keys.update(routed_score_func="softmax", routed_bias=False, norm_topk_prob=False)
      method = _get(hf, "topk_method", "greedy")
      if method == "group_limited_greedy":
        keys.update(n_routing_groups=int(hf["n_group"]), topk_routing_group=int(hf["topk_group"]))
      elif method != "greedy":
        problems.append(f"topk_method={method!r} is not supported (greedy, group_limited_greedy)")
    theta, scaling = rope_theta_and_scaling(hf)
    keys["rope_max_timescale"] = int(theta) if float(theta).is_integer() else theta
    kind = scaling.get("rope_type")
    if kind == "yarn":
      m, m_all = scaling.get("mscale"), scaling.get("mscale_all_dim")
      if scaling.get("attention_factor") is not None or not (m and m_all and float(m) == float(m_all)):
        problems.append(f"yarn rope_scaling needs mscale == mscale_all_dim (no rotary attention factor); got {scaling}")
      factor = scaling["factor"]
      keys.update(rope_type="yarn", rope_factor=int(factor) if float(factor).is_integer() else factor,
                  original_max_position_embeddings=int(scaling["original_max_position_embeddings"]),
                  max_position_embeddings=int(_get(hf, "max_position_embeddings", 163840)),
                  beta_fast=int(scaling.get("beta_fast") or 32), beta_slow=int(scaling.get("beta_slow") or 1),
                  mscale=float(m_all or 1.0), rope_truncate=bool(scaling.get("truncate", True)),
                  rope_attention_scaling=False)
    elif kind:
      problems.append(f"rope_scaling type {kind!r} is not supported (only yarn)")
    else:
      keys["rope_type"] = "default"
    if hf.get("hidden_act", "silu") not in ("silu", "swish"):
      problems.append(f"hidden_act={hf.get('hidden_act')!r} is not supported (only silu)")
    if hf.get("attention_bias") or hf.get("mlp_bias"):
      problems.append("attention_bias / mlp_bias are not supported")
    if int(_get(hf, "moe_layer_freq", 1)) != 1:
      problems.append("moe_layer_freq != 1 is not supported")
    if problems:
      raise HFConfigError("Hugging Face config not supported: " + "; ".join(problems))
    return keys

  def hf_config_from(self, spec: ModelSpec) -> dict:
    m = spec.moe
    if spec.attention_type != "mla" or m is None:
      raise HFConfigError("deepseek checkpoints need attention_type=mla and MoE layers")
    v3 = m.routed_score_func == "sigmoid"
    if v3 != m.routed_bias or (not v3 and m.norm_topk_prob):
      raise HFConfigError("DeepSeek-V3 routes by sigmoid + routed bias, V2 by softmax without renormalisation")
    rope = {"rope_type": "default", "rope_theta": float(spec.rope_max_timescale)}
    if spec.rope_type == "yarn":
      if spec.rope_attention_scaling:
        raise HFConfigError("rope_attention_scaling has no DeepSeek counterpart")
      rope = {"rope_type": "yarn", "rope_theta": float(spec.rope_max_timescale), "factor": float(spec.rope_factor),
              "original_max_position_embeddings": spec.original_max_position_embeddings,
              "beta_fast": float(spec.beta_fast), "beta_slow": float(spec.beta_slow), "mscale": spec.mscale,
              "mscale_all_dim": spec.mscale, "truncate": spec.rope_truncate}
    elif spec.rope_type != "default":
      raise HFConfigError(f"rope_type={spec.rope_type!r} has no DeepSeek counterpart")
    if not spec.rope_interleave and not v3:
      raise HFConfigError("DeepseekV2 always rotates interleaved pairs (rope_interleave=true)")
    groups = m.n_routing_groups if m.n_routing_groups > 0 else 1
    cfg = {
        "architectures": ["DeepseekV3ForCausalLM" if v3 else "DeepseekV2ForCausalLM"],
        "model_type": "deepseek_v3" if v3 else "deepseek_v2",
        "hidden_size": spec.emb_dim, "intermediate_size": spec.mlp_dim, "moe_intermediate_size": m.mlp_dim,
        "num_hidden_layers": spec.num_decoder_layers, "num_attention_heads": spec.num_query_heads,
        "num_key_value_heads": spec.num_kv_heads, "vocab_size": spec.vocab_size,
        "rms_norm_eps": spec.normalization_layer_epsilon, "hidden_act": "silu",
        "max_position_embeddings": spec.max_position_embeddings if spec.rope_type == "yarn" else
        max(spec.max_target_length, 2048),
        "tie_word_embeddings": spec.logits_via_embedding, "attention_bias": False,
        "q_lora_rank": spec.q_lora_rank or None, "kv_lora_rank": spec.kv_lora_rank,
        "qk_nope_head_dim": spec.qk_nope_head_dim, "qk_rope_head_dim": spec.qk_rope_head_dim,
        "v_head_dim": spec.v_head_dim, "n_routed_experts": m.num_experts, "num_experts_per_tok": m.num_experts_per_tok,
        "n_shared_experts": m.shared_experts, "first_k_dense_replace": m.first_num_dense_layers,
        "routed_scaling_factor": m.routed_scaling_factor, "n_group": groups,
        "topk_group": m.topk_routing_group if m.n_routing_groups > 0 else 1,
        "norm_topk_prob": m.norm_topk_prob, "rope_theta": float(spec.rope_max_timescale),
        "rope_scaling": None if rope["rope_type"] == "default" else rope, "rope_parameters": rope,
    }
    if v3:
      cfg["rope_interleave"] = spec.rope_interleave
    else:
      cfg["topk_method"] = "group_limited_greedy" if m.n_routing_groups > 0 else "greedy"
    return cfg


FAMILY = Family(names=("deepseek",), block=deepseek_decoder_layer, hf=DeepseekHF(), moe=True,
                spec_fields=("attention_type", "moe"), layer_stacks=moe_layer_stacks, kv_cache_dims=_cache_dims)



