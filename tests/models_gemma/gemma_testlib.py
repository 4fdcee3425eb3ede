"""Tiny random transformers Gemma models and their weights loaded into ours."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from maxtext_like.models import ModelSpec, build_model
from maxtext_like.models.hf_registry import state_dict_to_params

from hf_parity_lib import hf_logits, hf_model_for, jit, our_logits, our_model, tokens  # noqa: F401  (re-exported)

WINDOW = 8  # sliding window of the tiny models; test sequences are longer
COMMON = dict(vocab_size=128, emb_dim=32, num_query_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=64,
              mlp_activations=("gelu", "linear"), normalization_layer_epsilon=1e-6, logits_via_embedding=True,
              remat_policy="none", attention="dot_product", scan_layers=False, dtype="float32",
              weight_dtype="float32")

SPECS = {
    "gemma": ModelSpec(decoder_block="gemma", num_decoder_layers=2, **COMMON),
    # 3 pairs = 6 HF layers; small caps so the soft caps bite; query_pre_attn_scalar != head_dim
    "gemma2": ModelSpec(decoder_block="gemma2", num_decoder_layers=3, sliding_window_size=WINDOW,
                        attn_logits_soft_cap=2.0, final_logits_soft_cap=3.0, use_post_attn_norm=True,
                        use_post_ffw_norm=True, query_pre_attn_scalar=12.0, **COMMON),
    # 7 layers: local x5, global, local; linear-scaled global RoPE as the 4b+ presets
    "gemma3": ModelSpec(decoder_block="gemma3", num_decoder_layers=7, sliding_window_size=WINDOW,
                        use_post_attn_norm=True, use_post_ffw_norm=True, query_pre_attn_scalar=12.0,
                        rope_max_timescale=1_000_000, local_rope_max_timescale=10_000,
                        rope_linear_scaling_factor=8.0, **COMMON),
}


def hf_model(spec: ModelSpec, seed: int = 0, std: float = 0.25, embed_std: float = 0.25):
  """A transformers model from our mapping's config, weights drawn N(0, std^2) (embeddings N(0, embed_std^2)) with a fixed seed."""
  model = hf_model_for(spec, seed)
  with torch.no_grad():
    for p in model.parameters():
      p.normal_(0.0, std)
    model.get_input_embeddings().weight.normal_(0.0, embed_std)
  return model


def random_model(spec: ModelSpec, seed: int = 0, scale: float = 0.3):
  """Our model with N(0, scale^2) parameters drawn by numpy (no initializer compiles)."""
  graphdef, state = nnx.split(nnx.eval_shape(lambda: build_model(spec, nnx.Rngs(0))))
  rng = np.random.default_rng(seed)
  return nnx.merge(graphdef, jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) * scale, s.dtype), state))
