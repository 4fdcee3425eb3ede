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

# The keys a new user sets first, per entry point (shown by --help with their default and description).
FIRST_KEYS: dict[str, tuple[str, ...]] = {
    "train": ("run_name", "model_name", "steps", "per_device_batch_size", "max_target_length", "learning_rate",
              "dataset_type", "dataset_path", "tokenizer_path", "base_output_directory", "checkpoint_period"),
    "decode": ("run_name", "load_parameters_path", "model_name", "prompt", "max_prefill_predict_length",
               "max_target_length", "decode_sampling_strategy", "tokenizer_path"),
    "convert": ("model_name", "scan_layers", "weight_dtype"),
    "generate_param_only_checkpoint": ("run_name", "load_full_state_path", "force_unroll", "model_name",
                                       "base_output_directory"),
    "eval": ("run_name", "load_parameters_path", "model_name", "quantization", "checkpoint_is_quantized", "eval_steps",
             "eval_per_device_batch_size", "dataset_type"),
    "train_compile": ("model_name", "compile_topology_num_devices", "compile_topology_num_slices",
                      "per_device_batch_size", "max_target_length", "compiled_trainstep_file"),
    "launch": ("run_name", "model_name", "base_output_directory", "steps"),
    "serve": ("load_parameters_path", "run_name", "model_name", "per_device_batch_size", "max_target_length",
              "tokenizer_path", "prometheus_port"),
    "inference_microbenchmark": ("model_name", "load_parameters_path", "inference_microbenchmark_prefill_lengths",
                                 "inference_microbenchmark_stages", "inference_microbenchmark_loop_iters"),
    "data_inspect": ("dataset_type", "dataset_path", "tokenizer_path", "max_target_length", "packing"),
}


def first_keys_text(name: str) -> str:
  """The first keys of an entry point with their shipped default and one-line description (no JAX import)."""
  from maxtext_like.config.loader import shipped_defaults
  from maxtext_like.config.schema import field_info
  defaults = shipped_defaults()
  keys = FIRST_KEYS.get(name, ())
  if not keys:
    return ""
  width = max(len(k) for k in keys)
  lines = [f"  {k:<{width}}  (default {defaults.get(k)!r}) {field_info(k).description or ''}".rstrip() for k in keys]
  return "keys people set first (key=value after the config file):\n" + "\n".join(lines)


def print_help(usage: str, name: str = "") -> int:
  """The entry point's usage (its module docstring), its first keys, and how to list and explain every key; exit 0."""
  print(usage.strip())
  first = first_keys_text(name)
  if first:
    print("\n" + first)
  print("\nevery key, with the source of its value: python -m maxtext_like.config configs/base.yml [key=value ...]"
        "\none key (description, default, allowed values): python -m maxtext_like.config configs/base.yml --explain KEY"
        "\nall keys with descriptions: docs/config.md; model presets: python -m maxtext_like.config --presets")
  return 0


def run_entry_point(name: str, argv: Sequence[str], body: Callable) -> int:
  from maxtext_like.config import ConfigError, load_config
  if any(a in HELP_FLAGS for a in argv):
    import importlib
    return print_help(importlib.import_module(f"maxtext_like.{name}").__doc__ or name, name)
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
