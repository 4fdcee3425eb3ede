"""gemma / gemma2 / gemma3 through the whole CLI path: save_pretrained safetensors -> `to_maxtext` -> `load_model`
logits equal transformers' (< 1e-4), and that checkpoint -> `to_hf` -> `from_pretrained` gives the same logits."""

from __future__ import annotations

import os

import numpy as np
import pytest
import transformers

import parity_cases as pc
from hf_parity_lib import hf_logits, load_converted, tokens
from maxtext_like.convert.__main__ import main

TOL = 1e-4
SCAN = {"gemma": True, "gemma2": False, "gemma3": True}  # both layouts covered


@pytest.mark.parametrize("name", sorted(pc.GEMMA_SPECS))
def test_gemma_cli_round_trip(name, tmp_path, capsys):
  hf = pc.hf_model(name, name)
  hf.save_pretrained(tmp_path / "hf")
  scan = f"scan_layers={str(SCAN[name]).lower()}"
  assert main(["to_maxtext", "--hf_path", str(tmp_path / "hf"), "--output", str(tmp_path / "ours"), scan]) == 0
  ours = str(tmp_path / "ours")
  loaded = load_converted(ours, scan)
  toks = tokens(2, 3 * pc.GEMMA_WINDOW)  # longer than the sliding window
  want = hf_logits(hf, toks)
  diff = float(np.abs(np.asarray(loaded.logits(toks)) - want).max())
  print(f"{name} hf->ours ({scan}): max |logits diff| = {diff:.2e} (max |logit| {np.abs(want).max():.2f})")
  assert diff < TOL and np.abs(want).max() > 1.0

  assert main(["to_hf", "--output", str(tmp_path / "back"), "--max_shard_mb", "0.05", f"model_name={ours}/model.yml",
               f"load_parameters_path={ours}", scan]) == 0
  assert os.path.isfile(tmp_path / "back" / "model.safetensors.index.json")  # sharded
  back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back", attn_implementation="eager").float().eval()
  assert type(back).__name__ == type(hf).__name__
  diff = float(np.abs(hf_logits(back, toks) - np.asarray(loaded.logits(toks))).max())
  print(f"{name} ours->hf: max |logits diff| = {diff:.2e}")
  assert diff < TOL
  assert "Traceback" not in capsys.readouterr().err
