"""Tiny random DeepSeek / gpt-oss models in transformers and ours, with weights converted through the HF mapping."""

from __future__ import annotations

import numpy as np
import torch
from flax import nnx

from maxtext_like.models import build_model
from maxtext_like.models.hf_registry import get_hf_mapping
from maxtext_like.models.moe import MoeSpec
from maxtext_like.models.spec import ModelSpec

MOE_KEYS = ("num_experts", "num_experts_per_tok", "norm_topk_prob", "routed_score_func", "routed_scaling_factor",
            "routed_bias", "n_routing_groups", "topk_routing_group", "shared_experts", "first_num_dense_layers")
SPEC_KEYS = ("attention_type", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
             "rope_type", "rope_max_timescale", "rope_factor", "original_max_position_embeddings",
             "max_position_embeddings", "beta_fast", "beta_slow", "mscale", "rope_interleave", "rope_truncate",
             "rope_attention_scaling", "sliding_window_size", "attention_bias", "attention_sink",
             "mlp_activations_limit", "head_dim", "logits_via_embedding", "normalization_layer_epsilon")


def spec_from_hf(hf_cfg: dict, **overrides) -> ModelSpec:
  """Our ModelSpec from a config.json dict, through the family's model_keys_from_hf (as the converter does)."""
  from maxtext_like.models.hf_registry import mapping_for_architecture
  keys = mapping_for_architecture(hf_cfg["architectures"][0]).model_keys_from_hf(hf_cfg)
  moe = MoeSpec(mlp_dim=keys.get("base_moe_mlp_dim", keys["base_mlp_dim"]),
                **{k: keys[k] for k in MOE_KEYS if k in keys})
  spec = ModelSpec(decoder_block=keys["decoder_block"], vocab_size=keys["vocab_size"], emb_dim=keys["base_emb_dim"],
                   num_query_heads=keys["base_num_query_heads"], num_kv_heads=keys["base_num_kv_heads"],
                   mlp_dim=keys["base_mlp_dim"], num_decoder_layers=keys["base_num_decoder_layers"],
                   mlp_activations=tuple(keys["mlp_activations"]), moe=moe,
                   **{k: keys[k] for k in SPEC_KEYS if k in keys})
  return spec.replace(**overrides)


def hf_state(model) -> dict[str, np.ndarray]:
  """The tensors save_pretrained would write (per-expert layout), via a real save."""
  import os
  import tempfile

  from maxtext_like.convert.safetensors_io import iter_tensors
  d = tempfile.mkdtemp()
  model.save_pretrained(d)
  out = {}
  for f in sorted(os.listdir(d)):
    if f.endswith(".safetensors"):
      out.update({k: np.array(v, np.float32) for k, v in iter_tensors(os.path.join(d, f))})
  return out


def ours_from_hf(spec: ModelSpec, tensors: dict[str, np.ndarray]):
  """Our model (loop or scanned layout, as spec) with the HF tensors mapped in (handles expert slices)."""
  import re

  from maxtext_like.convert import layout
  mapping = get_hf_mapping(spec.decoder_block)
  flat: dict[str, np.ndarray] = {}
  loop = spec.replace(scan_layers=False)
  shapes = layout.flat_shapes(loop)
  for name, a in tensors.items():
    produced = mapping.to_ours(loop, name, a)
    assert produced is not None, name
    for path, arr in produced:
      path, idx = layout.split_slice(path)
      if idx is None:
        flat[path] = arr
      else:
        flat.setdefault(path, np.zeros(shapes[path], np.float32))[idx] = arr
  assert set(flat) == set(shapes), (set(shapes) - set(flat), set(flat) - set(shapes))
  if spec.scan_layers:
    stacked: dict[str, list] = {}
    for path in sorted(flat, key=lambda p: [int(t) if t.isdigit() else t for t in p.split(".")]):
      key, layer = layout.stacked_key(spec, path)
      stacked.setdefault(key, []).append(flat[path])
    flat = {k: (np.stack(v, axis=spec.param_scan_axis) if re.match(r"decoder\.\w*layers\.", k) else v[0])
            for k, v in stacked.items()}
  model = build_model(spec, nnx.Rngs(0))
  nnx.update(model, layout.fill_state(spec, flat))
  return model


def randomize(model, seed=0, scale=0.5):
  """Redraws every HF parameter at O(1) scale (norm weights around 1), so the tiny model is not near-identity."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name or "layernorm" in name:
        p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
      else:
        p.copy_(scale * torch.randn(p.shape, generator=g) / max(1, p.shape[-1]) ** 0.5)
    for name, b in model.named_buffers():
      if "e_score_correction_bias" in name:
        b.copy_(0.1 * torch.randn(b.shape, generator=g))
  return model
