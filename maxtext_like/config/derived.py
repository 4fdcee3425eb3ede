"""Derived values: a pure function of the validated keys (no devices, no JAX)."""

from __future__ import annotations

import datetime
import math
import os
from collections.abc import Mapping
from typing import Any

from maxtext_like.config.errors import Problem


def scale_dims(scale: int) -> tuple[int, int, int]:
  """MaxText's global_parameter_scale rule -> (heads/mlp factor, emb factor, layers factor)."""
  base, rem = divmod(int(math.log2(scale)), 3)
  return 2 ** (base + (rem > 0)), 2 ** (base + (rem > 1)), 2**base


def derive(v: Mapping[str, Any], now: datetime.datetime | None = None) -> tuple[dict[str, Any], list[Problem]]:
  """The `derived` section from flat values `v`. Returns (values, problems)."""
  problems: list[Problem] = []
  scale = v["global_parameter_scale"]
  if scale < 1 or scale & (scale - 1):
    problems.append(Problem("global_parameter_scale", "must be a power of two", scale, allowed="1, 2, 4, 8, ..."))
    scale = 1
  heads_f, emb_f, layers_f = scale_dims(scale)
  run_name = v["run_name"] or "run_" + (now or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y%m%d_%H%M%S")
  out_dir = os.path.join(v["base_output_directory"], run_name)
  lr_steps = v["learning_rate_schedule_steps"]
  steps = v["steps"]
  if lr_steps == -1:
    lr_steps = steps
  if steps == -1:
    steps = lr_steps
  return {
      "emb_dim": v["base_emb_dim"] * emb_f,
      "num_query_heads": v["base_num_query_heads"] * heads_f,
      "num_kv_heads": v["base_num_kv_heads"] * heads_f,
      "mlp_dim": v["base_mlp_dim"] * heads_f,
      "moe_mlp_dim": (v["base_moe_mlp_dim"] if v["base_moe_mlp_dim"] > 0 else v["base_mlp_dim"]) * heads_f,
      "num_decoder_layers": v["base_num_decoder_layers"] * layers_f,
      "run_name": run_name,
      "checkpoint_dir": os.path.join(out_dir, "checkpoints"),
      "metrics_dir": os.path.join(out_dir, "metrics"),
      "tensorboard_dir": os.path.join(out_dir, "tensorboard"),
      "learning_rate_schedule_steps": lr_steps,
      "steps": steps,
      "eval_per_device_batch_size": v["eval_per_device_batch_size"] or v["per_device_batch_size"],
      "using_pipeline_parallelism": v["ici_pipeline_parallelism"] > 1 or v["dcn_pipeline_parallelism"] > 1,
  }, problems
