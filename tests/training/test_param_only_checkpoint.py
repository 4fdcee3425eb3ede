"""generate_param_only_checkpoint: the parameters of a training checkpoint without optimizer state, unrolled to one
entry per layer with force_unroll; both load and give the trained model's logits."""

import os

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from maxtext_like import generate_param_only_checkpoint as gen
from maxtext_like import train
from maxtext_like.config import load_config
from maxtext_like.inference.loading import load_model

TINY = ["override_model_config=true", "base_emb_dim=32", "base_num_query_heads=4", "base_num_kv_heads=2", "head_dim=8",
        "base_mlp_dim=64", "base_num_decoder_layers=2", "vocab_size=256", "max_target_length=16", "dtype=float32",
        "max_prefill_predict_length=8", "per_device_batch_size=2", "dataset_type=synthetic", "enable_tensorboard=false",
        "async_checkpointing=false", "log_period=1000", "scan_layers=true"]


def test_param_only_checkpoint_scanned_and_unrolled(tmp_path, capsys):
  base = ["base.yml", *TINY, f"base_output_directory={tmp_path}"]
  assert train.main([*base, "run_name=full", "steps=2", "checkpoint_period=2"]) == 0
  full = tmp_path / "full" / "checkpoints" / "2"
  tokens = jnp.arange(1, 13, dtype=jnp.int32)[None]
  ref = load_model(load_config([*base, "run_name=full", f"load_parameters_path={full}"], env={})).logits(tokens)
  for name, unroll, scan in (("kept", "false", "true"), ("unrolled", "true", "false")):
    assert gen.main([*base, f"run_name={name}", f"load_full_state_path={full}", f"force_unroll={unroll}"]) == 0
    out = tmp_path / name / "checkpoints" / "0"
    assert f"load_parameters_path={out} scan_layers={scan}" in capsys.readouterr().out
    saved = ocp.StandardCheckpointer().metadata(str(out / "state"))
    saved = getattr(saved, "item_metadata", saved)
    assert set(saved) == {"params"}  # no optimizer state
    layers = saved["params"]["decoder"]["layers"]
    assert (sorted(layers) == ["0", "1"] or sorted(layers) == [0, 1]) == (unroll == "true")
    cfg = load_config([*base, f"run_name={name}", f"load_parameters_path={out}", f"scan_layers={scan}"], env={})
    np.testing.assert_allclose(load_model(cfg).logits(tokens), ref, rtol=1e-6, atol=1e-6)
  # written once: a second run refuses to overwrite, and a run without a source is refused, both with exit 2
  assert gen.main([*base, "run_name=unrolled", f"load_full_state_path={full}", "force_unroll=true"]) == 2
  assert "already exists" in capsys.readouterr().err
  assert gen.main([*base, "run_name=none"]) == 2
  assert "load_full_state_path" in capsys.readouterr().err
  assert os.path.isdir(full)  # the source is untouched
