"""Gemma (1) decoder block, the sublayer shared by gemma2/gemma3, and Gemma's Hugging Face mapping.

Gemma quirks (all matched to transformers' GemmaForCausalLM in float32 to ~1e-6):
- GeGLU MLP: `mlp_activations: [gelu, linear]`, gelu with the tanh approximation (HF gelu_pytorch_tanh).
- The token embedding is multiplied by sqrt(emb_dim), rounded to the activation dtype first (as HF does).
- RMSNorm multiplies by (1 + w). Our `scale` parameters store HF's w unchanged and the norm adds 1 in
  float32 (`norm_scale_offset = 1.0`, see norms.py). So conversion is a plain copy that round-trips
  bit-exactly, bf16 weights keep w's precision (storing 1 + w in bf16 would round it to 2^-8), and the
  parameters initialise to 0. (MaxText's own converter stores 1 + w; its checkpoints need `scale - 1`.)
- Tied embeddings (`logits_via_embedding: true`) in every published model; untied (lm_head.weight <->
  decoder.logits_dense.kernel) is mapped too. No biases.
Presets pad vocab_size to 256128 as MaxText does (HF checkpoints have 256000 rows); a checkpoint converted
from HF keeps HF's vocab in its generated model.yml.

HF names -> our loop-layout paths (W.T = transposed torch Linear weight):
  model.embed_tokens.weight                  token_embedder.embedding
  model.layers.i.input_layernorm.weight      decoder.layers.i.pre_self_attention_norm.scale
  model.layers.i.self_attn.q_proj.weight     decoder.layers.i.self_attention.query.kernel = W.T -> [D, N, H]
  model.layers.i.self_attn.k/v_proj.weight   ....self_attention.key/value.kernel = W.T -> [D, K, H]
  model.layers.i.self_attn.o_proj.weight     ....self_attention.out.kernel = W.T -> [N, H, D]
  model.layers.i.post_attention_layernorm    decoder.layers.i.pre_ffw_norm.scale      (gemma 1)
  model.layers.i.mlp.gate/up/down_proj       ....mlp.wi_0 / wi_1 / wo .kernel = W.T
  model.norm.weight                          decoder.decoder_norm.scale
gemma2/gemma3 rename the norms (see the `layer_table` of `GemmaHF` and its subclasses).
"""

from __future__ import annotations


import jax
from flax import nnx

from maxtext_like.models import blocks
from maxtext_like.models.attention import Attention
from maxtext_like.models.family import Family
from maxtext_like.models.families.llama import GLOBAL_ROWS, QKVO_ROWS, mlp_rows
from maxtext_like.models.hf_registry import HFConfigError, Table, TableMapping
from maxtext_like.models.kv_cache import LayerKV
from maxtext_like.models.mlp import MlpBlock
from maxtext_like.models.norms import RMSNorm
from maxtext_like.models.spec import ModelSpec


class GemmaSublayer(nnx.Module):
  """One Gemma transformer layer:
     x + post_attn_norm?(attn(pre_self_attention_norm(x))), then + post_ffw_norm?(mlp(pre_ffw_norm(.))).
  The post norms exist iff spec.use_post_attn_norm / use_post_ffw_norm (gemma2, gemma3)."""

  def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs):
    D = spec.emb_dim
    norm = dict(epsilon=spec.normalization_layer_epsilon, dtype=spec.dtype, weight_dtype=spec.weight_dtype,
                rngs=rngs, scale_offset=1.0)
    self.pre_self_attention_norm = RMSNorm(D, **norm)
    self.self_attention = Attention(spec.attention_spec, rngs=rngs, qk_norm_offset=1.0)
    if spec.use_post_attn_norm:
      self.post_self_attention_norm = RMSNorm(D, **norm)
    self.pre_ffw_norm = RMSNorm(D, **norm)
    self.mlp = MlpBlock(spec.mlp_spec, rngs=rngs)
    if spec.use_post_ffw_norm:
      self.post_ffw_norm = RMSNorm(D, **norm)
    self.dropout = nnx.Dropout(spec.dropout_rate)

  def __call__(self, x_BTD: jax.Array, positions_BT: jax.Array, segment_ids_BT: jax.Array, *,
               dropout_key: jax.Array | None = None, cache: LayerKV | None = None,
               inv_freq: jax.Array | None = None,
               window: jax.Array | int | None = None) -> tuple[jax.Array, LayerKV | None]:
    """Dropout is active iff dropout_key is given; inv_freq/window override the attention's (gemma3)."""
    x_BTD = blocks.layer_input(x_BTD)
    h_BTD = self.pre_self_attention_norm(x_BTD)
    attn_BTD, cache = self.self_attention(h_BTD, positions_BT, segment_ids_BT, cache=cache, inv_freq=inv_freq,
                                          window=window)
    if hasattr(self, "post_self_attention_norm"):
      attn_BTD = self.post_self_attention_norm(attn_BTD)
    x_BTD = x_BTD + attn_BTD
    h_BTD = self.pre_ffw_norm(x_BTD)
    mlp_key, out_key = blocks.branch_keys(dropout_key)
    mlp_BTD = self.mlp(h_BTD, dropout_key=mlp_key)
    if hasattr(self, "post_ffw_norm"):
      mlp_BTD = self.post_ffw_norm(mlp_BTD)
    mlp_BTD = blocks.drop(self.dropout, mlp_BTD, out_key)
    return blocks.layer_output(x_BTD + mlp_BTD), cache


# ---- Hugging Face mapping ----------------------------------------------------------------------------------

PROJECTION_ROWS = (*QKVO_ROWS, *mlp_rows())  # q/k/v/o and MLP as llama; (1 + w) norms store HF's w (copy)


class GemmaHF(TableMapping):
  """GemmaForCausalLM; gemma2/gemma3 subclass it (more norms, layer grouping, config fields)."""

  architectures = ("GemmaForCausalLM",)
  model_type = "gemma"
  layer_table = Table(PROJECTION_ROWS, (
      ("input_layernorm.weight", "pre_self_attention_norm.scale", "copy"),
      ("post_attention_layernorm.weight", "pre_ffw_norm.scale", "copy"),
  ))
  global_table = Table(GLOBAL_ROWS)

  # -- config --
  def num_hf_layers(self, spec: ModelSpec) -> int:
    return spec.num_decoder_layers

  def model_keys_from_hf(self, c: dict) -> dict:
    act = c.get("hidden_activation") or c.get("hidden_act") or "gelu_pytorch_tanh"
    if act not in ("gelu_pytorch_tanh", "gelu"):  # HF Gemma maps hidden_act 'gelu' to the tanh approximation
      raise HFConfigError(f"hidden_activation={act!r}: only gelu_pytorch_tanh is supported")
    if c.get("attention_bias"):
      raise HFConfigError("attention_bias=true is not supported for gemma")
    rope = c.get("rope_parameters") or {}
    return {
        "decoder_block": self.decoder_blocks[0],
        "base_emb_dim": c["hidden_size"],
        "base_num_query_heads": c["num_attention_heads"],
        "base_num_kv_heads": c["num_key_value_heads"],
        "head_dim": c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"],
        "base_mlp_dim": c["intermediate_size"],
        "base_num_decoder_layers": c["num_hidden_layers"],
        "vocab_size": c["vocab_size"],
        "normalization_layer_epsilon": c.get("rms_norm_eps", 1e-6),
        "rope_max_timescale": int(rope.get("rope_theta", c.get("rope_theta", 10000.0))),
        "rope_type": "default",
        "logits_via_embedding": bool(c.get("tie_word_embeddings", True)),
        "sliding_window_size": 0,
        "mlp_activations": ["gelu", "linear"],
    }

  def hf_config_from(self, spec: ModelSpec) -> dict:
    return {
        "architectures": [self.architectures[0]],
        "model_type": self.model_type,
        "vocab_size": spec.vocab_size,
        "hidden_size": spec.emb_dim,
        "intermediate_size": spec.mlp_dim,
        "num_hidden_layers": self.num_hf_layers(spec),
        "num_attention_heads": spec.num_query_heads,
        "num_key_value_heads": spec.num_kv_heads,
        "head_dim": spec.head_dim,
        "hidden_activation": "gelu_pytorch_tanh",
        "rms_norm_eps": spec.normalization_layer_epsilon,
        "rope_parameters": {"rope_type": "default", "rope_theta": float(spec.rope_max_timescale)},
        "tie_word_embeddings": spec.logits_via_embedding,
        "attention_bias": False,
    }


FAMILY = Family(names=("gemma",), block=GemmaSublayer, hf=GemmaHF(), scale_embedding=True, norm_scale_offset=1.0,
                spec_fields=("use_post_attn_norm", "use_post_ffw_norm"))
