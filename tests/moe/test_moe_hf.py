"""mixtral / qwen3_moe vs transformers: logits < 1e-4 (f32), greedy 20-token generation identical, conversion both
ways through the convert CLI functions (per-expert HF tensors <-> our stacked [E, ...] kernels), every preset's
parameter count equal to transformers' (meta device) and the published totals."""

from __future__ import annotations

import glob
import os
import sys

import numpy as np
import pytest
import transformers
import yaml
from flax import nnx

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "convert"))
from convert_testlib import hf_greedy, hf_logits, hf_model, our_greedy, our_model, tokens  # noqa: E402

from maxtext_like.api import count_params, load_config  # noqa: E402
from maxtext_like.config import paths  # noqa: E402
from maxtext_like.convert import layout, to_hf, to_maxtext  # noqa: E402
from maxtext_like.models import ModelSpec, build_model  # noqa: E402
from maxtext_like.models.hf_registry import get_hf_mapping  # noqa: E402
from maxtext_like.models.moe import MoeSpec  # noqa: E402
from maxtext_like.runtime.model_spec import model_spec  # noqa: E402
from hf_parity_lib import hf_param_count

TINY = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, vocab_size=256, rms_norm_eps=1e-6, num_experts_per_tok=2)
CASES = {  # name -> (config class, architecture, kwargs, scan_layers)
    "mixtral": (transformers.MixtralConfig, "MixtralForCausalLM", dict(num_local_experts=8), False),
    "qwen3_moe": (transformers.Qwen3MoeConfig, "Qwen3MoeForCausalLM",
                  dict(num_experts=8, moe_intermediate_size=24, norm_topk_prob=True), True),
    "qwen3_moe_unnormalised": (transformers.Qwen3MoeConfig, "Qwen3MoeForCausalLM",
                               dict(num_experts=4, moe_intermediate_size=24, norm_topk_prob=False), False),
    "qwen3_moe_sparse_step2": (transformers.Qwen3MoeConfig, "Qwen3MoeForCausalLM",  # layers 0, 2 dense; 1, 3 MoE
                               dict(num_experts=4, moe_intermediate_size=24, norm_topk_prob=True, decoder_sparse_step=2,
                                    num_hidden_layers=4), False),
}


def moe_hf_model(name, seed=0):
  config_cls, arch, kw, _ = CASES[name]
  return hf_model(config_cls, arch, seed, **{**TINY, **kw})


@pytest.mark.parametrize("name", list(CASES))
def test_hf_to_ours(name, tmp_path):
  scan = str(CASES[name][3]).lower()
  hf = moe_hf_model(name)
  hf.save_pretrained(tmp_path / "hf")
  out = to_maxtext(str(tmp_path / "hf"), str(tmp_path / "ours"), [f"scan_layers={scan}"])
  loaded = our_model(out, f"{out}/model.yml", f"scan_layers={scan}", "megablox=false")
  toks = tokens(3, 24)
  diff = float(np.abs(np.asarray(loaded.logits(toks)) - hf_logits(hf, toks)).max())
  print(f"{name} hf->ours (scan_layers={scan}): max |logits diff| = {diff:.2e}")
  assert diff < 1e-4
  if name in ("mixtral", "qwen3_moe"):
    prompts = tokens(2, 6, seed=1)
    assert our_greedy(loaded.model, prompts, 20) == hf_greedy(hf, prompts, 20)


@pytest.mark.parametrize("name", ["mixtral", "qwen3_moe"])
def test_ours_to_hf(name, tmp_path):
  import orbax.checkpoint as ocp
  config_cls, arch, kw, scan = CASES[name]
  hf_cfg = config_cls(**{**TINY, **kw}, architectures=[arch]).to_dict()
  yml = str(tmp_path / "model.yml")
  with open(yml, "w") as f:
    yaml.safe_dump(get_hf_mapping(hf_cfg["model_type"]).model_keys_from_hf(hf_cfg), f)
  argv = ["base.yml", f"model_name={yml}", f"scan_layers={str(not scan).lower()}", "megablox=false"]
  spec = model_spec(load_config(argv, env={}))
  model = build_model(spec, nnx.Rngs(7))
  params = nnx.state(model, nnx.Param)
  leaves, treedef = __import__("jax").tree.flatten(params)
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
  print(f"{name} ours->hf: max |logits diff| = {diff:.2e}")
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


def _presets():
  out = []
  for f in sorted(glob.glob(str(paths.configs_dir() / "models" / "*.yml"))):
    with open(f) as fh:
      if (yaml.safe_load(fh) or {}).get("decoder_block") in ("mixtral", "qwen3_moe"):
        out.append(os.path.basename(f)[:-4])
  return out


PRESETS = _presets()
# Published totals (HF safetensors metadata of the released checkpoints).
PUBLISHED = {"mixtral-8x7b": 46_702_792_704, "qwen3-30b-a3b": 30_532_122_624}
MULTIMODAL = {"qwen3-omni-30b-a3b"}  # only its text decoder is compared (the vision/audio towers are not built)


def test_presets_found():
  assert {"mixtral-8x7b", "mixtral-8x22b", "qwen3-30b-a3b", "qwen3-235b-a22b", "qwen3-480b-a35b"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_param_count_matches_transformers(name):
  extra = ["use_multimodal=false", "use_audio=false", "use_mrope=false"] if name in MULTIMODAL else []
  cfg = load_config(["base.yml", f"model_name={name}", *extra, *(["override_model_config=true"] if extra else [])],
                    env={})
  ours = count_params(cfg)
  theirs = hf_param_count(model_spec(cfg))
  assert ours == theirs, (name, ours, theirs)
  if name in PUBLISHED:
    assert ours == PUBLISHED[name]
