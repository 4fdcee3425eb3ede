"""MaxText's hardware-specific kernel and sharding-mode names are accepted; where their kernel cannot run here the
equivalent computation runs, with one notice line each."""

import pytest

from maxtext_like.config import ConfigError, load_config
from maxtext_like.runtime import kernel_names
from maxtext_like.runtime.model_spec import model_spec


def _cfg(*argv):
  return load_config(["base.yml", "run_name=k", *argv], env={})


@pytest.mark.parametrize("name", ["cudnn_flash_te", "cudnn_flash_jax"])
def test_cudnn_attention_names(name):
  assert kernel_names.attention_kernel(name, "gpu")[0] == "cudnn_flash_jax"  # jax.nn.dot_product_attention (cuDNN)
  kernel, note = kernel_names.attention_kernel(name, "cpu")
  assert kernel == "flash" and f"attention={name} needs an NVIDIA GPU" in note and "'flash' kernel" in note
  assert kernel_names.attention_kernel("dot_product", "cpu") == ("dot_product", "")


def test_cudnn_flash_te_runs_the_flash_kernel_on_cpu_with_one_notice(capsys):
  kernel_names._said.clear()
  cfg = _cfg("attention=cudnn_flash_te")
  assert model_spec(cfg).attention == "flash" and model_spec(cfg).attention == "flash"
  err = capsys.readouterr().err
  assert err.count("notice: attention=cudnn_flash_te needs an NVIDIA GPU with cuDNN; on cpu") == 1


def test_kernel_library_and_shard_mode_notices(capsys):
  kernel_names._said.clear()
  cfg = _cfg("use_tokamax_gmm=true", "use_tokamax_splash=true", "use_jax_splash=true", "shard_mode=explicit")
  notes = kernel_names.config_notices(cfg, "cpu")
  assert [n.split(":")[0] for n in notes] == ["use_tokamax_gmm", "use_tokamax_splash", "use_jax_splash",
                                              "shard_mode=explicit"]
  assert kernel_names.config_notices(cfg, "tpu")[1:2] == [notes[-1]]  # splash names are native on TPU
  model_spec(cfg)
  assert capsys.readouterr().err.count("notice: ") == 4
  assert kernel_names.config_notices(_cfg(), "cpu") == []


def test_kernels_that_are_not_built_stay_refused():
  with pytest.raises(ConfigError, match="attention.*not supported yet"):
    _cfg("attention=vllm_rpa")


def test_nsys_profiler_is_refused_with_its_reason():
  with pytest.raises(ConfigError) as e:
    _cfg("profiler=nsys")
  msg = str(e.value)
  assert "profiler = 'nsys'" in msg and "NVIDIA GPU" in msg and "not supported yet" not in msg
  assert "(1 problem)" in msg
