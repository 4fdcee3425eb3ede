"""End to end through the entry points: train -> checkpoint -> resume -> decode, and bad input -> exit 2."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # subprocess training jobs; deselect with -m 'not slow'

ROOT = Path(__file__).parents[2]
TINY = ["override_model_config=true", "base_emb_dim=64", "base_num_query_heads=4", "base_num_kv_heads=2", "head_dim=16",
        "base_mlp_dim=128", "base_num_decoder_layers=2", "max_target_length=64", "max_prefill_predict_length=16",
        "per_device_batch_size=2", "enable_tensorboard=false", "log_period=3", "checkpoint_period=3"]


def run(module, *argv, cwd):
  env = {k: v for k, v in os.environ.items() if not k.startswith("M_")}
  inherited = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
  env["XLA_FLAGS"] = " ".join([*inherited, "--xla_force_host_platform_device_count=2"])
  return subprocess.run([sys.executable, "-m", f"maxtext_like.{module}", "base.yml", *argv], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  d = tmp_path_factory.mktemp("e2e")
  first = run("train", *TINY, "run_name=e2e", "steps=6", "learning_rate_schedule_steps=9", f"metrics_file={d}/m.jsonl", cwd=d)
  return d, first


def test_train_writes_checkpoints_metrics_and_curve(trained):
  d, first = trained
  assert first.returncode == 0, first.stderr[-3000:]
  records = [json.loads(l) for l in (d / "m.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records] == [3, 6]
  assert all({"loss", "learning_rate", "grad_norm", "tokens_per_s", "tflops_per_device", "step_time_s"} <= set(r) for r in records)
  assert sorted(os.listdir(d / "outputs" / "e2e" / "checkpoints")) == ["3", "6"]
  assert (d / "outputs" / "e2e" / "loss_curve.png").stat().st_size > 1000
  assert "step      6/6" in first.stdout


def test_resume_continues_from_latest(trained):
  d, _ = trained
  again = run("train", *TINY, "run_name=e2e", "steps=9", "learning_rate_schedule_steps=9", cwd=d)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "resumed from" in again.stdout and "checkpoints/6" in again.stdout
  assert "step      9/9" in again.stdout and "step      3/9" not in again.stdout


def test_decode_from_the_run(trained):
  d, _ = trained
  out = run("decode", *TINY, "run_name=e2e", "prompt=It is a truth|||She", "max_target_length=40",
            "return_log_prob=true", cwd=d)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.count("continuation:") == 2 and out.stdout.count("log_probs: [") == 2
  assert "checkpoints/" in out.stderr  # says where the parameters came from


def test_train_refuses_use_chat_template_until_sft_exists(tmp_path, capsys):
  from maxtext_like.train import main
  assert main(["base.yml", *TINY, "use_chat_template=true", f"base_output_directory={tmp_path}", "run_name=c"]) == 2
  assert "use_sft" in capsys.readouterr().err


def test_bad_config_exits_2_with_one_paragraph(tmp_path):
  out = run("train", "stepz=3", "dtype=float8", cwd=tmp_path)
  assert out.returncode == 2
  assert "Traceback" not in out.stderr
  assert "did you mean 'steps'" in out.stderr and "'float32'" in out.stderr
  assert len(out.stderr.strip().splitlines()) == 1


def test_mismatched_checkpoint_exits_2_and_keeps_it(trained):
  d, _ = trained
  out = run("train", *TINY, "run_name=e2e", "steps=12", "base_emb_dim=32", cwd=d)
  assert out.returncode == 2, out.stderr[-2000:]
  assert "does not fit" in out.stderr and "Traceback" not in out.stderr
  assert "6" in os.listdir(d / "outputs" / "e2e" / "checkpoints")


def test_preset_of_a_family_not_built_exits_2(tmp_path):
  out = run("train", "model_name=qwen3-next-80b-a3b", "run_name=x", cwd=tmp_path)
  assert out.returncode == 2, out.stderr[-2000:]
  assert "is not built" in out.stderr and "Traceback" not in out.stderr
