"""gpt_oss and llama4 (Maverick-like: interleaved MoE) through the converter on the parity table's tiny models:
save_pretrained -> `to_maxtext` (scanned; llama4 in units of 4 layers) -> our logits == HF's; `to_hf` (gpt_oss:
wi_0/wi_1 re-interleaved into gate_up_proj; llama4: experts re-fused into gate_up_proj) -> from_pretrained ->
logits == ours."""

from __future__ import annotations

import numpy as np
import orbax.checkpoint as ocp
import pytest
import transformers
from flax import nnx

import parity_cases as pc
from hf_parity_lib import hf_logits, our_logits, tokens
from maxtext_like.config import load_config
from maxtext_like.convert import to_hf, to_maxtext
from maxtext_like.models import build_model
from maxtext_like.runtime.model_spec import model_spec

MEASURED: dict[str, float] = {}


@pytest.mark.parametrize("block,name", [("gpt_oss", "gpt_oss"), ("llama4", "maverick")])
def test_convert_round_trip(block, name, tmp_path, monkeypatch):
  for obj, attr, value in pc.CASES[block][name].patches:
    monkeypatch.setattr(obj, attr, value)
  hf = pc.hf_model(block, name)
  hf.save_pretrained(tmp_path / "hf")
  out = to_maxtext(str(tmp_path / "hf"), str(tmp_path / "ours"), ["scan_layers=true"])
  argv = ["base.yml", f"model_name={out}/model.yml", "scan_layers=true", "attention=dot_product",
          "remat_policy=none"]
  spec = model_spec(load_config(argv, env={}))
  model = nnx.eval_shape(lambda: build_model(spec, nnx.Rngs(0)))
  restored = ocp.StandardCheckpointer().restore(out, {"params": nnx.state(model, nnx.Param)})
  nnx.update(model, restored["params"])
  toks = tokens(2, 20, seed=3, vocab=spec.vocab_size)
  ours = our_logits(model, toks)
  d1 = float(np.abs(ours - hf_logits(hf, toks)).max())
  back_dir = to_hf(str(tmp_path / "back"), [*argv, f"load_parameters_path={out}"])
  back = transformers.AutoModelForCausalLM.from_pretrained(back_dir, attn_implementation="eager").float().eval()
  d2 = float(np.abs(ours - hf_logits(back, toks)).max())
  MEASURED[f"{block} hf->ours"], MEASURED[f"{block} ours->hf"] = d1, d2
  print(f"{block} convert: hf->ours {d1:.2e}, ours->hf {d2:.2e}")
  assert type(back).__name__ == type(hf).__name__ and d1 < 1e-4 and d2 < 1e-4
