"""debug_sharding lists every parameter's sharding; more replicated parameters than sharding_tolerance warns."""

import jax

from maxtext_like.training.loop import Trainer

COMMON = ["dataset_type=synthetic", "enable_checkpointing=false", "per_device_batch_size=1", "steps=1"]


def test_debug_sharding_lists_each_parameter(tiny_cfg, capsys):
  Trainer(tiny_cfg(*COMMON, "debug_sharding=true", "ici_fsdp_parallelism=4", "ici_tensor_parallelism=2"))
  out = capsys.readouterr().out
  assert "parameter shardings over mesh" in out
  # [embed, layers, heads, kv], scanned: embed over fsdp, heads over tensor
  assert "decoder.layers.self_attention.query.kernel (64, 2, 4, 16) [fsdp, -, tensor, -]" in out
  assert "decoder.decoder_norm.scale (64,) [-]  replicated" in out
  assert "warning:" not in out  # fsdp x tensor splits nearly every parameter


def test_replicated_parameters_over_tolerance_warn(tiny_cfg, capsys):
  Trainer(tiny_cfg(*COMMON, "ici_fsdp_parallelism=1", "ici_data_parallelism=8"), devices=jax.devices())
  assert "100.0% of the parameters are replicated on every device (sharding_tolerance=0.02)" in capsys.readouterr().out
  Trainer(tiny_cfg(*COMMON, "ici_fsdp_parallelism=1", "ici_data_parallelism=8", "sharding_tolerance=1.0"))
  assert "warning:" not in capsys.readouterr().out
