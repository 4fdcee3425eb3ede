"""Decode throughput of the probe model (seeded init): prefill time and decode tokens/s at several batch sizes.

Same model as benchmarks/train_throughput.py's probe config (emb 256, 4 layers, 4 heads of 64, mlp 1024,
vocab 32000, float32), on one device. Each row prefills `--prefill` tokens per sequence into a KV cache of
prefill + decode slots, then decodes `--decode` tokens greedily.

Two measurements per batch size:
  * "jit step": `model.prefill` and `model.decode_step` + argmax, each under one `jax.jit` (graphdef/state split, so
    no per-call NNX graph traversal); decode tokens/s = batch / median per-step latency (each step
    `block_until_ready`-ed). Prefill time is the median over the repeats.
  * "generate_ids": the library's end-to-end path (maxtext_like.inference.static_batch.generate_ids, greedy), timed as a
    whole (prefill + decode + host round trips per token): tokens/s = batch * decode tokens / median wall time.
Warm-up (compilation) runs are excluded; medians because the 2-core CPU box is shared and noisy.

Run: .venv/bin/python benchmarks/decode_throughput.py [--batch 1 4] [--prefill 64] [--decode 64] [--repeats 5]
     [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

PROBE_MODEL = ["override_model_config=true", "base_emb_dim=256", "base_num_query_heads=4", "base_num_kv_heads=4",
               "head_dim=64", "base_mlp_dim=1024", "base_num_decoder_layers=4", "vocab_size=32000",
               "dtype=float32", "weight_dtype=float32", "enable_checkpointing=false", "run_name=bench_decode_nonexistent",
               "ici_fsdp_parallelism=1", "ici_data_parallelism=1", "ici_tensor_parallelism=1", "init_weights_seed=0"]


def parse(argv: list[str]):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, nargs="+", default=[1, 4])
  p.add_argument("--prefill", type=int, default=64, help="prompt tokens per sequence")
  p.add_argument("--decode", type=int, default=64, help="generated tokens per sequence")
  p.add_argument("--repeats", type=int, default=5, help="timed repeats per batch size (after one warm-up)")
  p.add_argument("--skip-engine", action="store_true", help="skip the generate_ids end-to-end rows")
  p.add_argument("--json", action="store_true")
  p.add_argument("overrides", nargs="*", help="config key=value overrides")
  return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
  args = parse(sys.argv[1:] if argv is None else argv)
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx
  from maxtext_like.config import load_config
  from maxtext_like.inference.loading import load_model
  from maxtext_like.inference.static_batch import generate_ids
  from maxtext_like.inference.sampling import SamplingOptions

  max_len = args.prefill + args.decode
  cfg = load_config(["base.yml", "model_name=default", *PROBE_MODEL, f"max_target_length={max_len}",
                     f"max_prefill_predict_length={args.prefill}", *args.overrides], env={})
  loaded = load_model(cfg)
  model = loaded.model
  graphdef, state = nnx.split(model)

  @jax.jit
  def prefill(state, tokens_BT):
    m = nnx.merge(graphdef, state)
    logits_BTV, cache = m.prefill(tokens_BT, max_length=max_len)
    return jnp.argmax(logits_BTV[:, -1], axis=-1).astype(jnp.int32), cache

  @jax.jit
  def decode(state, tok_B, cache):
    m = nnx.merge(graphdef, state)
    logits_BTV, cache = m.decode_step(tok_B[:, None], cache)
    return jnp.argmax(logits_BTV[:, -1], axis=-1).astype(jnp.int32), cache

  rng = np.random.default_rng(0)
  rows = []
  for B in args.batch:
    prompts = rng.integers(1, cfg.flat()["vocab_size"], size=(B, args.prefill), dtype=np.int32)
    tokens = jnp.asarray(prompts)
    prefill_s, step_s, loop_s = [], [], []
    for rep in range(args.repeats + 1):
      t = time.perf_counter()
      tok, cache = jax.block_until_ready(prefill(state, tokens))
      p_dt = time.perf_counter() - t
      steps, t_loop = [], time.perf_counter()
      for _ in range(args.decode):
        t = time.perf_counter()
        tok, cache = jax.block_until_ready(decode(state, tok, cache))
        steps.append(time.perf_counter() - t)
      l_dt = time.perf_counter() - t_loop
      if rep == 0:
        steps = steps[1:]  # the first decode call compiles; the rest of the warm-up pass is kept out too
        continue
      prefill_s.append(p_dt)
      step_s.extend(steps)
      loop_s.append(l_dt)
    step = statistics.median(step_s)
    row = {"path": "jit step", "batch": B, "prefill_ms": 1000 * statistics.median(prefill_s),
           "prefill_tokens_per_s": B * args.prefill / statistics.median(prefill_s),
           "decode_step_ms": 1000 * step, "decode_tokens_per_s": B / step,
           "decode_loop_tokens_per_s": B * args.decode / statistics.median(loop_s)}
    rows.append(row)
    if not args.skip_engine:
      ids = [list(map(int, p)) for p in prompts]
      kw = dict(max_prefill=args.prefill, max_target=max_len, eos_id=None, options=SamplingOptions())
      generate_ids(model, ids, **kw)  # warm-up / compile
      wall = []
      for _ in range(args.repeats):
        t = time.perf_counter()
        out = generate_ids(model, ids, **kw)
        wall.append(time.perf_counter() - t)
      assert all(len(o) == args.decode for o in out)
      w = statistics.median(wall)
      rows.append({"path": "generate_ids", "batch": B, "wall_ms": 1000 * w,
                   "end_to_end_tokens_per_s": B * args.decode / w})

  print(f"prefill {args.prefill} tokens, decode {args.decode} tokens, probe model, float32, "
        f"{jax.devices()[0].platform}; medians over {args.repeats} repeats")
  print("| path | batch | prefill (ms) | prefill tokens/s | decode step (ms) | decode tokens/s | "
        f"decode tokens/s ({args.decode}-step loop) | end-to-end tokens/s |")
  print("|---|---|---|---|---|---|---|---|")
  for r in rows:
    if r["path"] == "jit step":
      print(f"| jit step | {r['batch']} | {r['prefill_ms']:.1f} | {r['prefill_tokens_per_s']:.0f} | "
            f"{r['decode_step_ms']:.2f} | {r['decode_tokens_per_s']:.0f} | {r['decode_loop_tokens_per_s']:.0f} | |")
    else:
      print(f"| generate_ids | {r['batch']} | | | | | | {r['end_to_end_tokens_per_s']:.0f} "
            f"({r['wall_ms']:.0f} ms per call) |")
  if args.json:
    print(json.dumps(rows))


if __name__ == "__main__":
  main()
