"""Merge order, provenance, presets, env and CLI parsing of the config loader."""

from pathlib import Path

import pytest

from maxtext_like.config import ConfigError, load_config
from maxtext_like.config import paths, schema
from maxtext_like.config.loader import shipped_defaults


def load(*argv, env=None):
  return load_config(["base.yml", *argv], env=env or {})


def problems(*argv, env=None):
  with pytest.raises(ConfigError) as e:
    load(*argv, env=env)
  return e.value.problems


def test_bare_base_yml_resolves_to_shipped_file(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  cfg = load_config(["base.yml"], env={})
  assert cfg.model.decoder_block == "llama2"
  assert cfg.source("steps").startswith(str(paths.configs_dir() / "base.yml")) or cfg.source("steps").startswith("configs/base.yml")


def test_merge_order_base_preset_cli_env():
  cfg = load("steps=7", "model_name=default", env={"M_LOG_PERIOD": "3", "M_STEPS": "9"})
  assert cfg.training.steps == 9 and cfg.source("steps") == "env M_STEPS"
  assert cfg.history("steps")[-1] == (7, "cli")
  assert cfg.training.log_period == 3
  assert cfg.derived.emb_dim == 256 and cfg.source("base_emb_dim").startswith("preset ")
  assert cfg.source("learning_rate").endswith(f"base.yml:{_line_of('learning_rate')}")


def _line_of(key):
  for i, line in enumerate((paths.configs_dir() / "base.yml").read_text().splitlines(), 1):
    if line.startswith(f"{key}:"):
      return i
  raise AssertionError(key)


def test_values_parse_by_schema_type():
  cfg = load("steps=1_000", "run_name=123", "max_num_checkpoints_to_keep=none", "mlp_activations=[gelu, linear]",
             "override_model_config=true", "learning_rate=1e-4", "per_device_batch_size=0.5")
  assert cfg.training.steps == 1000
  assert cfg.run.run_name == "123"
  assert cfg.checkpointing.max_num_checkpoints_to_keep is None
  assert cfg.model.mlp_activations == ["gelu", "linear"]
  assert cfg.optimizer.learning_rate == pytest.approx(1e-4)
  assert cfg.dataset.per_device_batch_size == 0.5


def test_preset_conflict_needs_override():
  (p,) = problems("model_name=llama3-8b", "base_emb_dim=512")
  assert p.key == "base_emb_dim" and "override_model_config" in p.message and "llama3-8b.yml:" in p.message
  cfg = load("model_name=llama3-8b", "base_emb_dim=512", "override_model_config=true")
  assert cfg.derived.emb_dim == 512
  assert load("model_name=llama3-8b", "base_emb_dim=4096").derived.emb_dim == 4096  # same value: no conflict


def test_env_conflicts_with_preset_too():
  (p,) = problems(env={"M_VOCAB_SIZE": "100"})
  assert p.key == "vocab_size" and p.source == "env M_VOCAB_SIZE"


def test_unknown_keys_get_did_you_mean_and_all_problems_at_once():
  ps = problems("stpes=3", "learning_rat=0.1", "dtype=float8", env={"M_LOG_PERIODD": "1"})
  by_key = {p.key: p for p in ps}
  assert "did you mean 'steps'" in by_key["stpes"].message
  assert "did you mean 'learning_rate'" in by_key["learning_rat"].message
  assert "did you mean 'log_period'" in by_key["log_periodd"].message and by_key["log_periodd"].source == "env M_LOG_PERIODD"
  assert "'float32'" in by_key["dtype"].allowed
  assert len(ps) == 4


def test_derived_keys_cannot_be_set():
  (p,) = problems("emb_dim=3")
  assert "derived" in p.message


def test_base_config_chain_and_file_lines(tmp_path):
  parent = tmp_path / "parent.yml"
  parent.write_text("base_config: base.yml\nsteps: 11\nlog_period: 5\n")
  child = tmp_path / "child.yml"
  child.write_text("base_config: parent.yml\n\nlog_period: 6\n")
  cfg = load_config([str(child)], env={})
  assert cfg.training.steps == 11 and cfg.source("steps").endswith("parent.yml:2")
  assert cfg.training.log_period == 6 and cfg.source("log_period").endswith("child.yml:3")


def test_file_problems_name_file_and_line(tmp_path):
  bad = tmp_path / "bad.yml"
  bad.write_text("base_config: base.yml\nsteps: [1\n")
  with pytest.raises(ConfigError) as e:
    load_config([str(bad)], env={})
  assert "bad.yml:" in str(e.value) and "YAML" in str(e.value)
  dup = tmp_path / "dup.yml"
  dup.write_text("base_config: base.yml\nsteps: 1\nsteps: 2\n")
  with pytest.raises(ConfigError, match="set twice"):
    load_config([str(dup)], env={})


def test_missing_config_file_and_non_override_arguments():
  with pytest.raises(ConfigError, match="not found"):
    load_config(["nope.yml"], env={})
  with pytest.raises(ConfigError, match="not a key=value"):
    load_config(["base.yml", "steps"], env={})


def test_file_chain_must_reach_base(tmp_path):
  lonely = tmp_path / "lonely.yml"
  lonely.write_text("steps: 3\n")
  with pytest.raises(ConfigError, match="shipped base.yml"):
    load_config([str(lonely)], env={})


def test_logical_axis_rules_merge_by_name_or_override():
  cfg = load("logical_axis_rules=[[embed, [tensor]], [my_axis, [data]]]")
  rules = dict((r[0], r[1]) for r in cfg.mesh.logical_axis_rules)
  assert rules["embed"] == ["tensor"] and rules["my_axis"] == ["data"] and "mlp" in rules
  cfg = load("logical_axis_rules=[[embed, [tensor]]]", "override_logical_axis_rules=true")
  assert [r[0] for r in cfg.mesh.logical_axis_rules] == ["embed"]


def test_model_name_accepts_a_model_yml_path(tmp_path):
  m = tmp_path / "model.yml"
  m.write_text("base_emb_dim: 64\nbase_num_query_heads: 2\nbase_num_kv_heads: 1\nvocab_size: 100\n")
  cfg = load(f"model_name={m}")
  assert cfg.derived.emb_dim == 64 and cfg.derived.num_kv_heads == 1


def test_unknown_model_name_suggests_presets():
  (p,) = problems("model_name=lama3-8b")
  assert "llama3-8b" in p.message


def test_every_preset_loads():
  names = paths.preset_names()
  assert len(names) >= 60 and "default" in names and "llama3-8b" in names
  for name in names:
    cfg = load(f"model_name={name}")
    assert cfg.derived.emb_dim > 0, name


def test_presets_only_set_what_differs_from_base():
  defaults = shipped_defaults()
  from maxtext_like.config.yaml_io import read_flat_yaml
  for path in paths.presets_dir().glob("*.yml"):
    values, probs = read_flat_yaml(path)
    assert not probs
    for key, (value, src) in values.items():
      assert key in schema.ALL_KEYS, f"{src}: {key}"
      assert defaults[key] != value, f"{src}: {key} repeats the base.yml default"


def test_config_is_frozen():
  cfg = load()
  with pytest.raises(Exception):
    cfg.training.steps = 3


def test_no_jax_imported_by_config_loading():
  import subprocess, sys
  code = "import sys; from maxtext_like.config import load_config; load_config(['base.yml'], env={}); print('jax' in sys.modules)"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2])
  assert out.stdout.strip() == "False"


def test_secrets_are_masked_when_printed(capsys):
  from maxtext_like.config.cli import main
  from maxtext_like.training.loop import changed_keys_summary
  assert main(["base.yml", "hf_access_token=s3cret"]) == 0
  assert main(["base.yml", "hf_access_token=s3cret", "--format", "json"]) == 0
  assert main(["base.yml", "hf_access_token=s3cret", "--explain", "hf_access_token"]) == 0
  assert "s3cret" not in capsys.readouterr().out
  assert "s3cret" not in changed_keys_summary(load("hf_access_token=s3cret"))
