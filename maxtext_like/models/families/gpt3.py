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

import re

import jax
import numpy as np
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from maxtext_like.models import blocks
from maxtext_like.models.attention import Attention
from maxtext_like.models.family import Family
from maxtext_like.models.hf_registry import HFConfigError, HFMapping
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

# HF name inside transformer.h.i -> our name inside decoder.layers.i (kernels and biases keep their shapes
# up to a reshape; c_attn is handled separately).
_LAYER = {
    "ln_1.weight": "pre_self_attention_norm.scale",
    "ln_1.bias": "pre_self_attention_norm.bias",
    "attn.c_proj.weight": "self_attention.out.kernel",
    "attn.c_proj.bias": "self_attention.out.bias",
    "ln_2.weight": "mlp.mlp_layer_norm.scale",
    "ln_2.bias": "mlp.mlp_layer_norm.bias",
    "mlp.c_fc.weight": "mlp.wi.kernel",
    "mlp.c_fc.bias": "mlp.wi.bias",
    "mlp.c_proj.weight": "mlp.wo.kernel",
    "mlp.c_proj.bias": "mlp.wo.bias",
}
_GLOBAL = {
    "transformer.wte.weight": "token_embedder.embedding",
    "transformer.wpe.weight": "position_embedder.embedding",
    "transformer.ln_f.weight": "decoder.decoder_norm.scale",
    "transformer.ln_f.bias": "decoder.decoder_norm.bias",
}
_QKV = ("query", "key", "value")
_HF_LAYER = re.compile(r"transformer\.h\.(\d+)\.(.+)")
_OUR_LAYER = re.compile(r"decoder\.layers\.(\d+)\.(.+)")


def _reshaped(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
  """array reshaped when sizes agree (else unchanged: the converter reports the wrong shape)."""
  return array.reshape(shape) if array.size == int(np.prod(shape)) else array


class Gpt3HF(HFMapping):
  architectures = ("GPT2LMHeadModel",)

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

  def _layer_shape(self, spec: ModelSpec, ours: str):
    D, N, H = spec.emb_dim, spec.num_query_heads, spec.head_dim
    return {"self_attention.out.kernel": (N, H, D)}.get(ours)

  def to_ours(self, spec, hf_name, array):
    if hf_name in _GLOBAL:
      return [(_GLOBAL[hf_name], array)]
    if hf_name == "lm_head.weight":
      return [] if spec.logits_via_embedding else [("decoder.logits_dense.kernel", np.ascontiguousarray(array.T))]
    m = _HF_LAYER.fullmatch(hf_name)
    if not m:
      return None
    i, name = m.group(1), m.group(2)
    prefix = f"decoder.layers.{i}."
    if name in ("attn.bias", "attn.masked_bias"):
      return []  # causal-mask buffers of older checkpoints
    if name in ("attn.c_attn.weight", "attn.c_attn.bias"):
      N, K, H = spec.num_query_heads, spec.num_kv_heads, spec.head_dim
      kind = "kernel" if name.endswith("weight") else "bias"
      lead = array.shape[:-1]  # (D,) for the kernel, () for the bias
      if spec.fused_qkv:
        return [(prefix + f"self_attention.qkv_proj.{kind}", _reshaped(array, (*lead, 3, N, H)))]
      sizes = (N * H, K * H, K * H)
      if array.shape[-1] != sum(sizes):
        return [(prefix + f"self_attention.{p}.{kind}", array) for p in _QKV]  # reported as mis-shaped
      parts = np.split(array, np.cumsum(sizes)[:-1], axis=-1)
      return [(prefix + f"self_attention.{p}.{kind}", np.ascontiguousarray(a).reshape(*lead, n, H))
              for p, a, n in zip(_QKV, parts, (N, K, K))]
    if name not in _LAYER:
      return None
    ours = _LAYER[name]
    shape = self._layer_shape(spec, ours)
    return [(prefix + ours, array if shape is None else _reshaped(array, shape))]

  def to_hf(self, spec, our_path, array):
    inverse_global = {v: k for k, v in _GLOBAL.items()}
    if our_path in inverse_global:
      return [(inverse_global[our_path], array)]
    if our_path == "decoder.logits_dense.kernel":
      return [("lm_head.weight", np.ascontiguousarray(array.T))]
    m = _OUR_LAYER.fullmatch(our_path)
    if not m:
      raise KeyError(our_path)
    i, ours = m.group(1), m.group(2)
    if ours in ("self_attention.qkv_proj.kernel", "self_attention.qkv_proj.bias"):
      kind = "weight" if ours.endswith("kernel") else "bias"
      lead = array.shape[:1] if kind == "weight" else ()
      return [(f"transformer.h.{i}.attn.c_attn.{kind}", array.reshape(*lead, -1))]
    inverse = {v: k for k, v in _LAYER.items()}
    if ours not in inverse:
      raise KeyError(our_path)
    value = array.reshape(-1, array.shape[-1]) if ours == "self_attention.out.kernel" else array
    return [(f"transformer.h.{i}.{inverse[ours]}", value)]

  def to_hf_many(self, spec, items):
    """Unfused query/key/value of one layer are concatenated into c_attn (fused_qkv=false)."""
    pending: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for path, array in items:
      m = re.fullmatch(r"decoder\.layers\.(\d+)\.self_attention\.(query|key|value)\.(kernel|bias)", path)
      if not m:
        yield from self.to_hf(spec, path, array)
        continue
      i, part, kind = m.groups()
      group = pending.setdefault((i, kind), {})
      group[part] = array.reshape(*array.shape[:-2], -1)
      if len(group) == 3:
        del pending[(i, kind)]
        yield (f"transformer.h.{i}.attn.c_attn.{'weight' if kind == 'kernel' else 'bias'}",
               np.concatenate([group[p] for p in _QKV], axis=-1))
    if pending:
      raise KeyError(f"incomplete query/key/value groups: {sorted(pending)}")


FAMILY = Family(names=("gpt3",), block=Gpt3DecoderLayer, hf=Gpt3HF(), spec_fields=("fused_qkv",),
                final_norm=layer_norm)  # decoder_norm is a LayerNorm with bias
