"""`python -m maxtext_like.launch {xpk,slurm} --num_hosts N [launcher options] -- base.yml k=v ...`

Prints the command (XPK workload for GKE/TPU) or sbatch script (SLURM) that runs `maxtext_like.train` with the
given config on N hosts, with JAX's distributed runtime set up. It validates the config first and launches nothing.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from maxtext_like.cli_common import HELP_FLAGS, print_help
from maxtext_like.config import ConfigError, load_config


def xpk_command(args, train_argv: list[str]) -> str:
  train = " ".join(["python3 -m maxtext_like.train", *map(shlex.quote, train_argv)])
  parts = ["xpk workload create", f"--cluster {args.cluster}", f"--workload {args.workload}", f"--device-type {args.device_type}",
           f"--num-slices {args.num_slices}", f"--docker-image {args.docker_image}"]
  if args.project:
    parts.append(f"--project {args.project}")
  if args.zone:
    parts.append(f"--zone {args.zone}")
  # XPK starts one process per host and exports the TPU/GKE environment that jax.distributed.initialize() detects.
  parts.append(f"--command {shlex.quote(train)}")
  return " \\\n  ".join(parts)


def slurm_script(args, train_argv: list[str]) -> str:
  train = " ".join(["python -m maxtext_like.train", *map(shlex.quote, train_argv)])
  lines = [
      "#!/bin/bash",
      f"#SBATCH --job-name={args.workload}",
      f"#SBATCH --nodes={args.num_hosts}",
      "#SBATCH --ntasks-per-node=1",
      f"#SBATCH --gpus-per-node={args.gpus_per_node}",
      f"#SBATCH --time={args.time}",
      *( [f"#SBATCH --partition={args.partition}"] if args.partition else []),
      "set -euo pipefail",
      "# One process per node; process 0's host is the coordinator of jax.distributed.",
      'export JAX_COORDINATOR_ADDRESS="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1):' + str(args.port) + '"',
      'export JAX_NUM_PROCESSES="$SLURM_NNODES"',
      "srun --kill-on-bad-exit=1 bash -c 'JAX_PROCESS_ID=$SLURM_PROCID " + train.replace("'", "'\\''") + "'",
  ]
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if any(a in HELP_FLAGS for a in argv[:argv.index("--") if "--" in argv else len(argv)]):
    return print_help(__doc__ or "", "launch")
  if "--" not in argv:
    print("launch: put the training config after --, e.g. launch slurm --num_hosts 2 -- base.yml run_name=r1", file=sys.stderr)
    return 2
  i = argv.index("--")
  ours, train_argv = argv[:i], argv[i + 1:]
  p = argparse.ArgumentParser(prog="python -m maxtext_like.launch")
  p.add_argument("kind", choices=["xpk", "slurm"])
  p.add_argument("--num_hosts", type=int, required=True)
  p.add_argument("--workload", default="maxtext-like")
  p.add_argument("--cluster", default="my-cluster")
  p.add_argument("--device_type", default="v5litepod-16")
  p.add_argument("--num_slices", type=int, default=1)
  p.add_argument("--docker_image", default="maxtext_like:latest")
  p.add_argument("--project", default="")
  p.add_argument("--zone", default="")
  p.add_argument("--gpus_per_node", type=int, default=8)
  p.add_argument("--partition", default="")
  p.add_argument("--time", default="24:00:00")
  p.add_argument("--port", type=int, default=12355)
  args = p.parse_args(ours)
  try:
    cfg = load_config(train_argv)
  except ConfigError as e:
    print(f"launch: {e}", file=sys.stderr)
    return 2
  if cfg.run.run_name == "":
    print("launch: set run_name so that every host writes to (and resumes from) the same run", file=sys.stderr)
    return 2
  print(xpk_command(args, train_argv) if args.kind == "xpk" else slurm_script(args, train_argv))
  return 0


if __name__ == "__main__":
  sys.exit(main())
