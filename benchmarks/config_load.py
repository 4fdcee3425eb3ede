"""Time to load and validate base.yml + a preset + 10 overrides: warm (median in one process) and cold (new process).

Run: .venv/bin/python benchmarks/config_load.py [--repeats 50] [--cold 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

ARGV = ["base.yml", "model_name=llama3-8b", "run_name=bench", "steps=1000", "learning_rate=1e-4", "per_device_batch_size=2",
        "max_target_length=4096", "ici_fsdp_parallelism=-1", "remat_policy=full", "log_period=10", "checkpoint_period=500",
        "warmup_steps_fraction=0.05"]


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--repeats", type=int, default=50)
  p.add_argument("--cold", type=int, default=5)
  args = p.parse_args()
  t0 = time.perf_counter()
  from maxtext_like.config import load_config
  import_s = time.perf_counter() - t0
  first = time.perf_counter()
  load_config(ARGV, env={})
  first_s = time.perf_counter() - first
  warm = []
  for _ in range(args.repeats):
    t = time.perf_counter()
    load_config(ARGV, env={})
    warm.append(time.perf_counter() - t)
  code = f"import time; t=time.perf_counter(); from maxtext_like.config import load_config; load_config({ARGV!r}, env={{}}); print(time.perf_counter()-t)"
  cold = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout) for _ in range(args.cold)]
  print("| measurement | seconds |")
  print("|---|---|")
  print(f"| import maxtext_like.config | {import_s:.3f} |")
  print(f"| first load in process | {first_s:.4f} |")
  print(f"| warm load, median of {args.repeats} | {statistics.median(warm):.4f} |")
  print(f"| cold process (import + load), median of {args.cold} | {statistics.median(cold):.3f} |")


if __name__ == "__main__":
  main()
