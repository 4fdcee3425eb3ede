"""Every entry point answers -h / --help with its usage on stdout and exit code 0, before any config is loaded."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["train", "decode", "eval", "train_compile", "convert", "launch", "data_inspect", "serve",
                                    "inference_microbenchmark"])
def test_help_exits_0_with_usage(module):
  out = subprocess.run([sys.executable, "-m", f"maxtext_like.{module}", "--help"], capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 0, out.stderr
  assert f"maxtext_like.{module}" in out.stdout and not out.stderr.strip()
