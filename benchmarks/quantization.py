"""Quantization accuracy, size and speed on the default model (the README's first command), on this machine.

  .venv/bin/python benchmarks/quantization.py [--output_dir outputs] [--run_name demo] [--qat] [key=value ...]

Uses the float checkpoint of `run_name` (trains it with the README's command first if there is none) and prints:
- held-out perplexity (the embedded corpus's validation split, every batch) of float, int8 weight-only, int8
  weights+activations, int4 weight-only per channel and in sub-channel tiles, fp8, and the float model with an
  int8 KV cache (when that build has it), each with its change against float;
- how many of 20 greedy continuations (32 tokens) int8 weight-only reproduces exactly;
- quantized checkpoint bytes (written by `convert quantize`) against the float32 matmul weights, and cache bytes;
- decode step time of float and quantized weights, side by side (CPU: quantized matmuls are emulated, so the
  point here is memory and accuracy, not speed);
- with --qat: the final loss of `<run_name>_int8`, the same command with quantization=int8 (trained if missing),
  against the float run's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROMPTS = 20
NEW_TOKENS = 32


def latest_step(out: str, run: str) -> str | None:
  d = os.path.join(out, run, "checkpoints")
  steps = sorted(int(s) for s in os.listdir(d) if s.isdigit()) if os.path.isdir(d) else []
  return os.path.join(d, str(steps[-1])) if steps else None


def ensure_trained(out: str, run: str, *extra: str) -> str:
  from maxtext_like import train
  if latest_step(out, run) is None:
    print(f"training {run} (the README's first command{' with ' + ' '.join(extra) if extra else ''}) ...", flush=True)
    assert train.main(["base.yml", f"run_name={run}", f"base_output_directory={out}",
                       f"metrics_file={os.path.join(out, run, 'metrics.jsonl')}", *extra]) == 0
  return latest_step(out, run)


def final_loss(out: str, run: str) -> float | None:
  """The last training loss of a run from its metrics file, when it was trained with one."""
  p = os.path.join(out, run, "metrics.jsonl")
  if not os.path.isfile(p):
    return None
  with open(p) as f:
    losses = [json.loads(line)["loss"] for line in f if '"loss"' in line]
  return losses[-1] if losses else None


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--output_dir", default="outputs")
  ap.add_argument("--run_name", default="demo")
  ap.add_argument("--qat", action="store_true", help="also train (if missing) and compare int8 quantized training")
  ap.add_argument("overrides", nargs="*", help="key=value config overrides for every run (e.g. a smaller model)")
  args = ap.parse_args()
  out, run = os.path.abspath(args.output_dir), args.run_name
  path = ensure_trained(out, run, *args.overrides)

  import jax
  from maxtext_like.config import load_config
  from maxtext_like.convert.quantize import quantize
  from maxtext_like.eval import evaluate
  from maxtext_like.inference.engine import Engine, unscanned
  from maxtext_like.inference.loading import load_model
  from maxtext_like.models import ptq

  base = ["base.yml", f"run_name={run}", f"base_output_directory={out}", f"load_parameters_path={path}",
          *args.overrides]
  cfg_of = lambda *a: load_config([*base, *a], env={})  # noqa: E731

  # ---- perplexity ----
  schemes = [("float", []), ("int8 weight-only (int8w)", ["quantization=int8w"]),
             ("int8 weights+activations (int8)", ["quantization=int8"]),
             ("int4 weight-only, per channel (int4w)", ["quantization=int4w"]),
             ("int4 weight-only, 4 tiles per contraction", ["quantization=int4w", "quantization_local_shard_count=4"]),
             ("fp8 e4m3 weights+activations (fp8)", ["quantization=fp8"]),
             ("int8 KV cache (quantize_kvcache)", ["quantize_kvcache=true", "kv_quant_dtype=int8"])]
  ppl = {}
  print("| model | eval loss | perplexity | vs float |\n|---|---|---|---|")
  for name, extra in schemes:
    r = evaluate(cfg_of("eval_steps=-1", *extra))
    ppl[name] = r["perplexity"]
    change = f"{100 * (r['perplexity'] / ppl['float'] - 1):+.2f}%" if name != "float" else ""
    print(f"| {name} | {r['loss']:.4f} | {r['perplexity']:.3f} | {change} |", flush=True)

  # ---- greedy agreement ----
  from maxtext_like.api import generate
  texts = _prompts()
  gen = lambda *a: generate(load_config([*base, "max_prefill_predict_length=64",  # noqa: E731
                                         f"max_target_length={64 + NEW_TOKENS}", *a], env={}), texts)
  f_out, q_out = gen(), gen("quantization=int8w")
  same = sum(a == b for a, b in zip(f_out, q_out))
  print(f"\ngreedy continuations ({NEW_TOKENS} tokens) identical to float with int8w: {same} of {len(texts)}")

  # ---- bytes ----
  float_model = unscanned(load_model(cfg_of()).model)
  float_bytes = ptq.matmul_weight_bytes(float_model)
  print(f"\n| weights | matmul weight bytes (values + scales) | vs float32 |\n|---|---|---|\n"
        f"| float32 | {float_bytes / 1e6:.2f} MB | 100% |")
  for scheme, extra in (("int8w", []), ("int4w", []), ("int4w", ["quantization_local_shard_count=4"])):
    qdir = os.path.join(out, f"{run}_{scheme}{'_tiles' if extra else ''}_ckpt")
    if not os.path.isdir(qdir):
      quantize([*base, f"quantization={scheme}", *extra, f"save_quantized_params_path={qdir}"])
    q = load_model(cfg_of(f"quantization={scheme}", *extra, "checkpoint_is_quantized=true",
                          f"load_parameters_path={qdir}"))
    qb = ptq.matmul_weight_bytes(q.model)
    print(f"| {scheme}{' (4 tiles)' if extra else ''} | {qb / 1e6:.2f} MB | {100 * qb / float_bytes:.1f}% |")

  cache = {}
  for name, extra in (("float32", []), ("int8", ["quantize_kvcache=true", "kv_quant_dtype=int8"]),
                      ("int4", ["quantize_kvcache=true", "kv_quant_dtype=int4"])):
    cfg = cfg_of(*extra)
    engine = Engine(cfg, load_model(cfg).model)
    cache[name] = ptq.tree_bytes(engine.init_decode_state().cache)
  print("\n| KV cache | bytes (max_target_length x slots, scales included) | vs float32 |\n|---|---|---|")
  for name, b in cache.items():
    print(f"| {name} | {b / 1e6:.2f} MB | {100 * b / cache['float32']:.1f}% |")

  # ---- decode speed, side by side ----
  print("\n| weights | decode step (ms, best of 5 rounds x 16 steps, interleaved) | vs float |\n|---|---|---|")
  runs = {}
  for name, extra in (("float", []), ("int8w", ["quantization=int8w"]), ("int8", ["quantization=int8"])):
    cfg = cfg_of(*extra)
    engine = Engine(cfg, load_model(cfg).model)
    params = engine.load_params()
    state = engine.init_decode_state()
    prefix = engine.prefill_ids(params, list(range(1, 33)))
    for slot in range(engine.max_concurrent_decodes):
      state = engine.insert(prefix, state, slot)
    state, _ = engine.generate_n(params, state, None, 16)  # compile
    runs[name] = [engine, params, state, float("inf")]
  for _ in range(5):  # rounds alternate between the models, so a busy moment does not favour one
    for r in runs.values():
      engine, params, state, best = r
      t0 = time.perf_counter()
      state, toks = engine.generate_n(params, state, None, 16)
      jax.block_until_ready(toks)
      r[2], r[3] = state, min(best, (time.perf_counter() - t0) / 16)
  for name, r in runs.items():
    print(f"| {name} | {1e3 * r[3]:.2f} | {r[3] / runs['float'][3]:.2f}x |", flush=True)

  if args.qat:
    qat = ensure_trained(out, f"{run}_int8", "quantization=int8", *args.overrides)
    qat_eval = evaluate(load_config(["base.yml", f"run_name={run}_int8", f"base_output_directory={out}",
                                     f"load_parameters_path={qat}", "quantization=int8", "eval_steps=-1",
                                     *args.overrides], env={}))
    float_eval = evaluate(cfg_of("eval_steps=-1"))
    lf, lq = final_loss(out, run), final_loss(out, f"{run}_int8")
    print("\n| training (the README's run) | final training loss | held-out eval loss |\n|---|---|---|")
    print(f"| float | {'n/a (no metrics file)' if lf is None else f'{lf:.4f}'} | {float_eval['loss']:.4f} |")
    rel = "" if lf is None or lq is None else f" ({100 * (lq / lf - 1):+.2f}%)"
    print(f"| int8 quantized training | {'n/a' if lq is None else f'{lq:.4f}'}{rel} | {qat_eval['loss']:.4f} "
          f"({100 * (qat_eval['loss'] / float_eval['loss'] - 1):+.2f}%) |")


def _prompts(words: int = 8) -> list[str]:
  """PROMPTS openings of held-out text: `words` words from evenly spaced places of the corpus's eval split."""
  from maxtext_like import assets
  from maxtext_like.data.documents import read_documents
  tokens = " ".join(read_documents([assets.corpus_path("eval")])).split()
  step = max(1, len(tokens) // PROMPTS)
  return [" ".join(tokens[i * step:i * step + words]) for i in range(PROMPTS)]


if __name__ == "__main__":
  main()
