"""Shared entry-point behaviour: validate the config before touching devices; bad input -> one paragraph, exit 2."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence


def _bad_input_types() -> tuple[type, ...]:
  from maxtext_like.config import ConfigError
  from maxtext_like.models.registry import ModelSpecError
  from maxtext_like.runtime.checkpoints import CheckpointError
  from maxtext_like.data.errors import DataError
  return ConfigError, CheckpointError, FileNotFoundError, ModelSpecError, DataError


HELP_FLAGS = ("-h", "--help")


def print_help(usage: str) -> int:
  """The entry point's usage (its module docstring) and where every key is described; exit code 0."""
  print(usage.strip())
  print("\nEvery key: docs/config.md; one key: python -m maxtext_like.config base.yml --explain KEY")
  return 0


def run_entry_point(name: str, argv: Sequence[str], body: Callable) -> int:
  from maxtext_like.config import ConfigError, load_config
  if any(a in HELP_FLAGS for a in argv):
    import importlib
    return print_help(importlib.import_module(f"maxtext_like.{name}").__doc__ or name)
  try:
    cfg = load_config(list(argv))
  except ConfigError as e:
    print(f"{name}: {e}", file=sys.stderr)
    return 2
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  try:
    body(cfg)
  except _bad_input_types() as e:
    print(f"{name}: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print(f"{name}: interrupted", file=sys.stderr)
    return 130
  except Exception as e:  # noqa: BLE001 - anything else is a bug: let it raise with its traceback
    from maxtext_like.training.loop import TrainingAborted
    if isinstance(e, TrainingAborted):
      print(f"{name}: {e}", file=sys.stderr)
      return 3
    raise
  return 0
