"""GPT-3 decoder block (decoder_block 'gpt3', MaxText's presets gpt3-{52k,6b,22b,175b}) and its Hugging Face
mapping onto `GPT2LMHeadModel`, the public architecture closest to it.

The block (MaxText's Gpt3DecoderLayer):
  x + attn(LayerNorm(x)), then + mlp(.), where the MLP owns its pre-norm (`mlp.mlp_layer_norm`, as MaxText's
  MlpBlock(use_pre_norm=True)) and is non-gated, `mlp_activations: [gelu]` (tanh approximation = HF gelu_new).
- LayerNorm with scale and bias everywhere (incl. the final `decoder_norm`), float32 reductions; `scale` stores
  the multiplier (init 1) as torch does, where MaxText's Gpt3LayerNorm stores scale - 1 (its checkpoints need +1).
- Attention: biases on q/k/v and on the output projection; no RoPE (`Attention(nope=True)`): learned absolute
  position embeddings `position_embedder.embedding` [trainable_position_size, D] are added to the token
  embeddings (transformer.py). With `fused_qkv` (every preset) one kernel `qkv_proj` [D, 3, N, H] (+ bias
  [3, N, H]) replaces query/key/value; queries are scaled by head_dim ** -0.5. MHA only with fused_qkv.
- Tied output logits (`logits_via_embedding`, normalize_embedding_logits false); `use_iota_embed` makes the
  token lookup a one-hot matmul (same values).

HF GPT2LMHeadModel names -> ours (no transposes: GPT-2's Conv1D weights are stored [in, out] already):
  transformer.wte.weight            token_embedder.embedding               [V, D]
  transformer.wpe.weight            position_embedder.embedding            [P, D] (n_positions = P)
  transformer.h.i.ln_1.weight/bias  decoder.layers.i.pre_self_attention_norm.scale/bias
  transformer.h.i.attn.c_attn.w/b   ....self_attention.qkv_proj.kernel [D, 3, N, H] / bias [3, N, H]
                                    (fused_qkv=false: query/key/value.kernel [D, N, H] / bias [N, H])
  transformer.h.i.attn.c_proj.w/b   ....self_attention.out.kernel [N, H, D] / bias [D]
  transformer.h.i.ln_2.weight/bias  ....mlp.mlp_layer_norm.scale/bias
  transformer.h.i.mlp.c_fc.w/b      ....mlp.wi.kernel [D, F] / bias [F]
  transformer.h.i.mlp.c_proj.w/b    ....mlp.wo.kernel [F, D] / bias [D]
  transformer.ln_f.weight/bias      decoder.decoder_norm.scale/bias
  lm_head.weight                    tied: dropped; untied: decoder.logits_dense.kernel = W.T
What GPT-2 cannot express: head_dim != D / N, GQA, non-gelu activations (refused by `hf_config_from`).
"""

from __future__ import annotations


import jax
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from maxtext_like.models import blocks
from maxtext_like.models.attention import Attention
from maxtext_like.models.family import Family
from maxtext_like.models.hf_registry import HFConfigError, Table, TableMapping
from maxtext_like.models.kv_cache import LayerKV
from maxtext_like.models.linears import DenseGeneral, activation
from maxtext_like.models.norms import LayerNorm
from maxtext_like.models.sharding import ACT_BTD, ACT_BTF, constrain
from maxtext_like.models.spec import ModelSpec


def layer_norm(spec: ModelSpec, rngs: nnx.Rngs) -> LayerNorm:
  return LayerNorm(spec.emb_dim, epsilon=spec.normalization_layer_epsilon, dtype=spec.dtype,
                   weight_dtype=spec.weight_dtype, rngs=rngs)


class Gpt3Mlp(nnx.Module):
  """LayerNorm, then act(x Wi + b) Wo + b (MaxText MlpBlock with use_pre_norm and use_bias)."""

  def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs):
    D, F = spec.emb_dim, spec.mlp_dim
    dense = dict(dtype=spec.dtype, weight_dtype=spec.weight_dtype, precision=spec.matmul_precision,
                 init_scale=spec.dense_init_scale, use_bias=True, rngs=rngs)
    self.act = spec.mlp_activations[0]
    self.mlp_layer_norm = layer_norm(spec, rngs)
    self.wi = DenseGeneral((D,), (F,), ("embed", "mlp"), **dense)
    self.wo = DenseGeneral((F,), (D,), ("mlp", "embed"), **dense)
    self.dropout = nnx.Dropout(spec.dropout_rate)

  def __call__(self, x_BTD: jax.Array, *, dropout_key: jax.Array | None = None) -> jax.Array:
    h_BTD = self.mlp_layer_norm(x_BTD)
    h_BTF = constrain(activation(self.act)(checkpoint_name(self.wi(h_BTD), "mlpwi")), ACT_BTF)
    h_BTF = self.dropout(h_BTF, deterministic=dropout_key is None, rngs=dropout_key)
    return constrain(checkpoint_name(self.wo(h_BTF), "mlpwo"), ACT_BTD)


class Gpt3DecoderLayer(nnx.Module):
  """x + attn(LayerNorm(x)), then + mlp(.) with the MLP's own LayerNorm; dropout on the MLP branch."""

  def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs):
    problems = []
    if len(spec.mlp_activations) != 1:
      problems.append(f"mlp_activations={list(spec.mlp_activations)} must have one entry (non-gated MLP)")
    if spec.fused_qkv and spec.num_kv_heads != spec.num_query_heads:
      problems.append("fused_qkv needs num_kv_heads == num_query_heads")
    if spec.use_qk_norm or spec.attention_bias:
      problems.append("use_qk_norm / attention_bias are not read by gpt3 (its q/k/v always have biases)")
    if problems:
      raise ValueError("decoder_block 'gpt3': " + "; ".join(problems))
    self.pre_self_attention_norm = layer_norm(spec, rngs)
    # biased (optionally fused) q/k/v and output projections; no RoPE: positions are learned embeddings
    self.self_attention = Attention(spec.replace(attention_bias=True).attention_spec, rngs=rngs, out_bias=True,
                                    nope=True)
    self.mlp = Gpt3Mlp(spec, rngs=rngs)
    self.dropout = nnx.Dropout(spec.dropout_rate)

  def __call__(self, x_BTD: jax.Array, positions_BT: jax.Array, segment_ids_BT: jax.Array, *,
               dropout_key: jax.Array | None = None,
               cache: LayerKV | None = None) -> tuple[jax.Array, LayerKV | None]:
    x_BTD = blocks.layer_input(x_BTD)
    attn_BTD, cache = self.self_attention(self.pre_self_attention_norm(x_BTD), positions_BT, segment_ids_BT,
                                          cache=cache)
    x_BTD = x_BTD + attn_BTD
    mlp_key, out_key = blocks.branch_keys(dropout_key)
    mlp_BTD = self.mlp(x_BTD, dropout_key=mlp_key)
    mlp_BTD = blocks.drop(self.dropout, mlp_BTD, out_key)
    return blocks.layer_output(x_BTD + mlp_BTD), cache


# ---- Hugging Face mapping (GPT2LMHeadModel) -----------------------------------------------------------------

# (HF suffix below transformer.h.i, our suffix below decoder.layers.i, kind in hf_registry.KINDS); GPT-2's Conv1D
# weights are [in, out] already, so no transposes
_LAYER_ROWS = (
    ("ln_1.weight", "pre_self_attention_norm.scale", "copy"),
    ("ln_1.bias", "pre_self_attention_norm.bias", "copy"),
    ("attn.c_proj.weight", "self_attention.out.kernel", "o_conv1d"),
    ("attn.c_proj.bias", "self_attention.out.bias", "copy"),
    ("ln_2.weight", "mlp.mlp_layer_norm.scale", "copy"),
    ("ln_2.bias", "mlp.mlp_layer_norm.bias", "copy"),
    ("mlp.c_fc.weight", "mlp.wi.kernel", "copy"),
    ("mlp.c_fc.bias", "mlp.wi.bias", "copy"),
    ("mlp.c_proj.weight", "mlp.wo.kernel", "copy"),
    ("mlp.c_proj.bias", "mlp.wo.bias", "copy"),
    ("attn.bias", None, "drop"),  # causal-mask buffers of older checkpoints
    ("attn.masked_bias", None, "drop"),
)
_QKV = tuple(f"self_attention.{p}" for p in ("query", "key", "value"))
_FUSED_QKV = Table(_LAYER_ROWS, (  # fused_qkv: c_attn [D, 3*N*H] -> qkv_proj [D, 3, N, H]
    ("attn.c_attn.weight", "self_attention.qkv_proj.kernel", "qkv_conv1d"),
    ("attn.c_attn.bias", "self_attention.qkv_proj.bias", "qkv_conv1d"),
))
_SEPARATE_QKV = Table(_LAYER_ROWS, (  # c_attn split into query/key/value [D, N, H] / [D, K, H], joined back
    ("attn.c_attn.weight", tuple(f"{p}.kernel" for p in _QKV), "qkv_conv1d_split"),
    ("attn.c_attn.bias", tuple(f"{p}.bias" for p in _QKV), "qkv_conv1d_split"),
))


class Gpt3HF(TableMapping):
  architectures = ("GPT2LMHeadModel",)
  hf_layers = "transformer.h."
  ignored_suffixes = ()
  global_table = Table((
      ("transformer.wte.weight", "token_embedder.embedding", "copy"),
      ("transformer.wpe.weight", "position_embedder.embedding", "copy"),
      ("transformer.ln_f.weight", "decoder.decoder_norm.scale", "copy"),
      ("transformer.ln_f.bias", "decoder.decoder_norm.bias", "copy"),
      ("lm_head.weight", "decoder.logits_dense.kernel", "T"),  # untied only (tied: dropped)
  ))

  def table_for(self, spec: ModelSpec) -> Table:
    return _FUSED_QKV if spec.fused_qkv else _SEPARATE_QKV

  def model_keys_from_hf(self, c: dict) -> dict:
    problems = []
    act = c.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
      problems.append(f"activation_function={act!r} is not supported (gelu_new = MaxText's gelu)")
    for key, ok in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                    ("reorder_and_upcast_attn", False), ("add_cross_attention", False)):
      if c.get(key, ok) != ok:
        problems.append(f"{key}={c.get(key)!r} is not supported")
    if problems:
      raise HFConfigError("Hugging Face config not supported: " + "; ".join(problems))
    D, N = c["n_embd"], c["n_head"]
    return {
        "decoder_block": "gpt3",
        "base_emb_dim": D,
        "base_num_query_heads": N,
        "base_num_kv_heads": N,
        "head_dim": D // N,
        "base_mlp_dim": c.get("n_inner") or 4 * D,
        "base_num_decoder_layers": c["n_layer"],
        "vocab_size": c["vocab_size"],
        "trainable_position_size": c["n_positions"],
        "normalization_layer_epsilon": float(c.get("layer_norm_epsilon", 1e-5)),
        "mlp_activations": ["gelu"],
        "logits_via_embedding": bool(c.get("tie_word_embeddings", True)),
        "normalize_embedding_logits": False,
        "fused_qkv": True,
        "sliding_window_size": 0,
    }

  def hf_config_from(self, spec: ModelSpec) -> dict:
    D, N, H = spec.emb_dim, spec.num_query_heads, spec.head_dim
    problems = []
    if N * H != D or spec.num_kv_heads != N:
      problems.append(f"GPT-2 needs head_dim * heads == emb_dim and no GQA (got {N} x {H} vs {D}, "
                      f"{spec.num_kv_heads} kv heads)")
    if spec.mlp_activations != ("gelu",):
      problems.append(f"mlp_activations={list(spec.mlp_activations)}: GPT-2 has gelu_new only")
    if spec.trainable_position_size <= 0:
      problems.append("GPT-2 needs learned positions (trainable_position_size > 0)")
    if spec.sliding_window_size or spec.attn_logits_soft_cap or spec.final_logits_soft_cap \
        or spec.query_pre_attn_scalar:
      problems.append("sliding window / soft caps / query_pre_attn_scalar have no GPT-2 counterpart")
    if problems:
      raise HFConfigError("; ".join(problems))
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": spec.vocab_size,
        "n_positions": spec.trainable_position_size,
        "n_embd": D,
        "n_layer": spec.num_decoder_layers,
        "n_head": N,
        "n_inner": spec.mlp_dim,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": spec.normalization_layer_epsilon,
        "tie_word_embeddings": spec.logits_via_embedding,
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
        "scale_attn_weights": True,
        "bos_token_id": None, "eos_token_id": None,
    }


FAMILY = Family(names=("gpt3",), block=Gpt3DecoderLayer, hf=Gpt3HF(), spec_fields=("fused_qkv",),
                final_norm=layer_norm)  # decoder_norm is a LayerNorm with bias
