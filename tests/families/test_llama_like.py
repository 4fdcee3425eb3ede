"""The llama-like families (llama2, mistral, qwen2, qwen3) and their MoE kin (mixtral, qwen3_moe): the HF mapping
round-trips one tensor of each kind bit-exactly (per-expert HF tensors <-> slices of our stacked [E, ...] kernels),
and the HF config it writes gives back the model keys. Logits, greedy generation and preset parameter counts vs
transformers: test_parity.py; conversion: convert/test_convert_llama_like.py."""

from __future__ import annotations

import numpy as np
import pytest

from maxtext_like.convert import layout
from maxtext_like.models import ModelSpec
from maxtext_like.models.hf_registry import get_hf_mapping, hf_mappings
from maxtext_like.models.moe import MoeSpec

FAMILIES = ("llama2", "mistral", "qwen2", "qwen3")


@pytest.mark.parametrize("block", sorted(b for b in hf_mappings() if b in FAMILIES))
def test_mapping_round_trips_and_keys(block):
  spec = ModelSpec(decoder_block=block, emb_dim=48, num_query_heads=6, num_kv_heads=2, head_dim=16, mlp_dim=96,
                   vocab_size=64, attention_bias=block == "qwen2", use_qk_norm=block == "qwen3",
                   sliding_window_size=7 if block == "mistral" else 0)
  mapping = get_hf_mapping(block)
  rng = np.random.default_rng(0)
  for path, shape in layout.flat_shapes(spec).items():
    a = rng.standard_normal(shape).astype(np.float32)
    (name, hf_a), = mapping.to_hf(spec, path, a)
    (back_path, back), = mapping.to_ours(spec, name, hf_a)
    assert back_path == path and np.array_equal(back, a)
  keys = mapping.model_keys_from_hf(mapping.hf_config_from(spec))
  assert keys["decoder_block"] == block and keys["base_emb_dim"] == 48 and keys["head_dim"] == 16


@pytest.mark.parametrize("block", ["mixtral", "qwen3_moe"])
def test_moe_mapping_round_trips(block):
  spec = ModelSpec(decoder_block=block, emb_dim=32, num_query_heads=4, num_kv_heads=2, head_dim=8, vocab_size=64,
                   use_qk_norm=block == "qwen3_moe", moe=MoeSpec(num_experts=4, num_experts_per_tok=2, mlp_dim=24,
                                                                  norm_topk_prob=True))
  mapping = get_hf_mapping(block)
  rng = np.random.default_rng(0)
  for path, shape in layout.flat_shapes(spec).items():
    a = rng.standard_normal(shape).astype(np.float32)
    hf = mapping.to_hf(spec, path, a)
    assert len(hf) == (4 if any(f".mlp.{w}" in path for w in ("wi_0", "wi_1", "wo")) else 1)
    rebuilt = np.zeros_like(a)
    for name, hf_a in hf:
      (back_path, back), = mapping.to_ours(spec, name, hf_a)
      base, index = layout.split_slice(back_path)
      assert base == path
      rebuilt[... if index is None else index] = back
    assert np.array_equal(rebuilt, a)
  keys = mapping.model_keys_from_hf(mapping.hf_config_from(spec))
  assert keys["decoder_block"] == block and keys["num_experts"] == 4 and keys["base_moe_mlp_dim"] == 24
