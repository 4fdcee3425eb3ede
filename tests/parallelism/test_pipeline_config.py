"""Pipeline config: each rule fires with its message, sizes resolve with MaxText's -1 defaults, other keys refused."""

import pytest

from maxtext_like.config import ConfigError, load_config
from maxtext_like.config.resolve import resolve

TINY = ["override_model_config=true", "base_num_decoder_layers=8", "per_device_batch_size=2"]


def cfg(*argv):
  return load_config(["base.yml", *TINY, *argv], env={})


def problems(*argv):
  with pytest.raises(ConfigError) as e:
    cfg(*argv)
  return e.value.problems


@pytest.mark.parametrize("argv,key,fragment", [
    (["ici_pipeline_parallelism=3"], "num_layers_per_pipeline_stage", "must divide num_decoder_layers (8)"),
    (["ici_pipeline_parallelism=2", "num_layers_per_pipeline_stage=3"], "num_layers_per_pipeline_stage", "must divide"),
    (["ici_pipeline_parallelism=2", "num_pipeline_repeats=3"], "num_pipeline_repeats", "must equal num_decoder_layers (8)"),
    (["ici_pipeline_parallelism=4", "num_pipeline_microbatches=6"], "num_pipeline_microbatches", "multiple of the number of pipeline stages (4)"),
    (["ici_pipeline_parallelism=2", "num_pipeline_microbatches=2", "pipeline_delay_activation_forwarding=true"],
     "num_pipeline_microbatches", "at least 2 × stages"),
    (["ici_pipeline_parallelism=2", "model_name=mixtral-8x7b"], "ici_pipeline_parallelism", "mixture-of-experts"),
    (["pipeline_parallel_layers=4"], "pipeline_parallel_layers", "not supported yet"),
    (["scan_pipeline_repeats=true"], "scan_pipeline_repeats", "not supported yet"),
])
def test_rule_fires(argv, key, fragment):
  ps = [p for p in problems(*argv) if p.key == key]
  assert ps and any(fragment in p.message for p in ps), [p.message for p in problems(*argv)]


def test_sizes_resolve_with_maxtext_defaults():
  plan = resolve(cfg("ici_pipeline_parallelism=2", "ici_fsdp_parallelism=4"), 8)
  assert (plan.num_pipeline_stages, plan.num_pipeline_microbatches, plan.num_pipeline_repeats) == (2, 2, 4)
  plan = resolve(cfg("ici_pipeline_parallelism=4", "ici_fsdp_parallelism=2", "num_layers_per_pipeline_stage=2",
                     "pipeline_delay_activation_forwarding=true"), 8)
  assert (plan.num_pipeline_stages, plan.num_pipeline_microbatches, plan.num_pipeline_repeats) == (4, 8, 1)
  plan = resolve(cfg(), 8)
  assert (plan.num_pipeline_stages, plan.num_pipeline_microbatches, plan.num_pipeline_repeats) == (1, 1, 1)


def test_batch_must_split_into_microbatches():
  with pytest.raises(ConfigError, match="num_pipeline_microbatches.*must divide the batch of one forward pass"):
    resolve(cfg("ici_pipeline_parallelism=2", "ici_fsdp_parallelism=4", "num_pipeline_microbatches=32"), 8)


def test_stage_fill_in_is_checked_once_devices_are_known():
  c = cfg("ici_pipeline_parallelism=-1", "ici_fsdp_parallelism=1", "num_pipeline_microbatches=4")
  with pytest.raises(ConfigError, match="num_pipeline_microbatches.*multiple of the number of pipeline stages \\(8\\)"):
    resolve(c, 8)
  assert resolve(c, 4).num_pipeline_stages == 4
