"""The llama2/mistral/qwen2/qwen3 HF mapping round-trips one tensor of each kind bit-exactly, and the HF config it
writes gives back the model keys. (Preset parameter counts: families/test_parity.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from maxtext_like.convert import layout
from maxtext_like.models import ModelSpec
from maxtext_like.models.hf_registry import get_hf_mapping, hf_mappings

FAMILIES = ("llama2", "mistral", "qwen2", "qwen3")


@pytest.mark.parametrize("block", sorted(b for b in hf_mappings() if b in FAMILIES))  # others: tests/moe, tests/mla, ...
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
