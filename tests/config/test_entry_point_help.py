"""Every entry point answers -h/--help with its usage, the keys people set first and how to list and explain every
key (exit 0, no config needed); each is a console script in pyproject."""

import importlib
import tomllib
from pathlib import Path

import pytest

ENTRY_POINTS = {"train": "maxtext_like.train", "decode": "maxtext_like.decode", "eval": "maxtext_like.eval", "convert": "maxtext_like.convert.__main__",
                "train_compile": "maxtext_like.train_compile", "launch": "maxtext_like.launch", "serve": "maxtext_like.serve",
                "inference_microbenchmark": "maxtext_like.inference_microbenchmark",
                "generate_param_only_checkpoint": "maxtext_like.generate_param_only_checkpoint",
                "data_inspect": "maxtext_like.data_inspect"}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_exits_zero_with_usage_and_first_keys(name, flag, capsys):
  from maxtext_like.cli_common import FIRST_KEYS
  rc = importlib.import_module(ENTRY_POINTS[name]).main([flag])
  out = capsys.readouterr()
  assert rc == 0 and out.err == ""
  assert f"maxtext_like.{name.split('.')[0]}" in out.out  # the usage line names the module
  assert "keys people set first" in out.out
  for key in FIRST_KEYS[name]:
    assert f"\n  {key} " in out.out
  assert "--explain KEY" in out.out and "docs/config.md" in out.out


def test_help_wins_over_a_bad_config(capsys):
  from maxtext_like import train
  assert train.main(["base.yml", "no_such_key=1", "--help"]) == 0
  assert "keys people set first" in capsys.readouterr().out


def test_every_entry_point_is_a_console_script():
  scripts = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]["scripts"]
  targets = {v.split(":")[0] for v in scripts.values()}
  assert set(ENTRY_POINTS.values()) <= targets and "maxtext_like.config.cli" in targets
  for name, target in scripts.items():
    assert name.startswith("maxtext-like-")
    module, func = target.split(":")
    assert callable(getattr(importlib.import_module(module), func))
