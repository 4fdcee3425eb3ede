"""Decode step time of the serving engine with a float vs quantized KV cache, side by side in one process.

Probe model of `benchmarks/decode_vs_maxtext.py` (emb 256, 4 layers, 4 kv heads of 64, vocab 32000, float32,
seeded init, attention=dot_product, scan_layers=false). Per (batch, max_target_length) cell, one engine per cache
kind, every slot filled with a 64-token prompt, 3 warm-up steps; then --reps rounds, each timing --steps greedy
`Engine.generate` calls of every engine in turn (so a busy moment on the shared machine hits all of them), and the
median ms per step is reported.

Run: .venv/bin/python benchmarks/kv_quant_decode.py [--cells 1x256 4x1088] [--reps 5] [--steps 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import jax

from maxtext_like.config import load_config
from maxtext_like.inference.engine import Engine
from maxtext_like.inference.loading import load_model

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from decode_vs_maxtext import PROBE  # noqa: E402

KINDS = {"float32": [], "int8 dkv": ["quantize_kvcache=true", "kv_quant_dtype=int8", "kv_quant_axis=dkv"],
         "int4 dkv": ["quantize_kvcache=true", "kv_quant_dtype=int4", "kv_quant_axis=dkv"]}


def filled_engine(batch: int, max_target: int, extra: list[str]):
  cfg = load_config(["base.yml", "override_model_config=true", *PROBE, f"per_device_batch_size={batch}",
                     f"max_target_length={max_target}", "max_prefill_predict_length=64", "init_weights_seed=0",
                     "run_name=kv_quant_decode", "base_output_directory=/tmp/kv_quant_decode", *extra], env={})
  engine = Engine(cfg, load_model(cfg).model)
  params, state = engine.load_params(), engine.init_decode_state()
  for slot in range(engine.max_concurrent_decodes):
    state = engine.insert(engine.prefill_ids(params, list(range(1, 65))), state, slot)
  for _ in range(3):
    state, _ = engine.generate(params, state, greedy_only=True)
  return [engine, params, jax.block_until_ready(state)]


def side_by_side(argv: list[str], kinds: dict[str, list[str]], description: str, cells: list[str]) -> None:
  """The table for `kinds` (name -> extra config keys): median ms per step of each, and the first kind's time over
  each other's."""
  p = argparse.ArgumentParser(description=description)
  p.add_argument("--cells", nargs="+", default=cells, help="batch x max_target_length")
  p.add_argument("--reps", type=int, default=5)
  p.add_argument("--steps", type=int, default=20)
  a = p.parse_args(argv)
  first, *others = kinds
  print(f"{'batch x max_target':<20}" + "".join(f"{k + ' ms':>14}" for k in kinds)
        + "".join(f"{first + ' / ' + k:>20}" for k in others))
  for cell in a.cells:
    batch, max_target = (int(x) for x in cell.split("x"))
    runs = {k: filled_engine(batch, max_target, extra) for k, extra in kinds.items()}
    times = {k: [] for k in kinds}
    for _ in range(a.reps):
      for k, run in runs.items():
        engine, params, state = run
        t = time.perf_counter()
        for _ in range(a.steps):
          state, _ = engine.generate(params, state, greedy_only=True)
        run[2] = jax.block_until_ready(state)
        times[k].append((time.perf_counter() - t) / a.steps * 1e3)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{cell:<20}" + "".join(f"{med[k]:>14.2f}" for k in kinds)
          + "".join(f"{med[first] / med[k]:>19.2f}x" for k in others), flush=True)


if __name__ == "__main__":
  side_by_side(sys.argv[1:], KINDS, __doc__.splitlines()[0], ["1x256", "4x1088"])
