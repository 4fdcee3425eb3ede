"""gpt-oss (decoder_block 'gpt_oss'; presets gpt-oss-20b / gpt-oss-120b), as transformers' `GptOssForCausalLM`.

Every layer: x + attn(rmsnorm(x)), then + moe(rmsnorm(.)) (the llama pre-norm layout, all layers MoE), with
- attention: q/k/v *and* o biases (attention_bias, family trait `attention_out_bias`), one learned sink logit per
  query head (attention_sink: it joins every row's softmax denominator, attention_kernels `sinks_N`);
- alternating layers: layer i uses a sliding window of `sliding_window_size` iff i is even (HF's default
  layer_types [sliding, full, sliding, ...]), full attention otherwise. Every layer has the same parameters, so
  the block is one layer type told its index (`takes_layer_index`, as gemma3): static in the loop layout,
  traced under scan (the window is then picked with jnp.where);
- YaRN RoPE in the rotate-half layout (rope_interleave=false, rope_truncate=false) whose cos/sin HF multiplies by
  the attention factor s = 0.1 ln(rope_factor) + 1 (rope_attention_scaling). Both q and k carry s, so the
  logits carry s**2: we rotate without it and scale the queries by head_dim ** -0.5 * s ** 2 instead (same
  values; the KV cache holds unscaled keys);
- MoE (`moe.MoeBlock`): router logits = x W + b (routed_bias; trait `topk_softmax_router`), the top-k experts of
  the logits, weights = softmax over those k logits; experts with biases (mlp_bias) and the clamped GLU (trait
  `moe_glu_alpha` = 1.702, L = mlp_activations_limit):
      g = min(x W0 + b0, L), u = clip(x W1 + b1, -L, L), h = g * sigmoid(1.702 g) * (u + 1), y = h Wo + bo.
  mlp_activations stays [sigmoid, linear] (MaxText's spelling of this GLU).

Hugging Face `GptOssForCausalLM` (save_pretrained layout of transformers 5.23) maps as llama (llama2.py: embed,
norms, q/k/v/o kernels and q/k/v biases, lm_head) plus, per layer i:
  model.layers.i.self_attn.o_proj.bias              decoder.layers.i.self_attention.out.bias    [D]
  model.layers.i.self_attn.sinks                    ....self_attention.sinks                    [N]
  model.layers.i.mlp.router.weight [E, D]           ....mlp.gate.kernel = W.T                   [D, E]
  model.layers.i.mlp.router.bias [E]                ....mlp.gate.bias
  model.layers.i.mlp.experts.gate_up_proj [E, D, 2F] ....mlp.wi_0 = [..., 0::2], mlp.wi_1 = [..., 1::2]
      (gate and up are *interleaved* along the last axis: HF's `gate_up[..., ::2], gate_up[..., 1::2]`)
  model.layers.i.mlp.experts.gate_up_proj_bias [E, 2F] ....mlp.wi_0_bias = [:, 0::2], mlp.wi_1_bias = [:, 1::2]
  model.layers.i.mlp.experts.down_proj [E, F, D]    ....mlp.wo (same layout)
  model.layers.i.mlp.experts.down_proj_bias [E, D]  ....mlp.wo_bias
The fused gate_up tensors need wi_0 and wi_1 together: `to_hf_many` pairs them (`to_hf` of one raises KeyError).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from maxtext_like.models import blocks, rope
from maxtext_like.models.attention import Attention
from maxtext_like.models.family import Family
from maxtext_like.models.hf_registry import HFConfigError, Table
from maxtext_like.models.kv_cache import LayerKV
from maxtext_like.models.families.llama import LlamaHF
from maxtext_like.models.moe import MoeBlock
from maxtext_like.models.norms import RMSNorm
from maxtext_like.models.spec import ModelSpec

SWIGLU_ALPHA = 1.702  # HF GptOssConfig.swiglu_alpha; MaxText hard-codes it too


def is_sliding_layer(index):
  """Python bool for an int index, traced bool for a traced one (HF default layer_types: even layers slide)."""
  return index % 2 == 0


def layer_types(num_layers: int) -> list[str]:
  return ["sliding_attention" if is_sliding_layer(i) else "full_attention" for i in range(num_layers)]


class GptOssDecoderLayer(nnx.Module):
  """Pre-norm attention (sinks, biases, sliding window on even layers) + MoE with clamped-GLU experts."""

  def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs):
    m = spec.moe
    if m is None or m.first_num_dense_layers or m.interleave_moe_layer_step != 1 or m.shared_experts:
      raise ValueError("decoder_block='gpt_oss' needs spec.moe with every layer MoE (first_num_dense_layers=0, "
                       "interleave_moe_layer_step=1) and no shared experts")
    if len(spec.mlp_activations) != 2:
      raise ValueError(f"decoder_block='gpt_oss' needs a gated MLP (mlp_activations [sigmoid, linear]), got "
                       f"{list(spec.mlp_activations)}")
    norm = dict(epsilon=spec.normalization_layer_epsilon, dtype=spec.dtype, weight_dtype=spec.weight_dtype,
                rngs=rngs)
    self.pre_self_attention_layer_norm = RMSNorm(spec.emb_dim, **norm)
    self.self_attention = Attention(spec.attention_spec, rngs=rngs, out_bias=spec.attention_bias)  # HF's attention_bias biases o_proj too
    # YaRN's attention factor on cos/sin (both q and k) == queries scaled by its square
    s = rope.rope_scale_from_spec(spec)
    if s != 1.0:
      base = spec.head_dim ** -0.5 if spec.query_pre_attn_scalar is None else spec.query_pre_attn_scalar ** -0.5
      self.self_attention.options = dataclasses.replace(self.self_attention.options, query_scale=base * s * s)
    self.post_self_attention_layer_norm = RMSNorm(spec.emb_dim, **norm)
    self.mlp = MoeBlock(spec.mlp_spec, spec.moe, rngs=rngs, topk_softmax_router=True, glu_alpha=SWIGLU_ALPHA)
    self.dropout = nnx.Dropout(spec.dropout_rate)
    self.window = spec.sliding_window_size

  def __call__(self, x_BTD: jax.Array, positions_BT: jax.Array, segment_ids_BT: jax.Array, *,
               layer_index: jax.Array | int, dropout_key: jax.Array | None = None,
               cache: LayerKV | None = None) -> tuple[jax.Array, LayerKV | None]:
    sliding = is_sliding_layer(layer_index)
    window = (self.window if sliding else 0) if isinstance(sliding, bool) else jnp.where(sliding, self.window, 0)
    x_BTD = blocks.layer_input(x_BTD)
    h_BTD = self.pre_self_attention_layer_norm(x_BTD)
    attn_BTD, cache = self.self_attention(h_BTD, positions_BT, segment_ids_BT, cache=cache, window=window)
    x_BTD = x_BTD + attn_BTD
    h_BTD = self.post_self_attention_layer_norm(x_BTD)
    mlp_key, out_key = blocks.branch_keys(dropout_key)
    mlp_BTD = self.mlp(h_BTD, dropout_key=mlp_key)
    mlp_BTD = blocks.drop(self.dropout, mlp_BTD, out_key)
    return blocks.layer_output(x_BTD + mlp_BTD), cache


# ---- Hugging Face mapping ----------------------------------------------------------------------------------

class GptOssHF(LlamaHF):
  architectures = ("GptOssForCausalLM",)
  layer_table = Table(LlamaHF.layer_table.rows, (
      ("self_attn.o_proj.bias", "self_attention.out.bias", "copy"),
      ("self_attn.sinks", "self_attention.sinks", "copy"),
      ("mlp.router.weight", "mlp.gate.kernel", "T"),
      ("mlp.router.bias", "mlp.gate.bias", "copy"),
      # gate and up interleaved along the last axis: HF's gate_up[..., ::2], gate_up[..., 1::2]
      ("mlp.experts.gate_up_proj", ("mlp.wi_0", "mlp.wi_1"), "gate_up_interleaved"),
      ("mlp.experts.gate_up_proj_bias", ("mlp.wi_0_bias", "mlp.wi_1_bias"), "gate_up_interleaved"),
      ("mlp.experts.down_proj", "mlp.wo", "copy"),
      ("mlp.experts.down_proj_bias", "mlp.wo_bias", "copy"),
  ))
  qkv_bias = True

  def model_keys_from_hf(self, hf: dict) -> dict:
    problems = []
    D, N = hf["hidden_size"], hf["num_attention_heads"]
    n = hf["num_hidden_layers"]
    types = hf.get("layer_types") or layer_types(n)
    if list(types) != layer_types(n):
      problems.append(f"layer_types={types}: gpt_oss needs alternating [sliding, full, ...] layers")
    if float(hf.get("swiglu_alpha", SWIGLU_ALPHA)) != SWIGLU_ALPHA:
      problems.append(f"swiglu_alpha={hf.get('swiglu_alpha')} is not supported (only {SWIGLU_ALPHA})")
    rp = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    theta = float(rp.get("rope_theta", hf.get("rope_theta", 150000.0)))
    kind = rp.get("rope_type", rp.get("type", "default"))
    keys = {
        "decoder_block": "gpt_oss",
        "base_emb_dim": D,
        "base_num_query_heads": N,
        "base_num_kv_heads": hf.get("num_key_value_heads") or N,
        "head_dim": hf.get("head_dim") or D // N,
        "base_mlp_dim": hf["intermediate_size"],
        "base_moe_mlp_dim": hf["intermediate_size"],
        "base_num_decoder_layers": n,
        "vocab_size": hf["vocab_size"],
        "normalization_layer_epsilon": float(hf.get("rms_norm_eps", 1e-5)),
        "mlp_activations": ["sigmoid", "linear"],
        "mlp_activations_limit": float(hf.get("swiglu_limit", 7.0)),
        "logits_via_embedding": bool(hf.get("tie_word_embeddings", False)),
        "sliding_window_size": int(hf.get("sliding_window") or 0),
        "attention_bias": bool(hf.get("attention_bias", True)),
        "attention_sink": True,
        "routed_bias": True,
        "mlp_bias": True,
        "num_experts": int(hf.get("num_local_experts") or hf["num_experts"]),
        "num_experts_per_tok": int(hf["num_experts_per_tok"]),
        "rope_max_timescale": int(theta) if theta.is_integer() else theta,
        "rope_type": "default",
    }
    if kind == "yarn":
      keys.update(rope_type="yarn", rope_factor=float(rp["factor"]), beta_fast=float(rp.get("beta_fast") or 32),
                  beta_slow=float(rp.get("beta_slow") or 1), rope_interleave=False,
                  rope_truncate=bool(rp.get("truncate", True)), rope_attention_scaling=True,
                  original_max_position_embeddings=int(rp["original_max_position_embeddings"]),
                  max_position_embeddings=int(hf.get("max_position_embeddings", 131072)))
      if rp.get("attention_factor") is not None or rp.get("mscale") or rp.get("mscale_all_dim"):
        problems.append(f"rope_parameters={rp}: attention_factor / mscale are not supported for gpt_oss")
    elif kind not in (None, "default"):
      problems.append(f"rope type {kind!r} is not supported for gpt_oss (yarn or default)")
    if problems:
      raise HFConfigError("Hugging Face config not supported: " + "; ".join(problems))
    return keys

  def hf_config_from(self, spec: ModelSpec) -> dict:
    m = spec.moe
    problems = []
    if m is None or not m.routed_bias or not m.mlp_bias or m.routed_score_func not in ("", "softmax") or \
        m.routed_scaling_factor != 1.0 or m.n_routing_groups > 0 or m.routed_bias_update_rate:
      problems.append("GptOssForCausalLM routes by softmax over the top-k of biased logits (routed_bias, no groups, "
                      "scaling or bias updates) and has expert biases (mlp_bias)")
    if not (spec.attention_bias and spec.attention_sink and spec.mlp_activations_limit > 0):
      problems.append("GptOssForCausalLM has attention biases, sinks and a clamp (attention_bias, attention_sink, "
                      "mlp_activations_limit > 0)")
    if spec.rope_type not in ("yarn", "default") or (spec.rope_type == "yarn" and (
        spec.rope_interleave or not spec.rope_attention_scaling)):
      problems.append("GptOssForCausalLM has rotate-half RoPE, default or YaRN with attention scaling")
    if problems:
      raise HFConfigError("; ".join(problems))
    rope_p = {"rope_type": "default", "rope_theta": float(spec.rope_max_timescale)}
    if spec.rope_type == "yarn":
      rope_p = {"rope_type": "yarn", "rope_theta": float(spec.rope_max_timescale), "factor": float(spec.rope_factor),
                "beta_fast": float(spec.beta_fast), "beta_slow": float(spec.beta_slow),
                "truncate": bool(spec.rope_truncate),
                "original_max_position_embeddings": int(spec.original_max_position_embeddings)}
    return {
        "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss",
        "hidden_size": spec.emb_dim, "intermediate_size": m.mlp_dim, "num_hidden_layers": spec.num_decoder_layers,
        "num_attention_heads": spec.num_query_heads, "num_key_value_heads": spec.num_kv_heads,
        "head_dim": spec.head_dim, "vocab_size": spec.vocab_size, "rms_norm_eps": spec.normalization_layer_epsilon,
        "sliding_window": spec.sliding_window_size or None, "layer_types": layer_types(spec.num_decoder_layers),
        "max_position_embeddings": int(spec.max_position_embeddings) if spec.rope_type == "yarn"
        else max(spec.max_target_length, 2048),
        "tie_word_embeddings": spec.logits_via_embedding, "num_local_experts": m.num_experts,
        "num_experts_per_tok": m.num_experts_per_tok, "swiglu_limit": float(spec.mlp_activations_limit),
        "swiglu_alpha": SWIGLU_ALPHA, "attention_bias": True, "rope_parameters": rope_p,
        "router_aux_loss_coef": m.load_balance_loss_weight, "output_router_logits": False,
    }


FAMILY = Family(names=("gpt_oss",), block=GptOssDecoderLayer, hf=GptOssHF(), moe=True, layer_index_at_call=True,
                spec_fields=("moe", "attention_sink", "mlp_activations_limit"))
