"""Every preset of the llama2/mistral/qwen2/qwen3 families: our parameter count equals transformers' (meta device)
for the same hyperparameters, and the mapping round-trips one tensor of each kind bit-exactly."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest
import yaml

from maxtext_like.api import count_params, load_config
from maxtext_like.config import paths
from maxtext_like.convert import layout
from maxtext_like.models import ModelSpec
from maxtext_like.models.hf_registry import get_hf_mapping, hf_mappings
from maxtext_like.runtime.model_spec import model_spec
from hf_parity_lib import hf_param_count

FAMILIES = ("llama2", "mistral", "qwen2", "qwen3")


def _presets():
  out = []
  for f in sorted(glob.glob(str(paths.configs_dir() / "models" / "*.yml"))):
    with open(f) as fh:
      block = (yaml.safe_load(fh) or {}).get("decoder_block", "llama2")
    if block in FAMILIES and os.path.basename(f) != "default.yml":
      out.append(os.path.basename(f)[:-4])
  return out


PRESETS = _presets()
# Published totals (model cards / HF safetensors metadata).
PUBLISHED = {"llama2-7b": 6_738_415_616, "llama3-8b": 8_030_261_248, "llama3.1-8b": 8_030_261_248,
             "mistral-7b": 7_241_732_096, "qwen2.5-7b": 7_615_616_512, "qwen3-0.6b": 596_049_920}


def test_presets_found():
  assert len(PRESETS) >= 20 and {"llama2-7b", "mistral-7b", "qwen2.5-7b", "qwen3-8b"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_param_count_matches_transformers(name):
  cfg = load_config(["base.yml", f"model_name={name}"], env={})
  ours = count_params(cfg)
  theirs = hf_param_count(model_spec(cfg))
  assert ours == theirs, (name, ours, theirs)
  if name in PUBLISHED:
    assert ours == PUBLISHED[name]


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
