"""Tokens/s of the probe config on 1, 2 and 8 fake CPU devices under data, fsdp, tensor and context parallelism.

Each cell is its own process (the fake device count is fixed when JAX starts), running
benchmarks/train_throughput.py with the same per-device batch, so the global batch grows with the device count.

Run: .venv/bin/python benchmarks/parallelism.py [--steps 8] [--warmup 2] [--devices 1 2 8] [--axes data fsdp tensor]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def run(devices: int, axis: str, steps: int, warmup: int, extra: list[str]) -> dict | None:
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  sizes = {"data": 1, "fsdp": 1, "tensor": 1, "context": 1}
  sizes[axis] = devices
  overrides = [f"ici_{k}_parallelism={v}" for k, v in sizes.items()]
  cmd = [sys.executable, str(HERE / "train_throughput.py"), "--steps", str(steps), "--warmup", str(warmup), "--devices", str(devices),
         "--json", *overrides, *extra]
  out = subprocess.run(cmd, env=env, capture_output=True, text=True)
  for line in reversed(out.stdout.splitlines()):
    if line.startswith("{"):
      return json.loads(line)
  print(f"devices={devices} {axis}: failed\n{out.stderr[-1500:]}", file=sys.stderr)
  return None


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--steps", type=int, default=8)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--devices", type=int, nargs="+", default=[1, 2, 8])
  p.add_argument("--axes", nargs="+", default=["data", "fsdp", "tensor"])
  args, extra = p.parse_known_args()
  print("| devices | parallelism | global batch | tokens/s | tokens/s/device | median step (ms) |")
  print("|---|---|---|---|---|---|")
  for n in args.devices:
    for axis in args.axes if n > 1 else ["(none)"]:
      r = run(n, "data" if axis == "(none)" else axis, args.steps, args.warmup, extra)
      if r is None:
        continue
      print(f"| {n} | {axis} | {r.get('global_batch')} | {r['tokens_per_s']:.0f} | {r['tokens_per_s'] / n:.0f} | "
            f"{r['step_s_median'] * 1000:.0f} |", flush=True)


if __name__ == "__main__":
  main()
