"""Bad conversion input: one error naming every problem, exit code 2, nothing left that looks complete."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import transformers

import parity_cases as pc
from maxtext_like.convert import ConvertError, to_maxtext
from maxtext_like.convert.__main__ import main
from maxtext_like.convert.safetensors_io import _write_file, iter_tensors


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("hf")
  pc.hf_model("llama2", "llama2_gqa3").save_pretrained(d)
  return d


def _rewrite(src, dst, edit):
  os.makedirs(dst)
  tensors = {n: np.array(a) for n, a in iter_tensors(os.path.join(src, "model.safetensors"))}
  edit(tensors)
  _write_file(os.path.join(dst, "model.safetensors"), list(tensors.items()))
  with open(os.path.join(src, "config.json")) as f:
    cfg = json.load(f)
  with open(os.path.join(dst, "config.json"), "w") as f:
    json.dump(cfg, f)


def test_missing_extra_misshaped_listed_together(hf_dir, tmp_path, capsys):
  def edit(t):
    del t["model.layers.1.mlp.up_proj.weight"]
    del t["model.norm.weight"]
    t["model.layers.0.self_attn.k_proj.weight"] = np.zeros((8, 48), np.float32)
    t["model.layers.0.extra.weight"] = np.zeros((3,), np.float32)
  _rewrite(hf_dir, tmp_path / "bad", edit)
  code = main(["to_maxtext", "--hf_path", str(tmp_path / "bad"), "--output", str(tmp_path / "out")])
  err = capsys.readouterr().err
  assert code == 2
  assert "Traceback" not in err
  for needle in ("missing (2)", "model.layers.1.mlp.up_proj.weight", "model.norm.weight", "unexpected (1)",
                 "model.layers.0.extra.weight", "mis-shaped (1)", "model.layers.0.self_attn.k_proj.weight [8, 48]"):
    assert needle in err, (needle, err)
  assert sorted(os.listdir(tmp_path)) == ["bad"]  # no out, out.tmp or out.staging


def test_wrong_architecture_for_model_name(hf_dir, tmp_path):
  with pytest.raises(ConvertError, match=r"LlamaForCausalLM converts to decoder_block \['llama2', 'mistral'\].*qwen3"):
    to_maxtext(str(hf_dir), str(tmp_path / "out"), ["model_name=qwen3-0.6b"])
  with pytest.raises(ConvertError, match=r"does not match the chosen model.*base_emb_dim: checkpoint 48, config 4096"):
    to_maxtext(str(hf_dir), str(tmp_path / "out"), ["model_name=llama2-7b"])
  assert not os.listdir(tmp_path)


def test_unsupported_architecture_and_bad_paths(tmp_path, capsys):
  os.makedirs(tmp_path / "mamba")
  (tmp_path / "mamba" / "config.json").write_text(json.dumps({"architectures": ["MambaForCausalLM"]}))
  assert main(["to_maxtext", "--hf_path", str(tmp_path / "mamba"), "--output", str(tmp_path / "o")]) == 2
  err = capsys.readouterr().err
  assert "MambaForCausalLM' is not supported; supported: [" in err and "'LlamaForCausalLM'" in err
  os.makedirs(tmp_path / "gpt")
  (tmp_path / "gpt" / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
  assert main(["to_maxtext", "--hf_path", str(tmp_path / "gpt"), "--output", str(tmp_path / "o")]) == 2
  assert "incomplete or malformed" in capsys.readouterr().err
  assert main(["to_maxtext", "--hf_path", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o")]) == 2
  assert "has no config.json" in capsys.readouterr().err
  assert main(["to_maxtext", "--output", str(tmp_path / "o")]) == 2
  assert main(["to_hf", "--output", str(tmp_path / "o"), "model_name=llama2-7b"]) == 2
  assert "needs load_parameters_path" in capsys.readouterr().err


def test_unsupported_rope_scaling(tmp_path):
  os.makedirs(tmp_path / "h")
  cfg = transformers.LlamaConfig(hidden_size=48, num_attention_heads=6, architectures=["LlamaForCausalLM"],
                                 rope_scaling={"rope_type": "yarn", "factor": 4.0,
                                               "original_max_position_embeddings": 512}).to_dict()
  (tmp_path / "h" / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(ConvertError, match="rope_scaling type 'yarn' is not supported"):
    to_maxtext(str(tmp_path / "h"), str(tmp_path / "o"))
