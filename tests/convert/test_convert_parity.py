"""HF -> ours and ours -> HF parity per family: logits to < 1e-4 (measured ~1e-7 .. 1e-6) and greedy 20-token
continuations identical to `transformers` generate."""

from __future__ import annotations

import os

import numpy as np
import pytest
import transformers
import yaml
from convert_testlib import TINY, hf_greedy, hf_logits, hf_model, our_greedy, our_model, tokens
from flax import nnx

from maxtext_like.convert import to_hf, to_maxtext
from maxtext_like.models import build_model
from maxtext_like.models.hf_registry import get_hf_mapping
from maxtext_like.runtime.model_spec import model_spec

LLAMA31 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
           "original_max_position_embeddings": 8192}
LLAMA32 = dict(LLAMA31, factor=32.0)  # Llama 3.2 1B/3B

# name -> (config class, architecture, config kwargs, scan_layers, check generation)
CASES = {
    "llama2_gqa3": (transformers.LlamaConfig, "LlamaForCausalLM", {}, False, True),
    "llama3.1_rope": (transformers.LlamaConfig, "LlamaForCausalLM",
                      dict(rope_theta=500000.0, rope_scaling=LLAMA31, max_position_embeddings=131072), True, False),
    "llama3.2_rope32_tied": (transformers.LlamaConfig, "LlamaForCausalLM",
                             dict(rope_theta=500000.0, rope_scaling=LLAMA32, max_position_embeddings=131072,
                                  tie_word_embeddings=True), False, False),
    "mistral_window": (transformers.MistralConfig, "MistralForCausalLM", dict(sliding_window=7), True, True),
    "qwen2_bias": (transformers.Qwen2Config, "Qwen2ForCausalLM", dict(rope_theta=1e6), False, False),
    "qwen3_tied": (transformers.Qwen3Config, "Qwen3ForCausalLM", dict(tie_word_embeddings=True), True, True),
    "qwen3_untied": (transformers.Qwen3Config, "Qwen3ForCausalLM", dict(tie_word_embeddings=False), False, False),
}
MEASURED: dict[str, float] = {}


@pytest.mark.parametrize("name", list(CASES))
def test_hf_to_ours(name, tmp_path):
  config_cls, arch, kw, scan, check_generate = CASES[name]
  hf = hf_model(config_cls, arch, **kw)
  hf.save_pretrained(tmp_path / "hf")
  out = to_maxtext(str(tmp_path / "hf"), str(tmp_path / "ours"), [f"scan_layers={str(scan).lower()}"])
  assert sorted(os.listdir(tmp_path)) == ["hf", "ours"]  # no .tmp / .staging left
  loaded = our_model(out, f"{out}/model.yml", f"scan_layers={str(scan).lower()}")
  toks = tokens(3, 24)  # 24 > the mistral window (7)
  diff = float(np.abs(np.asarray(loaded.logits(toks)) - hf_logits(hf, toks)).max())
  MEASURED[name] = diff
  print(f"{name}: max |logits diff| = {diff:.2e}")
  assert diff < 1e-4
  if check_generate:
    prompts = tokens(2, 6, seed=1)
    assert our_greedy(loaded.model, prompts, 20) == hf_greedy(hf, prompts, 20)


@pytest.mark.parametrize("name", ["mistral_window", "qwen2_bias", "qwen3_tied", "llama3.2_rope32_tied"])
def test_ours_to_hf(name, tmp_path):
  import orbax.checkpoint as ocp
  config_cls, arch, kw, scan, _ = CASES[name]
  hf_cfg = config_cls(**{**TINY, **kw}, architectures=[arch]).to_dict()
  yml = str(tmp_path / "model.yml")
  with open(yml, "w") as f:
    yaml.safe_dump(get_hf_mapping(hf_cfg["model_type"] if hf_cfg["model_type"] != "llama" else "llama2")
                   .model_keys_from_hf(hf_cfg), f)
  from maxtext_like.api import load_config
  cfg = load_config(["base.yml", f"model_name={yml}", f"scan_layers={str(not scan).lower()}"], env={})
  spec = model_spec(cfg)
  model = build_model(spec, nnx.Rngs(7))
  params = nnx.state(model, nnx.Param)
  params = jax_perturb(params)  # biases/norms start at 0/1: give them values the comparison can see
  nnx.update(model, params)
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(str(tmp_path / "mine"), {"params": params})
  ckptr.wait_until_finished()
  out = to_hf(str(tmp_path / "out"), ["base.yml", f"model_name={yml}", f"scan_layers={str(not scan).lower()}",
                                      f"load_parameters_path={tmp_path / 'mine'}"], max_shard_bytes=40_000)
  assert os.path.isfile(os.path.join(out, "model.safetensors.index.json"))  # sharded at 40 kB
  back = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").float().eval()
  toks = tokens(2, 20, seed=3)
  ours = np.asarray(nnx.jit(lambda m, t: m(t))(model, toks))
  diff = float(np.abs(ours - hf_logits(back, toks)).max())
  print(f"{name} ours->hf: max |logits diff| = {diff:.2e}")
  assert diff < 1e-4


def jax_perturb(params):
  import jax
  import jax.numpy as jnp
  key = jax.random.PRNGKey(1)
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(treedef, [x + 0.2 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)])
