"""Long-sequence training on fake CPU devices: block-sparse flash attention and load-balanced context parallelism.

Rows (probe config of train_throughput.py at a long sequence, per-device batch 1, each its own process):
  1 device   dot_product attention (materialised [T, T] logits)
  1 device   flash (block-sparse: skips key blocks no query of a block can see)
  2 devices  fsdp=2, flash (reference layout: whole sequences per device)
  2 devices  context=2, flash, context_parallel_load_balance=false (shard 0 holds the early tokens: less work)
  2 devices  context=2, flash, load-balanced dual_chunk_swap (the default)
  2 devices  context=2, flash, load-balanced striped

Run: .venv/bin/python benchmarks/context_parallel.py [--seq 4096] [--steps 3] [--warmup 1] [key=value ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from parallelism import run  # noqa: E402  (one process per cell, same probe config)

ROWS = [
    (1, "data", "dot_product", []),
    (1, "data", "flash", []),
    (2, "fsdp", "flash", []),
    (2, "context", "flash, unbalanced", ["context_parallel_load_balance=false"]),
    (2, "context", "flash, dual_chunk_swap", ["context_parallel_reorder_strategy=dual_chunk_swap"]),
    (2, "context", "flash, striped", ["context_parallel_reorder_strategy=striped"]),
]


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--seq", type=int, default=4096)
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--warmup", type=int, default=1)
  args, extra = p.parse_known_args()
  print(f"sequence length {args.seq}, per-device batch 1")
  print("| devices | parallelism | attention | tokens/s | median step (ms) |")
  print("|---|---|---|---|---|")
  for devices, axis, label, overrides in ROWS:
    kernel = label.split(",")[0]
    r = run(devices, axis, args.steps, args.warmup, [f"max_target_length={args.seq}", "per_device_batch_size=1",
                                                     f"attention={kernel}", *overrides, *extra])
    if r is not None:
      print(f"| {devices} | {axis if devices > 1 else '(none)'} | {label} | {r['tokens_per_s']:.0f} | "
            f"{r['step_s_median'] * 1000:.0f} |", flush=True)


if __name__ == "__main__":
  main()
