"""Config makers of the training tests: a tiny llama (`tiny_cfg`) and a tiny mixtral-style MoE (`moe_cfg`)."""

import pytest

from train_lib import config_maker

TINY = ["override_model_config=true", "base_emb_dim=64", "base_num_query_heads=4", "base_num_kv_heads=2", "head_dim=16",
        "base_mlp_dim=128", "base_num_decoder_layers=2", "vocab_size=4096", "max_target_length=32", "dtype=float32",
        "enable_tensorboard=false", "async_checkpointing=false", "max_prefill_predict_length=16"]


def _tiny_maker(out_dir):
  return config_maker([*TINY, "run_name=t", "log_period=1000"], out_dir)


@pytest.fixture
def tiny_cfg(tmp_path):
  return _tiny_maker(tmp_path)


@pytest.fixture(scope="module")
def tiny_cfg_module(tmp_path_factory):
  """tiny_cfg for module-scoped references (one output directory per module)."""
  return _tiny_maker(tmp_path_factory.mktemp("tiny"))


# A tiny mixtral-style MoE model: 8 experts, top-2, 2 layers, float32.
TINY_MOE = ["override_model_config=true", "decoder_block=mixtral", "base_emb_dim=32", "base_num_query_heads=4",
            "base_num_kv_heads=2", "head_dim=8", "base_mlp_dim=64", "base_moe_mlp_dim=48", "base_num_decoder_layers=2",
            "vocab_size=256", "num_experts=8", "num_experts_per_tok=2", "norm_topk_prob=true", "max_target_length=16",
            "dtype=float32", "enable_tensorboard=false", "async_checkpointing=false", "max_prefill_predict_length=8",
            "dataset_type=synthetic", "enable_checkpointing=false", "per_device_batch_size=1", "steps=3",
            "megablox=false", "log_period=1000"]


def _moe_maker(out_dir):
  return config_maker([*TINY_MOE, "run_name=moe"], out_dir)


@pytest.fixture
def moe_cfg(tmp_path):
  return _moe_maker(tmp_path)


@pytest.fixture(scope="module")
def moe_cfg_module(tmp_path_factory):
  """moe_cfg for module-scoped references (one output directory per module)."""
  return _moe_maker(tmp_path_factory.mktemp("moe"))
