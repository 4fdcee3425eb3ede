"""mixtral / qwen3_moe HF mapping: ours -> HF through `to_hf` (our stacked [E, ...] kernels -> per-expert HF tensors)
loads in transformers with our logits (< 1e-4, f32), and the mapping round-trips every tensor bit-exactly. Logits,
greedy generation and preset counts vs transformers: families/test_parity.py; HF -> ours: convert/."""

from __future__ import annotations

import os
import sys

import jax
import numpy as np
import pytest
import transformers
import yaml
from flax import nnx

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "convert"))
from convert_testlib import hf_logits, tokens  # noqa: E402

import parity_cases as pc  # noqa: E402
from hf_parity_lib import hf_config  # noqa: E402
from maxtext_like.api import load_config  # noqa: E402
from maxtext_like.convert import layout, to_hf  # noqa: E402
from maxtext_like.models import ModelSpec, build_model  # noqa: E402
from maxtext_like.models.hf_registry import get_hf_mapping  # noqa: E402
from maxtext_like.models.moe import MoeSpec  # noqa: E402
from maxtext_like.runtime.model_spec import model_spec  # noqa: E402

# decoder_block -> (case in parity_cases, scan_layers of the HF config's converted checkpoint; ours is the other)
TO_HF = {"mixtral": ("mixtral", False), "qwen3_moe": ("qwen3_moe", True)}


@pytest.mark.parametrize("block", list(TO_HF))
def test_ours_to_hf(block, tmp_path):
  import orbax.checkpoint as ocp
  name, scan = TO_HF[block]
  hf_cfg = hf_config(pc.hf_model(block, name))
  arch = hf_cfg["architectures"][0]
  yml = str(tmp_path / "model.yml")
  with open(yml, "w") as f:
    yaml.safe_dump(get_hf_mapping(block).model_keys_from_hf(hf_cfg), f)
  argv = ["base.yml", f"model_name={yml}", f"scan_layers={str(not scan).lower()}", "megablox=false"]
  spec = model_spec(load_config(argv, env={}))
  model = build_model(spec, nnx.Rngs(7))
  params = nnx.state(model, nnx.Param)
  leaves, treedef = jax.tree.flatten(params)
  rng = np.random.default_rng(0)
  params = treedef.unflatten([np.asarray(x) * (1 + 0.2 * rng.standard_normal(x.shape)).astype(np.float32) + 0.05
                              for x in leaves])
  nnx.update(model, params)
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(str(tmp_path / "mine"), {"params": params})
  ckptr.wait_until_finished()
  out = to_hf(str(tmp_path / "out"), [*argv, f"load_parameters_path={tmp_path / 'mine'}"], max_shard_bytes=40_000)
  back = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").float().eval()
  assert type(back).__name__ == arch
  toks = tokens(2, 20, seed=3)
  ours = np.asarray(nnx.jit(lambda m, t: m(t))(model, toks))
  diff = float(np.abs(ours - hf_logits(back, toks)).max())
  print(f"{block} ours->hf: max |logits diff| = {diff:.2e}")
  assert diff < 1e-4


@pytest.mark.parametrize("block", ["mixtral", "qwen3_moe"])
def test_mapping_round_trips(block):
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
