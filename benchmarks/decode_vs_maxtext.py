"""Decode tokens/s of our engine vs MaxText 0.2.5, side by side in one run, through both inference microbenchmarks.

Probe model (emb 256, 4 layers, 4 heads of 64, mlp 1024, vocab 32000, float32, seeded init), prefill 64, on CPU.
For every (batch, max_target_length) cell this script runs, one after the other in the same loop:
  ours:    python -m maxtext_like.inference_microbenchmark base.yml <probe> ...
  MaxText: /work/shared/tools/maxtext_peer/maxtext.sh microbenchmark <probe> ...
both with stages "prefill,generate", `inference_microbenchmark_loop_iters` timed AR steps after 2 warm-up steps
(every slot filled by prefill + insert first; MaxText's prefill stage inserts into slot i % slots, ours fills every
slot before the AR stage), scan_layers=false, attention=dot_product, per_device_batch_size = batch. Each reads the
other's JSON (MaxText's result keys). tokens/s = batch / AR step time. Cells alternate ours / MaxText so a busy
moment on the shared machine hits both; with --repeats the median step of each is reported, with each run's ratio
(ours against the MaxText run right after it) and the machine's memory bandwidth that our run measured: decode is
memory-bound, and when other tenants load the host's memory the step times move by up to 40%.

Run: .venv/bin/python benchmarks/decode_vs_maxtext.py [--batch 1 4] [--max-target 256 1088] [--iters 50]
     [--repeats 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAXTEXT = os.environ.get("MAXTEXT_PEER", os.path.join(os.path.dirname(ROOT), "shared", "tools", "maxtext_peer",
                                                      "maxtext.sh"))
PROBE = ["base_emb_dim=256", "base_num_query_heads=4", "base_num_kv_heads=4", "head_dim=64", "base_mlp_dim=1024",
         "base_num_decoder_layers=4", "vocab_size=32000", "dtype=float32", "weight_dtype=float32",
         "attention=dot_product", "scan_layers=false", "enable_checkpointing=false"]


def parse(argv):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, nargs="+", default=[1, 4])
  p.add_argument("--max-target", type=int, nargs="+", default=[256, 1088], help="max_target_length (cache row)")
  p.add_argument("--prefill", type=int, default=64)
  p.add_argument("--iters", type=int, default=50, help="timed AR steps (inference_microbenchmark_loop_iters)")
  p.add_argument("--repeats", type=int, default=1, help="runs of each side per cell (median reported)")
  p.add_argument("--json", action="store_true")
  return p.parse_args(argv)


def _keys(batch: int, max_target: int, prefill: int, iters: int, log: str) -> list[str]:
  return [*PROBE, f"per_device_batch_size={batch}", f"max_target_length={max_target}",
          f"max_prefill_predict_length={prefill}", f"inference_microbenchmark_prefill_lengths='{prefill}'",
          "inference_microbenchmark_stages=prefill,generate", f"inference_microbenchmark_loop_iters={iters}",
          f"inference_microbenchmark_log_file_path={log}"]


def run(cmd: list[str], log: str, env=None) -> dict:
  out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
  if out.returncode != 0 or not os.path.exists(log):
    sys.exit(f"failed ({out.returncode}): {' '.join(cmd)}\n{out.stderr[-3000:]}")
  with open(log, encoding="utf-8") as f:
    return json.load(f)


def ours(keys: list[str], log: str) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)  # one device, as MaxText's run
  cmd = [sys.executable, "-m", "maxtext_like.inference_microbenchmark", "base.yml", "override_model_config=true",
         "run_name=decode_vs_maxtext", f"base_output_directory={tempfile.gettempdir()}/decode_vs_maxtext", *keys]
  return run(cmd, log, env)


def maxtext(keys: list[str], log: str) -> dict:
  return run([MAXTEXT, "microbenchmark", "run_name=decode_vs_maxtext", *keys], log)


def main(argv=None) -> None:
  args = parse(sys.argv[1:] if argv is None else argv)
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for S in args.max_target:
      for B in args.batch:
        step, prefill, bandwidth = {"ours": [], "maxtext": []}, {"ours": [], "maxtext": []}, []
        for r in range(args.repeats):
          for name, fn in (("ours", ours), ("maxtext", maxtext)):
            log = os.path.join(tmp, f"{name}_{B}_{S}_{r}.json")
            res = fn(_keys(B, S, args.prefill, args.iters, log), log)
            step[name].append(res["autoregressive"]["step_in_ms"])
            prefill[name].append(res["prefill"][str(args.prefill)]["time_in_ms"])
            if name == "ours":
              bandwidth.append(res["memory_bandwidth"]["measured_GB_per_second"])
            print(f"batch {B} max_target_length {S} {name}: AR step {step[name][-1]:.2f} ms, prefill "
                  f"{prefill[name][-1]:.2f} ms", file=sys.stderr, flush=True)
        o, m = statistics.median(step["ours"]), statistics.median(step["maxtext"])
        rows.append({"batch": B, "max_target_length": S, "ours_step_ms": o, "maxtext_step_ms": m,
                     "ours_tokens_per_s": B / o * 1000, "maxtext_tokens_per_s": B / m * 1000, "ratio": m / o,
                     "ours_prefill_ms": statistics.median(prefill["ours"]),
                     "maxtext_prefill_ms": statistics.median(prefill["maxtext"]),
                     "run_ratios": [mr / orr for orr, mr in zip(step["ours"], step["maxtext"])],
                     "machine_GB_per_s": bandwidth})
  print(f"probe model, float32, prefill {args.prefill}, {args.iters} timed AR steps, median of {args.repeats} run(s)")
  print("| batch | max_target_length | ours AR step (ms) | ours tokens/s | MaxText AR step (ms) | MaxText tokens/s | "
        "ours/MaxText | each run's ratio | prefill ms ours / MaxText | machine GB/s |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['batch']} | {r['max_target_length']} | {r['ours_step_ms']:.2f} | {r['ours_tokens_per_s']:.0f} | "
          f"{r['maxtext_step_ms']:.2f} | {r['maxtext_tokens_per_s']:.0f} | **{r['ratio']:.2f}x** | "
          f"{', '.join(f'{x:.2f}' for x in r['run_ratios'])} | {r['ours_prefill_ms']:.1f} / {r['maxtext_prefill_ms']:.1f} | "
          f"{', '.join(f'{x:.0f}' for x in r['machine_GB_per_s'])} |")
  if args.json:
    print(json.dumps(rows))


if __name__ == "__main__":
  main()
