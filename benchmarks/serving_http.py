"""The HTTP server under concurrent streaming clients: requests/s, generated tokens/s, time to first token.

Starts `python -m maxtext_like.serve` on a free localhost port with the tests' tiny random llama (emb 64, 2 layers,
vocab 4096, float32; `--slots` decode slots, rows of 512), warms it up (every prefill bucket and generate variant
compiles before timing), then for each client count C runs C concurrent streaming /v1/completions clients
(openai.AsyncOpenAI), each sending `--requests` requests one after another with mixed prompt lengths (4 to 39
words, about 5 to 50 tokens) and output lengths (8 to 128 tokens), greedy.

Every request is checked: it ends with finish_reason "length" and exactly max_tokens tokens (or "stop" at EOS),
and its text is a prefix of the same prompt's greedy text measured alone first, so no stream lost or swapped
tokens with another. TTFT = request sent -> first streamed chunk, as the client sees it.

Run: .venv/bin/python benchmarks/serving_http.py [--clients 1 4 16 64] [--requests 2] [--slots 8] [key=value ...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

TINY = ["base.yml", "override_model_config=true", "base_emb_dim=64", "base_num_query_heads=4", "base_num_kv_heads=2",
        "head_dim=16", "base_mlp_dim=128", "base_num_decoder_layers=2", "vocab_size=4096", "dtype=float32",
        "enable_tensorboard=false", "max_target_length=512", "max_prefill_predict_length=64",
        "run_name=bench_serving_nonexistent"]
WORDS = ("It is a truth universally acknowledged that a single man in possession of a good fortune must be in want "
         "of a wife However little known the feelings or views of such a man may be on his first entering a "
         "neighbourhood").split()
OUTPUT_LENGTHS = (8, 32, 64, 128)


def parse(argv):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64])
  p.add_argument("--requests", type=int, default=2, help="requests per client, one after another")
  p.add_argument("--slots", type=int, default=8, help="decode slots (per_device_batch_size)")
  return p.parse_known_args(argv)


def start(overrides, slots, out_dir):
  import portpicker
  port = portpicker.pick_unused_port()
  log = open(os.path.join(out_dir, "server.log"), "w")  # noqa: SIM115
  proc = subprocess.Popen([sys.executable, "-m", "maxtext_like.serve", *TINY, f"per_device_batch_size={slots}",
                           f"base_output_directory={out_dir}", *overrides, "--port", str(port)],
                          stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  for _ in range(600):
    if proc.poll() is not None:
      sys.exit(open(log.name).read())
    try:
      urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
      return proc, port
    except OSError:
      time.sleep(0.5)
  proc.kill()
  sys.exit("the server did not start")


def prompts(n, seed=0):
  rng = random.Random(seed)
  return [" ".join(WORDS[:rng.randrange(4, len(WORDS))]) for _ in range(n)]


async def one(client, prompt, max_tokens):
  t0 = time.perf_counter()
  ttft, text, usage, reason = None, [], None, None
  stream = await client.completions.create(model="default", prompt=prompt, max_tokens=max_tokens, temperature=0,
                                           stream=True, stream_options={"include_usage": True})
  async for chunk in stream:
    if chunk.choices:
      ttft = ttft if ttft is not None else time.perf_counter() - t0
      text.append(chunk.choices[0].text)
      reason = chunk.choices[0].finish_reason or reason
    if chunk.usage is not None:
      usage = chunk.usage
  return {"ttft": ttft, "text": "".join(text), "tokens": usage.completion_tokens, "reason": reason,
          "max_tokens": max_tokens, "prompt": prompt, "latency": time.perf_counter() - t0}


async def round_(client, n_clients, n_requests, pool, seed):
  rng = random.Random(seed)
  jobs = [[(rng.choice(pool), rng.choice(OUTPUT_LENGTHS)) for _ in range(n_requests)] for _ in range(n_clients)]

  async def worker(reqs):
    return [await one(client, p, m) for p, m in reqs]

  t0 = time.perf_counter()
  results = [r for rs in await asyncio.gather(*(worker(j) for j in jobs)) for r in rs]
  return results, time.perf_counter() - t0


def check(results, reference):
  for r in results:
    ok_len = r["tokens"] == r["max_tokens"] if r["reason"] == "length" else r["reason"] == "stop"
    if not ok_len or not reference[r["prompt"]].startswith(r["text"]):
      raise SystemExit(f"wrong result: {r} (alone: {reference[r['prompt']][:80]!r})")


async def main_async(args, port):
  import openai
  client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=600)
  pool = prompts(12)
  reference = {}
  for p in pool:  # alone, longest output; also compiles every prefill bucket used
    reference[p] = (await one(client, p, max(OUTPUT_LENGTHS)))["text"]
  await round_(client, max(args.clients), 1, pool, seed=99)  # warm-up: every generate variant compiles
  rows = []
  for c in args.clients:
    results, wall = await round_(client, c, args.requests, pool, seed=c)
    check(results, reference)
    ttfts = sorted(r["ttft"] for r in results)
    toks = sum(r["tokens"] for r in results)
    rows.append((c, len(results), wall, len(results) / wall, toks / wall, statistics.median(ttfts),
                 ttfts[min(len(ttfts) - 1, int(0.99 * len(ttfts)))], statistics.median(r["latency"] for r in results)))
  await client.close()
  return rows


def main(argv=None):
  args, overrides = parse(sys.argv[1:] if argv is None else argv)
  with tempfile.TemporaryDirectory() as d:
    proc, port = start(overrides, args.slots, d)
    try:
      rows = asyncio.run(main_async(args, port))
    finally:
      proc.terminate()
      proc.wait(timeout=30)
  print(f"tiny llama (emb 64, 2 layers, vocab 4096), {args.slots} slots, greedy, outputs {OUTPUT_LENGTHS} tokens; "
        f"all requests checked")
  print(f"{'clients':>7} {'requests':>8} {'wall s':>7} {'req/s':>6} {'tok/s':>7} {'TTFT p50 ms':>11} "
        f"{'TTFT p99 ms':>11} {'latency p50 s':>13}")
  for c, n, wall, rps, tps, p50, p99, lat in rows:
    print(f"{c:>7} {n:>8} {wall:>7.2f} {rps:>6.2f} {tps:>7.0f} {p50 * 1e3:>11.0f} {p99 * 1e3:>11.0f} {lat:>13.2f}")


if __name__ == "__main__":
  main()
