import pytest

from train_lib import config_maker

TINY = ["override_model_config=true", "base_emb_dim=32", "base_num_query_heads=2", "base_num_kv_heads=2", "head_dim=16",
        "base_mlp_dim=64", "base_num_decoder_layers=4", "vocab_size=256", "max_target_length=16", "dtype=float32",
        "enable_tensorboard=false", "async_checkpointing=false", "max_prefill_predict_length=8", "dataset_type=synthetic",
        "enable_checkpointing=false", "steps=2", "log_period=1000", "run_name=t"]


def _maker(out_dir):
  return config_maker(TINY, out_dir)


@pytest.fixture
def pp_cfg(tmp_path):
  return _maker(tmp_path)


@pytest.fixture(scope="module")
def pp_cfg_module(tmp_path_factory):
  return _maker(tmp_path_factory.mktemp("pp"))
