"""llama2 / mistral / qwen2 / qwen3 / mixtral / qwen3_moe conversion. HF -> ours: `to_maxtext` of a save_pretrained
directory loads (its model.yml, either layout) to the spec and, bit for bit, the parameters the family's mapping
gives in memory, whose logits and greedy generation families/test_parity.py compares with transformers. Ours -> HF:
`to_hf` of our checkpoint (sharded; our stacked [E, ...] expert kernels -> per-expert HF tensors) loads in
transformers with our logits (< 1e-4, measured ~1e-7 .. 1e-6)."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest
import transformers
import yaml
from flax import nnx

import parity_cases as pc
from hf_parity_lib import hf_config, hf_logits, load_converted, our_logits, our_model, tokens
from maxtext_like.config import load_config
from maxtext_like.convert import to_hf, to_maxtext
from maxtext_like.models import build_model
from maxtext_like.models.hf_registry import get_hf_mapping
from maxtext_like.runtime.model_spec import model_spec

# (decoder_block, case in parity_cases) -> scan_layers of the converted checkpoint
TO_OURS = {("llama2", "llama2_gqa3"): False, ("llama2", "llama3.1_rope"): True, ("llama2", "llama3.2_rope32_tied"): False,
           ("mistral", "mistral_window"): True, ("qwen2", "qwen2_bias"): False, ("qwen3", "qwen3_tied"): True,
           ("qwen3", "qwen3_untied"): False, ("mixtral", "mixtral"): False, ("qwen3_moe", "qwen3_moe"): True,
           ("qwen3_moe", "qwen3_moe_unnormalised"): False, ("qwen3_moe", "qwen3_moe_sparse_step2"): False}


@pytest.mark.parametrize("block,name", list(TO_OURS))
def test_hf_to_ours_equals_the_mapping(block, name, tmp_path):
  scan = f"scan_layers={str(TO_OURS[block, name]).lower()}"
  hf, spec = pc.hf_model(block, name), pc.spec(block, name)
  hf.save_pretrained(tmp_path / "hf")
  out = to_maxtext(str(tmp_path / "hf"), str(tmp_path / "ours"), [scan])
  assert sorted(os.listdir(tmp_path)) == ["hf", "ours"]  # no .tmp / .staging left
  extra = ["attention=dot_product", "remat_policy=none", *(["megablox=false"] if spec.moe else [])]  # as pc.spec
  loaded = load_converted(out, scan, *extra).model
  want = our_model(spec, hf, scan_layers=TO_OURS[block, name])
  assert loaded.spec == want.spec
  got, want = nnx.to_flat_state(nnx.state(loaded, nnx.Param)), nnx.to_flat_state(nnx.state(want, nnx.Param))
  assert [p for p, _ in got] == [p for p, _ in want]
  for (path, a), (_, b) in zip(got, want):
    assert np.array_equal(np.asarray(a[...]), np.asarray(b[...])), path


# (decoder_block, case in parity_cases) -> scan_layers of the HF config's converted checkpoint; ours is the other
TO_HF = {("mistral", "mistral_window"): True, ("qwen2", "qwen2_bias"): False, ("qwen3", "qwen3_tied"): True,
         ("llama2", "llama3.2_rope32_tied"): False, ("mixtral", "mixtral"): False, ("qwen3_moe", "qwen3_moe"): True}


@pytest.mark.parametrize("block,name", list(TO_HF))
def test_ours_to_hf(block, name, tmp_path):
  import orbax.checkpoint as ocp
  scan = TO_HF[block, name]
  hf_cfg = hf_config(pc.hf_model(block, name))
  yml = str(tmp_path / "model.yml")
  with open(yml, "w") as f:
    yaml.safe_dump(get_hf_mapping(block).model_keys_from_hf(hf_cfg), f)
  argv = ["base.yml", f"model_name={yml}", f"scan_layers={str(not scan).lower()}",
          *(["megablox=false"] if block in ("mixtral", "qwen3_moe") else [])]
  spec = model_spec(load_config(argv, env={}))
  model = build_model(spec, nnx.Rngs(7))
  params = nnx.state(model, nnx.Param)
  params = jax_perturb(params)  # biases/norms start at 0/1: give them values the comparison can see
  nnx.update(model, params)
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(str(tmp_path / "mine"), {"params": params})
  ckptr.wait_until_finished()
  out = to_hf(str(tmp_path / "out"), [*argv, f"load_parameters_path={tmp_path / 'mine'}"], max_shard_bytes=40_000)
  assert os.path.isfile(os.path.join(out, "model.safetensors.index.json"))  # sharded at 40 kB
  back = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").float().eval()
  assert type(back).__name__ == hf_cfg["architectures"][0]
  toks = tokens(2, 20, seed=3, vocab=spec.vocab_size)
  ours = our_logits(model, toks)
  diff = float(np.abs(ours - hf_logits(back, toks)).max())
  print(f"{name} ours->hf: max |logits diff| = {diff:.2e}")
  assert diff < 1e-4


def jax_perturb(params):
  key = jax.random.PRNGKey(1)
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(treedef, [x + 0.2 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)])
