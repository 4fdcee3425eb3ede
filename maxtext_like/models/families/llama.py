"""Llama decoder layer (pre-norm attention + gated MLP); also 'mistral'.

Mistral is the same block with `sliding_window_size > 0`, which the
attention layer reads from the spec.

Hugging Face `LlamaForCausalLM` weights map onto a loop-layout model
(scan_layers=False) as below (W.T = transposed torch Linear weight); with
this mapping logits match transformers to ~1e-7 in float32, for both
'default' and 'llama3.1' RoPE:

  model.embed_tokens.weight              token_embedder.embedding
  model.layers.i.input_layernorm         decoder.layers.i.pre_self_attention_layer_norm.scale
  model.layers.i.self_attn.q_proj        ....self_attention.query.kernel = W.T.reshape(D, N, H)
  model.layers.i.self_attn.k_proj / v    ....self_attention.key/value.kernel = W.T.reshape(D, K, H)
  model.layers.i.self_attn.o_proj        ....self_attention.out.kernel = W.T.reshape(N, H, D)
  model.layers.i.post_attention_layernorm  decoder.layers.i.post_self_attention_layer_norm.scale
  model.layers.i.mlp.gate/up/down_proj   ....mlp.wi_0 / wi_1 / wo .kernel = W.T
  model.norm.weight                      decoder.decoder_norm.scale
  lm_head.weight                         decoder.logits_dense.kernel = W.T

`LlamaHF` below implements this table for the converter (maxtext_like/convert, docs/convert.md); qwen2.py
and qwen3.py reuse it with q/k/v biases and QK-norm.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
from flax import nnx

from maxtext_like.models import blocks
from maxtext_like.models.attention import Attention
from maxtext_like.models.family import Family
from maxtext_like.models.hf_registry import HFConfigError, Table, TableMapping
from maxtext_like.models.kv_cache import LayerKV
from maxtext_like.models.mlp import MlpBlock
from maxtext_like.models.norms import RMSNorm
from maxtext_like.models.spec import ModelSpec


class LlamaDecoderLayer(nnx.Module):
  """x + attn(norm(x)), then + mlp(norm(.)); dropout on the MLP branch.

  Other families compose it: `attention=` and `mlp=` are constructors `(rngs) -> module` replacing the default
  Attention / MlpBlock (MLA, a MoeBlock), called in parameter order.
  """

  def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs, attention: Callable[[nnx.Rngs], nnx.Module] | None = None,
               mlp: Callable[[nnx.Rngs], nnx.Module] | None = None):
    norm = dict(epsilon=spec.normalization_layer_epsilon, dtype=spec.dtype, weight_dtype=spec.weight_dtype,
                rngs=rngs)
    self.pre_self_attention_layer_norm = RMSNorm(spec.emb_dim, **norm)
    self.self_attention = attention(rngs) if attention is not None else Attention(spec.attention_spec, rngs=rngs)
    self.post_self_attention_layer_norm = RMSNorm(spec.emb_dim, **norm)
    self.mlp = mlp(rngs) if mlp is not None else MlpBlock(spec.mlp_spec, rngs=rngs)
    self.dropout = nnx.Dropout(spec.dropout_rate)

  def __call__(self, x_BTD: jax.Array, positions_BT: jax.Array, segment_ids_BT: jax.Array, *,
               dropout_key: jax.Array | None = None,
               cache: LayerKV | None = None) -> tuple[jax.Array, LayerKV | None]:
    """Dropout is active iff dropout_key is given. Returns (y_BTD, cache)."""
    x_BTD = blocks.layer_input(x_BTD)
    h_BTD = self.pre_self_attention_layer_norm(x_BTD)
    attn_BTD, cache = self.self_attention(h_BTD, positions_BT, segment_ids_BT, cache=cache)
    x_BTD = x_BTD + attn_BTD
    h_BTD = self.post_self_attention_layer_norm(x_BTD)
    mlp_key, out_key = blocks.branch_keys(dropout_key)
    mlp_BTD = blocks.drop(self.dropout, self.mlp(h_BTD, dropout_key=mlp_key), out_key)
    return blocks.layer_output(x_BTD + mlp_BTD), cache


# ---- Hugging Face mapping (see hf_registry for the protocol) ------------------------------------------------

NORM_ROWS = (  # (HF suffix, our suffix, kind in hf_registry.KINDS) below model.layers.i / decoder.layers.i
    ("input_layernorm.weight", "pre_self_attention_layer_norm.scale", "copy"),
    ("post_attention_layernorm.weight", "post_self_attention_layer_norm.scale", "copy"),
)
QKVO_ROWS = (
    ("self_attn.q_proj.weight", "self_attention.query.kernel", "q"),
    ("self_attn.k_proj.weight", "self_attention.key.kernel", "kv"),
    ("self_attn.v_proj.weight", "self_attention.value.kernel", "kv"),
    ("self_attn.o_proj.weight", "self_attention.out.kernel", "o"),
)
QKV_BIAS_ROWS = (  # qwen2, gpt_oss
    ("self_attn.q_proj.bias", "self_attention.query.bias", "q_bias"),
    ("self_attn.k_proj.bias", "self_attention.key.bias", "kv_bias"),
    ("self_attn.v_proj.bias", "self_attention.value.bias", "kv_bias"),
)
QK_NORM_ROWS = (  # qwen3
    ("self_attn.q_norm.weight", "self_attention.query_norm.scale", "copy"),
    ("self_attn.k_norm.weight", "self_attention.key_norm.scale", "copy"),
)
GLOBAL_ROWS = (
    ("model.embed_tokens.weight", "token_embedder.embedding", "copy"),
    ("model.norm.weight", "decoder.decoder_norm.scale", "copy"),
    ("lm_head.weight", "decoder.logits_dense.kernel", "T"),
)


def mlp_rows(hf: str = "mlp.", ours: str = "mlp.") -> tuple:
  """A gated MLP's torch Linear gate_proj / up_proj / down_proj below `hf` <-> wi_0 / wi_1 / wo kernels below `ours`."""
  return ((f"{hf}gate_proj.weight", f"{ours}wi_0.kernel", "T"), (f"{hf}up_proj.weight", f"{ours}wi_1.kernel", "T"),
          (f"{hf}down_proj.weight", f"{ours}wo.kernel", "T"))


# HF llama3 rope_scaling field -> our config key (rope_type=llama3.1)
LLAMA3_ROPE_KEYS = {"factor": "rope_llama31_factor", "low_freq_factor": "rope_llama31_low_freq_factor",
                    "high_freq_factor": "rope_llama31_high_freq_factor",
                    "original_max_position_embeddings": "rope_llama31_original_max_position"}


def rope_theta_and_scaling(hf: dict) -> tuple[float, dict]:
  """(rope_theta, scaling dict) from a config.json in either the v4 (rope_theta, rope_scaling) or v5
  (rope_parameters) form; scaling is {} for plain RoPE."""
  params = dict(hf.get("rope_parameters") or {})
  scaling = dict(hf.get("rope_scaling") or {}) or params
  theta = hf.get("rope_theta", params.get("rope_theta", 10000.0))
  kind = scaling.get("rope_type", scaling.get("type", "default"))
  return float(theta), ({} if kind in (None, "default") else dict(scaling, rope_type=kind))


def llama3_rope_keys(scaling: dict) -> tuple[dict, list[str]]:
  """(config keys, problems) of an HF llama3 rope_scaling dict: rope_type llama3.1 and its four rope_llama31_* keys."""
  missing = [k for k in LLAMA3_ROPE_KEYS if scaling.get(k) is None]
  if missing:
    return {}, [f"rope_scaling of type llama3 lacks {missing}"]
  keys = {ours: float(scaling[hf]) for hf, ours in LLAMA3_ROPE_KEYS.items()}
  keys["rope_llama31_original_max_position"] = int(scaling["original_max_position_embeddings"])
  return {"rope_type": "llama3.1", "rope_use_scale": True, **keys}, []


def llama3_rope_parameters(spec: ModelSpec) -> dict:
  """HF rope_parameters of a spec: llama3 with the spec's rope_llama31_* values, or default."""
  if spec.rope_type == "llama3.1" and spec.rope_use_scale:
    return {"rope_type": "llama3", "rope_theta": float(spec.rope_max_timescale),
            **{hf: getattr(spec, ours) for hf, ours in LLAMA3_ROPE_KEYS.items()}}
  return {"rope_type": "default", "rope_theta": float(spec.rope_max_timescale)}


class LlamaHF(TableMapping):
  """LlamaForCausalLM (llama2/3/3.1/3.3, incl. llama3 rope scaling) and MistralForCausalLM (sliding window)."""

  architectures = ("LlamaForCausalLM", "MistralForCausalLM")
  layer_table = Table(NORM_ROWS, QKVO_ROWS, QKV_BIAS_ROWS, QK_NORM_ROWS, mlp_rows())
  global_table = Table(GLOBAL_ROWS)
  default_tie = False
  qkv_bias = False  # HF attention_bias=True also adds an o_proj bias, which our attention has not

  def decoder_block_for(self, hf: dict) -> str:
    return "mistral" if hf.get("model_type") == "mistral" or "MistralForCausalLM" in (hf.get("architectures") or []) \
        else "llama2"

  def model_keys_from_hf(self, hf: dict) -> dict:
    problems = []
    D, N = hf["hidden_size"], hf["num_attention_heads"]
    keys = {
        "decoder_block": self.decoder_block_for(hf),
        "base_emb_dim": D,
        "base_num_query_heads": N,
        "base_num_kv_heads": hf.get("num_key_value_heads") or N,
        "head_dim": hf.get("head_dim") or D // N,
        "base_mlp_dim": hf["intermediate_size"],
        "base_num_decoder_layers": hf["num_hidden_layers"],
        "vocab_size": hf["vocab_size"],
        "normalization_layer_epsilon": float(hf.get("rms_norm_eps", 1e-6)),
        "mlp_activations": ["silu", "linear"],
        "logits_via_embedding": bool(hf.get("tie_word_embeddings", self.default_tie)),
        "sliding_window_size": 0,
        "rope_type": "default",
    }
    if keys["logits_via_embedding"]:
      keys["normalize_embedding_logits"] = False
    theta, scaling = rope_theta_and_scaling(hf)
    keys["rope_max_timescale"] = int(theta) if float(theta).is_integer() else theta
    if scaling.get("rope_type") == "llama3":
      rope_keys, rope_problems = llama3_rope_keys(scaling)
      keys.update(rope_keys)
      problems += rope_problems
    elif scaling:
      problems.append(f"rope_scaling type {scaling.get('rope_type')!r} is not supported (only llama3)")
    if hf.get("hidden_act", "silu") not in ("silu", "swish"):
      problems.append(f"hidden_act={hf.get('hidden_act')!r} is not supported (only silu)")
    if hf.get("mlp_bias"):
      problems.append("mlp_bias=true is not supported")
    if hf.get("attention_bias") and not self.qkv_bias:
      problems.append("attention_bias=true (q/k/v and o_proj biases) is not supported for this architecture")
    problems += self.family_keys(hf, keys)
    if problems:
      raise HFConfigError("Hugging Face config not supported: " + "; ".join(problems))
    return keys

  def family_keys(self, hf: dict, keys: dict) -> list[str]:
    """Adds family keys to `keys`; returns problems."""
    if keys["decoder_block"] == "mistral":
      keys["sliding_window_size"] = int(hf.get("sliding_window") or 0)
    return []

  def hf_config_from(self, spec: ModelSpec) -> dict:
    mistral = spec.decoder_block == "mistral"
    cfg = {
        "architectures": ["MistralForCausalLM" if mistral else "LlamaForCausalLM"],
        "model_type": "mistral" if mistral else "llama",
        **self._common_config(spec),
        "attention_bias": False,
        "mlp_bias": False,
    }
    if mistral:
      cfg["sliding_window"] = spec.sliding_window_size or None
      del cfg["attention_bias"], cfg["mlp_bias"]
    return cfg

  def _common_config(self, spec: ModelSpec) -> dict:
    if spec.mlp_activations not in (("silu", "linear"), ("swish", "linear")):
      raise HFConfigError(f"mlp_activations={list(spec.mlp_activations)} has no Hugging Face llama counterpart")
    rope = llama3_rope_parameters(spec)
    max_pos = max(spec.max_target_length, 2048)
    if rope["rope_type"] == "llama3":
      max_pos = int(spec.rope_llama31_original_max_position * spec.rope_llama31_factor)
    return {
        "hidden_size": spec.emb_dim,
        "intermediate_size": spec.mlp_dim,
        "num_hidden_layers": spec.num_decoder_layers,
        "num_attention_heads": spec.num_query_heads,
        "num_key_value_heads": spec.num_kv_heads,
        "head_dim": spec.head_dim,
        "vocab_size": spec.vocab_size,
        "rms_norm_eps": spec.normalization_layer_epsilon,
        "hidden_act": "silu",
        "max_position_embeddings": max_pos,
        "tie_word_embeddings": spec.logits_via_embedding,
        "rope_theta": float(spec.rope_max_timescale),
        "rope_scaling": None if rope["rope_type"] == "default" else rope,
        "rope_parameters": rope,
    }


FAMILY = Family(names=("llama2", "mistral"), block=LlamaDecoderLayer, hf=LlamaHF())
