"""`python -m maxtext_like.generate_param_only_checkpoint base.yml run_name=x load_full_state_path=DIR [force_unroll=true]`

A parameters-only checkpoint from a training checkpoint (MaxText's command of the same name): the parameters of
`load_full_state_path` (a step directory with optimizer state; or `load_parameters_path`) are written without the
optimizer state to <base_output_directory>/<run_name>/checkpoints/0, readable as `load_parameters_path`. With
`force_unroll=true` a scanned model's stacked layers are unrolled into one entry per layer, so the checkpoint loads
with `scan_layers=false` (the serving layout); its saved config says so.
"""

from __future__ import annotations

import os
import sys

from maxtext_like.cli_common import run_entry_point


def generate(cfg) -> tuple[str, bool]:
  """Write the parameters-only checkpoint; returns (its step directory, whether its layers are scanned)."""
  from flax import nnx

  from maxtext_like.config import ConfigError, Problem
  from maxtext_like.inference.engine import unscanned
  from maxtext_like.inference.loading import load_float
  from maxtext_like.runtime.checkpoints import write_params
  from maxtext_like.training.loop import config_record

  ck = cfg.checkpointing
  source = ck.load_full_state_path or ck.load_parameters_path
  if not source:
    raise ConfigError([Problem("load_full_state_path", "names the training checkpoint to take the parameters from",
                               "", allowed="a step directory, e.g. outputs/run/checkpoints/300")])
  model, _ = load_float(cfg, source)
  record = config_record(cfg)
  if ck.force_unroll and model.spec.scan_layers:
    model = unscanned(model)
    record["flat"]["scan_layers"] = False
  for key in ("load_full_state_path", "load_parameters_path", "force_unroll"):  # what the new checkpoint needs
    record["flat"][key] = "" if key != "force_unroll" else False
  out = os.path.join(cfg.derived.checkpoint_dir, "0")
  params = nnx.state(model, nnx.Param)  # as training saves them, so every loader reads it
  return write_params(out, params, record, what="the parameters-only checkpoint"), model.spec.scan_layers


def main(argv: list[str] | None = None) -> int:
  def body(cfg):
    out, scanned = generate(cfg)
    print(f"parameters written to {out}; load them with load_parameters_path={out} "
          f"scan_layers={str(scanned).lower()}", flush=True)
  return run_entry_point("generate_param_only_checkpoint", sys.argv[1:] if argv is None else argv, body)


if __name__ == "__main__":
  sys.exit(main())
