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
"""

from __future__ import annotations

import jax
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from maxtext_like.models.attention import Attention
from maxtext_like.models.kv_cache import LayerKV
from maxtext_like.models.mlp import MlpBlock
from maxtext_like.models.norms import RMSNorm
from maxtext_like.models.registry import register_decoder_block
from maxtext_like.models.sharding import ACT_BTD, constrain
from maxtext_like.models.spec import ModelSpec


@register_decoder_block("llama2", "mistral")
class LlamaDecoderLayer(nnx.Module):
  """x + attn(norm(x)), then + mlp(norm(.)); dropout on the MLP branch."""

  def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs):
    norm = dict(epsilon=spec.normalization_layer_epsilon, dtype=spec.dtype, weight_dtype=spec.weight_dtype,
                rngs=rngs)
    self.pre_self_attention_layer_norm = RMSNorm(spec.emb_dim, **norm)
    self.self_attention = Attention(spec, rngs=rngs)
    self.post_self_attention_layer_norm = RMSNorm(spec.emb_dim, **norm)
    self.mlp = MlpBlock(spec, rngs=rngs)
    self.dropout = nnx.Dropout(spec.dropout_rate)

  def __call__(self, x_BTD: jax.Array, positions_BT: jax.Array, segment_ids_BT: jax.Array, *,
               dropout_key: jax.Array | None = None,
               cache: LayerKV | None = None) -> tuple[jax.Array, LayerKV | None]:
    """Dropout is active iff dropout_key is given. Returns (y_BTD, cache)."""
    x_BTD = constrain(checkpoint_name(x_BTD, "decoder_layer_input"), ACT_BTD)
    h_BTD = self.pre_self_attention_layer_norm(x_BTD)
    attn_BTD, cache = self.self_attention(h_BTD, positions_BT, segment_ids_BT, cache=cache)
    x_BTD = x_BTD + attn_BTD
    h_BTD = self.post_self_attention_layer_norm(x_BTD)
    mlp_key, out_key = (None, None) if dropout_key is None else tuple(jax.random.split(dropout_key))
    mlp_BTD = self.mlp(h_BTD, dropout_key=mlp_key)
    mlp_BTD = self.dropout(mlp_BTD, deterministic=out_key is None, rngs=out_key)
    return constrain(x_BTD + mlp_BTD, ACT_BTD), cache
