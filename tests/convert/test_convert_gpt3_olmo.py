"""Both directions through the convert package: our random params -> `to_hf` -> transformers loads them with
our logits -> `to_maxtext` of that HF directory -> the same logits again (a full round trip per family)."""

from __future__ import annotations

import numpy as np
import orbax.checkpoint as ocp
import pytest
import transformers
import yaml
from flax import nnx

import parity_cases as pc
from hf_parity_lib import hf_logits, our_logits, random_model, tokens
from maxtext_like.api import load_config, load_model
from maxtext_like.convert import to_hf, to_maxtext
from maxtext_like.models.hf_registry import get_hf_mapping
from maxtext_like.runtime.model_spec import model_spec

ARCH = {"gpt3": "GPT2LMHeadModel", "olmo3": "Olmo3ForCausalLM"}


@pytest.mark.parametrize("name,scan", [("gpt3", True), ("olmo3", False)])
def test_round_trip_through_transformers(name, scan, tmp_path):
  spec = pc.GPT_OLMO_SPECS[name]
  mapping = get_hf_mapping(spec.decoder_block)
  yml = str(tmp_path / "model.yml")
  with open(yml, "w") as f:  # the preset our mapping derives from this spec's HF config
    yaml.safe_dump(mapping.model_keys_from_hf(mapping.hf_config_from(spec)), f)
  argv = ["base.yml", f"model_name={yml}", f"scan_layers={str(scan).lower()}", "attention=dot_product"]
  model = random_model(model_spec(load_config(argv, env={})), norm_mean=1.0)  # norm scales ~1
  params = nnx.state(model, nnx.Param)
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(str(tmp_path / "mine"), {"params": params})
  ckptr.wait_until_finished()
  toks = tokens(2, 4 * pc.OLMO_WINDOW, seed=3)
  ours = our_logits(model, toks)

  out = to_hf(str(tmp_path / "hf"), [*argv, f"load_parameters_path={tmp_path / 'mine'}"])
  back = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").float().eval()
  assert type(back).__name__ == ARCH[name]
  diff = float(np.abs(ours - hf_logits(back, toks)).max())
  print(f"{name} ours->hf: max |logits diff| = {diff:.2e} (max |logit| {np.abs(ours).max():.1f})")
  assert diff < 1e-4 and np.abs(ours).max() > 1.0

  conv = to_maxtext(out, str(tmp_path / "ours"), [f"scan_layers={str(not scan).lower()}"])
  loaded = load_model(load_config(["base.yml", f"model_name={conv}/model.yml", f"load_parameters_path={conv}",
                                   f"scan_layers={str(not scan).lower()}", "attention=dot_product"], env={}))
  diff = float(np.abs(np.asarray(loaded.logits(toks)) - ours).max())
  print(f"{name} hf->ours: max |logits diff| = {diff:.2e}")
  assert diff < 1e-4
