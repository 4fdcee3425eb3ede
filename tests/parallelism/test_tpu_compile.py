"""compile_topology: TPU slice names -> topologies, compiled on this host by libtpu (installed beside the
environment by setup.sh); a precise refusal when libtpu is missing or the name is unknown."""

import os
import pickle
import subprocess
import sys

import pytest

from maxtext_like.config import ConfigError
from maxtext_like.training import topologies

TINY = ["override_model_config=true", "base_emb_dim=64", "base_num_query_heads=4", "base_num_kv_heads=2", "head_dim=16",
        "base_mlp_dim=128", "base_num_decoder_layers=2", "vocab_size=512", "max_target_length=32",
        "max_prefill_predict_length=8", "per_device_batch_size=1", "dataset_type=synthetic"]


def test_slice_names_map_to_topologies():
  s = topologies.tpu_slice("v5e-256")
  assert (s.topology, s.devices, s.chip_config, s.wrap, s.hbm_gb) == ("v5e:16x16", 256, "default", (True, True, False), 16)
  s = topologies.tpu_slice("v5p-128")  # v5p and v4 names count two cores per chip
  assert (s.topology, s.devices, s.chip_config, s.wrap) == ("v5:4x4x4", 64, "megacore", (True, True, True))
  assert topologies.tpu_slice("v6e-8").topology == "v6e:2x4" and topologies.tpu_slice("v4-8").topology == "v4:2x2x1"
  with pytest.raises(ConfigError, match="compile_topology.*not a TPU slice name.*v5e-256"):
    topologies.tpu_slice("v5e-3")


def test_missing_libtpu_is_refused_with_the_install_command(monkeypatch, tmp_path):
  monkeypatch.delenv("TPU_LIBRARY_PATH", raising=False)
  monkeypatch.setattr(sys, "prefix", str(tmp_path))
  with pytest.raises(ConfigError, match=r"needs libtpu.*pip install --no-deps --target .*libtpu==0\.0\.\d+"):
    topologies.topology_devices("v5e-8")


@pytest.mark.slow
def test_train_compile_for_a_v5e_slice(tmp_path):
  """A fresh process (JAX finds libtpu at start-up): per-device memory against the chip's HBM, and the saved step."""
  path = tmp_path / "step.pkl"
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "TPU_LIBRARY_PATH")}
  out = subprocess.run([sys.executable, "-m", "maxtext_like.train_compile", "base.yml", *TINY, "compile_topology=v5e-8",
                        f"compiled_trainstep_file={path}"], env=env, cwd=tmp_path, capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "compiling for 1 x v5e-8 (v5e:2x4, 8 devices, 16 GiB HBM each)" in out.stdout
  assert "| devices | 8 |" in out.stdout and "| fits | yes |" in out.stdout
  saved = pickle.loads(path.read_bytes())
  assert saved["platform"] == "tpu" and saved["devices"] == 8
