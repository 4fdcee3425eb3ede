"""Serving engine on a mixed workload: continuous batching vs the static batch, prefix caching, paged vs contiguous.

Probe model (emb 256, 4 layers, 4 heads of 64, mlp 1024, vocab 32000, float32, seeded init, scan_layers=false),
greedy, no EOS (each request stops at its own output length). Three parts, each after an untimed warm-up pass
of the same work (so compilation is excluded):

1. batching: N requests, prompt lengths uniform in [--prompt-min, --prompt-max], output lengths in
   [--out-min, --out-max], --slots slots. Continuous = `Batcher.run` (a request takes a slot as soon as one is
   free), admitting the longest token budgets first (its default) and, as a second row, in the given order. Static = `static_batch.generate_ids` over consecutive groups of --slots requests, prompts padded to the
   longest allowed prompt, every row decoding until the group's longest output is done (max_target rounded up to
   64 tokens, so a handful of compiled variants). tokens/s counts only the tokens each request asked for.
   Latency: continuous from `Sequence.ttft_s` / `per_token_s` (all requests submitted at t=0); static returns a
   group's tokens together when the group finishes, so its TTFT is the group's finish time and per-token latency
   the group's decode time / its steps.
2. prefix caching: --prefix-requests requests sharing a 512-token system prompt plus a unique 16..64-token suffix,
   8 output tokens each, with and without `enable_prefix_caching` (chunked prefill off, max_prefill 1024).
3. paged cache: the same mixed workload at a fixed KV memory budget of --slots rows of max_target_length tokens.
   Contiguous: --slots slots. Paged (`attention=paged`, pages of --page tokens, the same bytes as a pool): up to
   --paged-slots slots (every slot is computed each step, live or not), a request admitted when the pool can hold its prompt + output in full (reserved, so no
   sequence runs out of pages mid-way); reports peak and mean concurrent sequences and tokens/s.

Run: .venv/bin/python benchmarks/serving_engine.py [--quick] [--parts batching prefix paged] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

PROBE = ["override_model_config=true", "base_emb_dim=256", "base_num_query_heads=4", "base_num_kv_heads=4",
         "head_dim=64", "base_mlp_dim=1024", "base_num_decoder_layers=4", "vocab_size=32000", "dtype=float32",
         "weight_dtype=float32", "scan_layers=false", "enable_checkpointing=false", "run_name=serving_bench_none",
         "base_output_directory=/tmp/serving_bench", "init_weights_seed=0"]


def parse(argv):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--quick", action="store_true", help="16 requests, prompts 8-128, outputs 8-64, 4 prefix requests")
  p.add_argument("--parts", nargs="+", default=["batching", "prefix", "paged"])
  p.add_argument("--requests", type=int, default=64)
  p.add_argument("--prompt-min", type=int, default=8)
  p.add_argument("--prompt-max", type=int, default=512)
  p.add_argument("--out-min", type=int, default=8)
  p.add_argument("--out-max", type=int, default=256)
  p.add_argument("--slots", type=int, default=8)
  p.add_argument("--paged-slots", type=int, default=24)
  p.add_argument("--page", type=int, default=32, help="pagedattn_tokens_per_page")
  p.add_argument("--prefix-requests", type=int, default=16)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--json", action="store_true")
  a = p.parse_args(argv)
  if a.quick:
    a.requests, a.prompt_max, a.out_max, a.prefix_requests = 16, 128, 64, 4
  return a


def workload(args):
  import numpy as np
  rng = np.random.default_rng(args.seed)
  prompts = [rng.integers(1, 32000, size=int(n)).tolist()
             for n in rng.integers(args.prompt_min, args.prompt_max + 1, size=args.requests)]
  outs = [int(n) for n in rng.integers(args.out_min, args.out_max + 1, size=args.requests)]
  return prompts, outs


def pct(xs, q):
  import numpy as np
  return float(np.percentile(np.asarray(xs, float), q)) if xs else float("nan")


def config(args, *extra):
  from maxtext_like.config import load_config
  return load_config(["base.yml", *PROBE, f"max_prefill_predict_length={args.prompt_max}",
                      f"max_target_length={args.prompt_max + args.out_max}", "attention=dot_product", *extra], env={})


def engine_for(cfg, slots):
  """One engine per config, reused across passes (its jitted functions compile once)."""
  from maxtext_like.inference.engine import Engine
  from maxtext_like.inference.loading import load_model
  return Engine(cfg, load_model(cfg).model, num_slots=slots)


def continuous(engine, prompts, outs, *, prefix_cache=None, reserve=None, order="longest_first"):
  """The requests through a fresh Batcher on `engine` (`Batcher.run`, admission `order`); returns (wall s,
  sequences, concurrency samples). With `reserve` (pages), a request is submitted only when the pool can hold all
  of it, in the given order."""
  from maxtext_like.inference.batching import Batcher, Request
  # reserve mode: short generate calls, so a finished request's pages are handed on soon
  b = Batcher(engine, engine.load_params(), eos_id=None, prefix_cache=prefix_cache,
              steps_per_call=2 if reserve else 8)
  live_counts = []
  t0 = time.perf_counter()
  if reserve is None:  # the offline driver, admitting in `order`
    seqs = b.run([Request(list(p), max_tokens=o) for p, o in zip(prompts, outs)], order=order,
                 on_step=lambda: live_counts.append(sum(s is not None for s in b.slots)))
    return time.perf_counter() - t0, [s[0] for s in seqs], live_counts
  else:  # paged: admit a request only when the pool can hold all of it (prompt + output), so none runs out
    pending = list(range(len(prompts)))
    held: dict[int, int] = {}
    ids = [None] * len(prompts)

    def done(i):
      return lambda sample, reason, error: held.pop(i, None)

    while pending or b.busy:
      while pending:
        i = pending[0]
        need = engine.paged.pages_for(len(prompts[i]) + outs[i] + 8)  # + a generate call's overshoot
        if sum(held.values()) + need > reserve or len(held) >= engine.max_concurrent_decodes:
          break
        pending.pop(0)
        held[i] = need
        ids[i] = b.submit(Request(list(prompts[i]), max_tokens=outs[i], on_done=done(i)))
      b.step()
      live_counts.append(sum(s is not None for s in b.slots))
  wall = time.perf_counter() - t0
  return wall, [b.sequences[i][0] for i in ids], live_counts


def static(cfg, model, prompts, outs, slots):
  """generate_ids over groups of `slots`; returns (wall s, ttft per request, per-token s per request)."""
  from maxtext_like.inference.sampling import SamplingOptions
  from maxtext_like.inference.static_batch import generate_ids
  inf = cfg.inference
  ttft, per_tok = [], []
  t0 = time.perf_counter()
  for g in range(0, len(prompts), slots):
    group, want = prompts[g:g + slots], outs[g:g + slots]
    steps = -(-max(want) // 64) * 64
    t = time.perf_counter()
    res = generate_ids(model, group, max_prefill=inf.max_prefill_predict_length,
                       max_target=inf.max_prefill_predict_length + steps, eos_id=None, options=SamplingOptions())
    now = time.perf_counter()
    assert all(len(r) >= w for r, w in zip(res, want))
    ttft += [now - t0] * len(group)
    per_tok += [(now - t) / steps] * len(group)
  return time.perf_counter() - t0, ttft, per_tok


def part_batching(args):
  cfg = config(args)
  engine = engine_for(cfg, args.slots)
  model = nnx_model(engine)
  prompts, outs = workload(args)
  tokens = sum(outs)
  for _ in range(2):  # warm-up pass, then the timed one
    runs = {order: continuous(engine, prompts, outs, order=order) for order in ("longest_first", "given")}
    wall_s, ttft_s, tok_s = static(cfg, model, prompts, outs, args.slots)
  out = {"requests": len(prompts), "slots": args.slots, "tokens": tokens}
  for order, (wall_c, seqs, live) in runs.items():
    assert [len(s.tokens) for s in seqs] == outs
    ttft_c = [s.ttft_s for s in seqs]
    tok_c = [s.per_token_s for s in seqs if s.per_token_s is not None]
    out["continuous" if order == "longest_first" else "continuous_given_order"] = {
        "wall_s": wall_c, "tokens_per_s": tokens / wall_c, "ttft_p50_s": pct(ttft_c, 50),
        "ttft_p99_s": pct(ttft_c, 99), "per_token_p50_ms": 1000 * pct(tok_c, 50),
        "per_token_p99_ms": 1000 * pct(tok_c, 99), "mean_live_slots": statistics.mean(live)}
  return {**out,
          "static": {"wall_s": wall_s, "tokens_per_s": tokens / wall_s, "ttft_p50_s": pct(ttft_s, 50),
                     "ttft_p99_s": pct(ttft_s, 99), "per_token_p50_ms": 1000 * pct(tok_s, 50),
                     "per_token_p99_ms": 1000 * pct(tok_s, 99)}}


def nnx_model(engine):
  return engine.model(engine.load_params())


def part_prefix(args):
  import numpy as np
  from maxtext_like.inference.prefix_cache import PrefixCache
  rng = np.random.default_rng(args.seed + 1)
  system = rng.integers(1, 32000, size=512).tolist()
  prompts = [system + rng.integers(1, 32000, size=int(n)).tolist()
             for n in rng.integers(16, 65, size=args.prefix_requests)]
  outs = [8] * len(prompts)
  out = {}
  for caching in (False, True):
    cfg = config(args, "max_prefill_predict_length=1024", "max_target_length=1104",
                 f"enable_prefix_caching={str(caching).lower()}")
    engine = engine_for(cfg, args.slots)
    for _ in range(2):
      cache = PrefixCache(cfg.inference.prefix_caching_hbm_byte, cfg.inference.prefix_caching_dram_byte) if caching else None
      wall, seqs, _ = continuous(engine, prompts, outs, prefix_cache=cache)
    ttft = [s.ttft_s for s in seqs]
    out["with" if caching else "without"] = {"wall_s": wall, "ttft_p50_s": pct(ttft, 50), "ttft_p99_s": pct(ttft, 99),
                                             "ttft_mean_s": statistics.mean(ttft),
                                             **({"cache": cache.stats()} if caching else {})}
  out["requests"] = len(prompts)
  return out


def part_paged(args):
  prompts, outs = workload(args)
  S = args.prompt_max + args.out_max
  budget_tokens = args.slots * S
  pages = budget_tokens // args.page
  engine = engine_for(config(args), args.slots)
  paged = engine_for(config(args, "attention=paged", f"pagedattn_tokens_per_page={args.page}",
                            f"pagedattn_num_pages={pages + 1}"), args.paged_slots)
  res = {"budget_tokens": budget_tokens, "pages": pages, "page_tokens": args.page, "tokens": sum(outs)}
  for _ in range(2):
    wall_c, _, live_c = continuous(engine, prompts, outs)
    wall_p, seqs, live_p = continuous(paged, prompts, outs, reserve=pages)
  assert [len(s.tokens) for s in seqs] == outs, [s.error for s in seqs if s.error]
  res["contiguous"] = {"slots": args.slots, "peak_concurrent": max(live_c), "mean_concurrent": statistics.mean(live_c),
                       "wall_s": wall_c, "tokens_per_s": sum(outs) / wall_c}
  res["paged"] = {"slots": args.paged_slots, "peak_concurrent": max(live_p), "mean_concurrent": statistics.mean(live_p),
                  "wall_s": wall_p, "tokens_per_s": sum(outs) / wall_p}
  return res


def print_table(header: list[str], rows: list[list[str]]) -> None:
  """A markdown table."""
  print("| " + " | ".join(header) + " |")
  print("|" + "---|" * len(header))
  for row in rows:
    print("| " + " | ".join(row) + " |")


def main(argv=None):
  args = parse(sys.argv[1:] if argv is None else argv)
  results = {}
  print(f"probe model, float32, greedy; {args.requests} requests, prompts {args.prompt_min}-{args.prompt_max}, "
        f"outputs {args.out_min}-{args.out_max}, {args.slots} slots")
  if "batching" in args.parts:
    r = results["batching"] = part_batching(args)
    print(f"\n### Continuous vs static batching ({r['requests']} requests, {r['tokens']} output tokens, "
          f"{r['slots']} slots)\n")
    names = {"static": "static", "continuous": "continuous, longest first", "continuous_given_order":
             "continuous, given order"}
    print_table(["path", "wall (s)", "tokens/s", "TTFT p50 (s)", "TTFT p99 (s)", "per-token p50 (ms)",
                 "per-token p99 (ms)", "mean live slots"],
                [[names[k], f"{v['wall_s']:.1f}", f"{v['tokens_per_s']:.0f}", f"{v['ttft_p50_s']:.2f}",
                  f"{v['ttft_p99_s']:.2f}", f"{v['per_token_p50_ms']:.1f}", f"{v['per_token_p99_ms']:.1f}",
                  f"{v.get('mean_live_slots', float('nan')):.2f}"] for k, v in ((k, r[k]) for k in names)])
    for k in ("continuous", "continuous_given_order"):
      print(f"\n{names[k]} / static tokens/s: **{r[k]['tokens_per_s'] / r['static']['tokens_per_s']:.2f}x**")
  if "prefix" in args.parts:
    r = results["prefix"] = part_prefix(args)
    print(f"\n### Prefix caching ({r['requests']} requests sharing a 512-token system prompt, 8 output tokens)\n")
    print_table(["enable_prefix_caching", "wall (s)", "TTFT mean (s)", "TTFT p50 (s)", "TTFT p99 (s)"],
                [[str(k == "with"), f"{v['wall_s']:.2f}", f"{v['ttft_mean_s']:.3f}", f"{v['ttft_p50_s']:.3f}",
                  f"{v['ttft_p99_s']:.3f}"] for k, v in ((k, r[k]) for k in ("without", "with"))])
    print(f"\nTTFT p50 gain: **{r['without']['ttft_p50_s'] / r['with']['ttft_p50_s']:.2f}x**; cache {r['with']['cache']}")
  if "paged" in args.parts:
    r = results["paged"] = part_paged(args)
    print(f"\n### Paged vs contiguous cache at {r['budget_tokens']} cached tokens ({r['pages']} pages of "
          f"{r['page_tokens']})\n")
    print_table(["cache", "slots", "peak concurrent", "mean concurrent", "wall (s)", "tokens/s"],
                [[k, str(v["slots"]), str(v["peak_concurrent"]), f"{v['mean_concurrent']:.1f}", f"{v['wall_s']:.1f}",
                  f"{v['tokens_per_s']:.0f}"] for k, v in ((k, r[k]) for k in ("contiguous", "paged"))])
  if args.json:
    print(json.dumps(results))


if __name__ == "__main__":
  main()
