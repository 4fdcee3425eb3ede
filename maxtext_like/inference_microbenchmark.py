"""`python -m maxtext_like.inference_microbenchmark base.yml [key=value ...]`: time the serving engine's prefill,
insert and generate steps, with MaxText's keys and result format.

  inference_microbenchmark_prefill_lengths   comma-separated prefill lengths, e.g. "64,128"
  inference_microbenchmark_stages            "prefill,generate", optionally "prefill-multisampling"
  inference_microbenchmark_loop_iters        timed calls per figure (after 2 warm-up calls)
  inference_microbenchmark_num_samples       sample counts for the prefill-multisampling stage
  inference_microbenchmark_log_file_path     also write the JSON results there

Slots: max_concurrent_decodes = per_device_batch_size; cache rows of max_target_length. Prints each figure as
MaxText does, then the results as one JSON document on stdout (MaxText's keys, plus `memory_bandwidth`).
"""

from __future__ import annotations

import json
import sys

from maxtext_like.cli_common import run_entry_point

STAGES = ("prefill", "generate", "prefill-multisampling")


def check(cfg) -> list[int]:
  """The prefill lengths; ConfigError for keys the benchmark cannot run with."""
  from maxtext_like.config import ConfigError, Problem
  inf = cfg.inference
  problems, lengths = [], []
  raw = str(inf.inference_microbenchmark_prefill_lengths)
  try:
    from maxtext_like.inference.microbenchmark import prefill_lengths
    lengths = prefill_lengths(raw)
  except ValueError:
    problems.append(Problem("inference_microbenchmark_prefill_lengths", "must be comma-separated integers", raw))
  bad = [n for n in lengths if not 1 <= n < inf.max_target_length]
  if bad or (not lengths and not problems):
    problems.append(Problem("inference_microbenchmark_prefill_lengths", f"each length must be in 1..max_target_length"
                            f" - 1 = {inf.max_target_length - 1} (the slot needs room to generate)", raw))
  stages = [s.strip() for s in inf.inference_microbenchmark_stages.split(",") if s.strip()]
  unknown = [s for s in stages if s not in STAGES]
  if unknown or not stages:
    problems.append(Problem("inference_microbenchmark_stages", f"unknown stage(s) {unknown}",
                            inf.inference_microbenchmark_stages, allowed=", ".join(STAGES)))
  if inf.inference_microbenchmark_loop_iters < 1:
    problems.append(Problem("inference_microbenchmark_loop_iters", "must be at least 1",
                            inf.inference_microbenchmark_loop_iters))
  if "prefill-multisampling" in stages and any(int(n) < 1 for n in inf.inference_microbenchmark_num_samples):
    problems.append(Problem("inference_microbenchmark_num_samples", "every sample count must be at least 1",
                            inf.inference_microbenchmark_num_samples))
  if problems:
    raise ConfigError(problems)
  return lengths


def benchmark(cfg) -> dict:
  """Loads the model (checkpoint or seeded init), builds the engine and runs the stages; returns the results."""
  from maxtext_like.inference.engine import Engine
  from maxtext_like.inference.loading import load_model
  from maxtext_like.inference.microbenchmark import print_results_for_analyze, run_benchmarks
  from maxtext_like.runtime.tokenizer import tokenizer_for
  lengths = check(cfg)
  prompt = tokenizer_for(cfg).encode(cfg.inference.prompt, add_eos=False)[:min(lengths)]
  loaded = load_model(cfg)
  print(f"parameters: {loaded.source}", file=sys.stderr, flush=True)
  engine = Engine(cfg, loaded.model)
  results = run_benchmarks(cfg, engine, prompt, log=lambda s: print(s, flush=True))
  print_results_for_analyze(results, log=lambda s: print(s, flush=True))
  return results


def main(argv: list[str] | None = None) -> int:
  def body(cfg):
    results = benchmark(cfg)
    path = cfg.inference.inference_microbenchmark_log_file_path
    if path:
      with open(path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    json.dump(results, sys.stdout)
    print(flush=True)
  return run_entry_point("inference_microbenchmark", sys.argv[1:] if argv is None else argv, body)


if __name__ == "__main__":
  sys.exit(main())
