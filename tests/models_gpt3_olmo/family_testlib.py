"""Tiny random transformers GPT-2 / OLMo 2 / OLMo 3 models, our specs for them and their weights loaded into ours."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from maxtext_like.models import ModelSpec, build_model
from maxtext_like.models.hf_registry import state_dict_to_params  # noqa: F401  (generic: any family's mapping)

from hf_parity_lib import hf_logits, hf_model_for, jit, our_logits, our_model, tokens  # noqa: F401  (re-exported)

WINDOW = 6  # sliding window of the tiny olmo3; test sequences are longer
COMMON = dict(vocab_size=128, emb_dim=32, num_query_heads=4, num_kv_heads=4, head_dim=8, mlp_dim=64,
              remat_policy="none", attention="dot_product", scan_layers=False, dtype="float32",
              weight_dtype="float32")

SPECS = {
    # fused q/k/v, learned positions, LayerNorm with bias, tied logits
    "gpt3": ModelSpec(decoder_block="gpt3", num_decoder_layers=2, mlp_activations=("gelu",), fused_qkv=True,
                      trainable_position_size=64, logits_via_embedding=True, use_iota_embed=True,
                      normalization_layer_epsilon=1e-5, **COMMON),
    "gpt3_unfused": ModelSpec(decoder_block="gpt3", num_decoder_layers=2, mlp_activations=("gelu",),
                              trainable_position_size=64, logits_via_embedding=False,
                              normalization_layer_epsilon=1e-5, **COMMON),
    # no sliding window: OLMo 2
    "olmo2": ModelSpec(decoder_block="olmo3", num_decoder_layers=2, **{**COMMON, "num_kv_heads": 2},
                       use_qk_norm=True, rope_max_timescale=500_000, normalization_layer_epsilon=1e-6),
    # 5 layers: sliding x3, full, sliding; YaRN (factor 8, attention factor 1.208) on the full layer only, as
    # the olmo3-7b / 32b presets (original context 16 so the ramp covers some of the 4 frequencies)
    "olmo3": ModelSpec(decoder_block="olmo3", num_decoder_layers=5, **{**COMMON, "num_kv_heads": 2},
                       use_qk_norm=True, sliding_window_size=WINDOW, rope_max_timescale=500_000,
                       normalization_layer_epsilon=1e-6, rope_type="yarn", rope_factor=8.0,
                       original_max_position_embeddings=16, max_position_embeddings=128, rope_interleave=False,
                       rope_attention_scaling=True),
}


def hf_model(spec: ModelSpec, seed: int = 0, std: float = 0.25, embed_std: float = 0.5):
  """A transformers model from our mapping's config (eager attention, float32), weights redrawn: linear
  weights N(0, std^2), norm weights 1 + N(0, 0.2^2), biases N(0, 0.1^2), embeddings N(0, embed_std^2)."""
  model = hf_model_for(spec, seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name or ".ln_" in name:
        p.copy_(1.0 + 0.2 * torch.randn_like(p)) if name.endswith("weight") else p.normal_(0.0, 0.1)
      elif name.endswith("bias"):
        p.normal_(0.0, 0.1)
      else:
        p.normal_(0.0, std)
    model.get_input_embeddings().weight.normal_(0.0, embed_std)
  model.generation_config.bos_token_id = None
  return model


