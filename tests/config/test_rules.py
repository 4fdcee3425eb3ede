"""Every cross-field rule fires with its own message, and passes on the defaults."""

import pytest

from maxtext_like.config import ConfigError, load_config


def problems(*argv):
  with pytest.raises(ConfigError) as e:
    load_config(["base.yml", "override_model_config=true", *argv], env={})
  return e.value.problems


@pytest.mark.parametrize("argv,key,fragment", [
    (["base_num_query_heads=6", "base_num_kv_heads=4"], "base_num_query_heads", "multiple of base_num_kv_heads"),
    (["sliding_window_size=1000", "max_target_length=512"], "sliding_window_size", "must not exceed max_target_length"),
    (["num_experts=4", "num_experts_per_tok=5"], "num_experts_per_tok", "must not exceed num_experts"),
    (["load_parameters_path=/a", "load_full_state_path=/b"], "load_parameters_path", "cannot be combined"),
    (["warmup_steps_fraction=1.5"], "warmup_steps_fraction", "fraction"),
    (["learning_rate_final_fraction=-0.1"], "learning_rate_final_fraction", "fraction"),
    (["dropout_rate=2"], "dropout_rate", "fraction"),
    (["lr_schedule_type=wsd", "warmup_steps_fraction=0.6", "wsd_decay_steps_fraction=0.6"], "wsd_decay_steps_fraction", "must not exceed 1"),
    (["steps=0"], "steps", "must be positive"),
    (["per_device_batch_size=0"], "per_device_batch_size", "must be positive"),
    (["max_prefill_predict_length=999", "max_target_length=64"], "max_prefill_predict_length", "1..max_target_length"),
    (["checkpoint_period=0"], "checkpoint_period", "must be positive"),
    (["ici_fsdp_parallelism=-1", "ici_tensor_parallelism=-1"], "ici_tensor_parallelism", "only one ici_"),
    (["ici_tensor_parallelism=0"], "ici_tensor_parallelism", "positive size or -1"),
    (["logical_axis_rules=[[embed, [nonexistent]]]"], "logical_axis_rules", "not in mesh_axes"),
    (["decode_sampling_strategy=topk"], "decode_sampling_top_k", "must be positive"),
    (["decode_sampling_strategy=nucleus"], "decode_sampling_nucleus_p", "(0, 1]"),
    (["decode_sampling_strategy=weighted", "decode_sampling_temperature=0"], "decode_sampling_temperature", "positive"),
    (["mlp_activations=[swiglu]"], "mlp_activations", "unknown activation"),
    (["num_slices=0"], "num_slices", "-1 (detect)"),
    (["global_parameter_scale=3"], "global_parameter_scale", "power of two"),
    (["head_dim=0"], "head_dim", "must be positive"),
    (["attention_type=mla", "qk_nope_head_dim=0"], "qk_nope_head_dim", "'mla'"),
    (["ici_context_parallelism=4", "max_target_length=36"], "max_target_length", "multiple of 8"),
    (["ici_context_parallelism=4", "max_target_length=34", "context_parallel_reorder_strategy=striped"],
     "max_target_length", "multiple of 4"),
])
def test_rule_fires(argv, key, fragment):
  ps = [p for p in problems(*argv) if p.key == key]
  assert ps, f"no problem for {key}"
  assert any(fragment in p.message for p in ps), [p.message for p in ps]
  assert all(p.source for p in ps if p.key != "logical_axis_rules")


def test_preset_sliding_window_may_exceed_short_sequences():
  cfg = load_config(["base.yml", "model_name=gemma2-2b", "max_target_length=128"], env={})
  assert cfg.attention.sliding_window_size == 4096


def test_global_parameter_scale_follows_maxtext_rule():
  from maxtext_like.config.derived import scale_dims
  assert scale_dims(1) == (1, 1, 1)
  assert scale_dims(2) == (2, 1, 1)
  assert scale_dims(4) == (2, 2, 1)
  assert scale_dims(8) == (2, 2, 2)
  assert scale_dims(16) == (4, 2, 2)
  cfg = load_config(["base.yml", "global_parameter_scale=16"], env={})
  assert (cfg.derived.emb_dim, cfg.derived.num_query_heads, cfg.derived.mlp_dim, cfg.derived.num_decoder_layers) == (512, 16, 3072, 8)


def test_derived_values():
  cfg = load_config(["base.yml", "run_name=r", "base_output_directory=/tmp/o", "steps=50", "eval_per_device_batch_size=0"], env={})
  d = cfg.derived
  assert d.checkpoint_dir == "/tmp/o/r/checkpoints" and d.metrics_dir == "/tmp/o/r/metrics" and d.tensorboard_dir == "/tmp/o/r/tensorboard"
  assert d.learning_rate_schedule_steps == 50 and d.eval_per_device_batch_size == cfg.dataset.per_device_batch_size
  unnamed = load_config(["base.yml"], env={})
  assert unnamed.derived.run_name.startswith("run_")
