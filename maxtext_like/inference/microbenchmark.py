"""Times the engine's stages the way MaxText's `inference_microbenchmark` does, with its result keys.

Stages (`inference_microbenchmark_stages`):
  prefill                prefill of each length in `inference_microbenchmark_prefill_lengths`, then prefill + insert
                         into slot i % slots; `insert` = (prefill + insert) - prefill, as MaxText reports it
  prefill-multisampling  prefill drawing n first tokens, n in `inference_microbenchmark_num_samples`
  generate               every slot filled (prefill + insert), then `Engine.generate` one step per call

Each timed loop runs `inference_microbenchmark_loop_iters` calls after 2 warm-up calls (which compile), and blocks on
the result once at the end, as MaxText does. The prompt is `prompt` tokenized with BOS and padded to the prefill
length (MaxText's tokens too), so the padded length sets the work and the true length the slot's position.

The results dict has MaxText 0.2.5's keys (`prefill`, `insert`, `prefill-multisampling`, `autoregressive`, `sizes`,
`prefill-result-sizes`) plus `memory_bandwidth`: this machine's copy bandwidth (best of several probes, so one busy
moment does not set it) and the AR step's fraction of it; decode is memory-bound, so that fraction is how close
the step is to the limit.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from maxtext_like.config import Config
from maxtext_like.inference.engine import DecodeState, Engine
from maxtext_like.inference.prefix_cache import tree_bytes

WARMUP_ITERS = 2  # MaxText's _WARMUP_ITERS
BANDWIDTH_PROBE_BYTES = 64 << 20  # well past the CPU's last-level cache
BANDWIDTH_PROBES = 7


def prefill_tflops_per_device(num_params: int, length: int, spec, devices: int) -> float:
  """MaxText's calculate_prefill_tflops_per_device: 2·params·L for the weights plus causal attention
  (4·heads·layers·head_dim·L² / 2)."""
  weights = 2 * num_params * length / devices / 1e12
  attention = 4 * spec.num_query_heads * spec.num_decoder_layers * spec.head_dim * length**2 / devices / 1e12 / 2
  return weights + attention


def prefill_lengths(raw) -> list[int]:
  """`inference_microbenchmark_prefill_lengths` as ints; MaxText's CLI quoting ("...='64,128'") is accepted."""
  return [int(x) for x in str(raw).strip().strip("'\"").split(",") if x.strip()]


def measure_memory_bandwidth(nbytes: int = BANDWIDTH_PROBE_BYTES, probes: int = BANDWIDTH_PROBES) -> dict:
  """This machine's memory bandwidth in bytes/s, best of `probes` runs of each probe:
    read: a jitted sum over n bytes (XLA's threads, no output buffer): what a decode step does to weights and cache
    copy: numpy copy into a preallocated buffer (read n + write n bytes)
  `best` is the larger. Not a jitted copy: XLA:CPU allocates (and page-faults) a fresh output buffer per call,
  which measures the allocator, not the memory."""
  def best_of(fn) -> float:
    fn()
    t_best = float("inf")
    for _ in range(probes):
      t = time.perf_counter()
      fn()
      t_best = min(t_best, time.perf_counter() - t)
    return t_best

  src = np.ones((nbytes // 4,), np.float32)
  dst = np.empty_like(src)
  copy = 2 * nbytes / best_of(lambda: np.copyto(dst, src))
  x = jnp.asarray(src)
  total = jax.jit(jnp.sum)
  read = nbytes / best_of(lambda: jax.block_until_ready(total(x)))
  return {"read": read, "copy": copy, "best": max(read, copy)}


def _pytree_summary(tree) -> tuple[int, int, float]:
  """(elements, bytes, bytes per element), like MaxText's summarize_pytree_data."""
  n = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))
  b = tree_bytes(tree)
  return n, b, b / max(n, 1)


_split = jax.jit(lambda rng: tuple(jax.random.split(rng)))


class _Bench:
  """One engine, its parameters and decode state, and the prompt per prefill length."""

  def __init__(self, cfg: Config, engine: Engine, prompt_ids: list[int], iters: int):
    self.cfg, self.e, self.iters = cfg, engine, iters
    self.params = engine.load_params()
    self.state: DecodeState = engine.init_decode_state()
    self.prompt_ids = prompt_ids
    self.greedy = cfg.inference.decode_sampling_strategy == "greedy"
    self.allocator = None
    if engine.paged is not None:
      from maxtext_like.inference.paging import PageAllocator
      self.allocator = PageAllocator(engine.paged)

  def tokens(self, length: int) -> tuple[np.ndarray, int]:
    ids = self.prompt_ids[:length]
    return self.e.pad(ids, length)

  def _loop(self, fn, n: int):
    """fn(i, key) n times, with a fresh key per call as MaxText's loop makes (the same keys as its
    `jax.random.split`, through one compiled call: the eager split is several dispatches, ~70 us a step on CPU)."""
    rng = jax.random.PRNGKey(1234)
    out = None
    for i in range(n):
      rng, key = _split(rng)
      out = fn(i, key)
    jax.block_until_ready(out)

  def timed_ms(self, fn) -> float:
    """Average ms per call of fn(i, rng) over `iters` calls, after the warm-up calls."""
    self._loop(fn, WARMUP_ITERS)
    t = time.perf_counter()
    self._loop(fn, self.iters)
    return 1000 * (time.perf_counter() - t) / self.iters

  def prefill(self, length: int, num_samples: int = 1):
    padded, n = self.tokens(length)
    padded = jnp.asarray(padded)
    return lambda i, rng: self.e.prefill(params=self.params, padded_tokens=padded, true_length=n, rng=rng,
                                         num_samples=num_samples)[0]

  def prefill_insert(self, length: int):
    """Prefill, then insert into slot i % slots (the decode state is threaded through, as MaxText does)."""
    run_prefill = self.prefill(length)
    _, n = self.tokens(length)  # the true length on the host: no device sync inside the timed loop

    def step(i, rng):
      slot = i % self.e.max_concurrent_decodes
      prefix = run_prefill(i, rng)
      pages = None
      if self.allocator is not None:
        self.allocator.release(slot)
        self.allocator.ensure(slot, n + 1)
        pages = self.allocator.table_row(slot)
      self.state = self.e.insert(prefix, self.state, slot, pages=pages)
      return self.state
    return step

  def fill_slots(self, length: int) -> None:
    step = self.prefill_insert(length)
    rng = jax.random.PRNGKey(0)
    for slot in range(self.e.max_concurrent_decodes):
      step(slot, rng)
    if self.allocator is not None:  # room to grow for every step the benchmark will take
      for slot in range(self.e.max_concurrent_decodes):
        room = min(self.e.max_target_length, len(self.prompt_ids[:length]) + WARMUP_ITERS + self.iters + 1)
        self.allocator.ensure(slot, room)
      self.state = self.e.set_page_tables(self.state, self.allocator.table())
    jax.block_until_ready(self.state)

  def generate(self):
    def step(i, rng):
      self.state, _ = self.e.generate(self.params, self.state, rng, greedy_only=self.greedy)
      return self.state
    return step


def run_benchmarks(cfg: Config, engine: Engine, prompt_ids: list[int], *, log=print) -> dict:
  """MaxText's results dict (see the module docstring), printing each figure as MaxText does."""
  inf = cfg.inference
  lengths = prefill_lengths(inf.inference_microbenchmark_prefill_lengths)
  stages = [s.strip() for s in inf.inference_microbenchmark_stages.split(",") if s.strip()]
  b = _Bench(cfg, engine, prompt_ids, inf.inference_microbenchmark_loop_iters)
  devices = 1 if engine.mesh is None else engine.mesh.devices.size
  weights = nnx.state(engine.model(b.params), nnx.Param)
  num_params, model_bytes, _ = _pytree_summary(weights)
  _, cache_bytes, _ = _pytree_summary(b.state.cache)
  log(f"Model stats:\n\tTotal number of params: {num_params / 1e9:.3f} billion\n\tTotal memory usage: "
      f"{model_bytes / 1e9:.3f} GB\nCache stats:\n\tTotal memory usage: {cache_bytes / 1e9:.3f} GB\n")
  results: dict = {}

  if "prefill" in stages:
    results["prefill-result-sizes"], results["prefill"], results["insert"] = {}, {}, {}
    for length in lengths:
      prefix = b.prefill(length)(0, jax.random.PRNGKey(1234))
      n_logits, logits_bytes, avg_logits = _pytree_summary(prefix.logits)
      n_cache, c_bytes, avg_cache = _pytree_summary(prefix.cache)
      results["prefill-result-sizes"][length] = {
          "num_logits_params": n_logits, "total_logits_size": logits_bytes, "avg_logits_param_size": avg_logits,
          "num_cache_params": n_cache, "total_cache_size": c_bytes, "avg_cache_param_size": avg_cache}
    for length in lengths:
      ms = b.timed_ms(b.prefill(length))
      tflops = prefill_tflops_per_device(num_params, length, engine.spec, devices)
      results["prefill"][length] = {"time_in_ms": ms, "total_tflops_per_device": tflops,
                                    "tflops_per_sec_per_device": tflops / ms * 1000.0}
      log(f"Prefill benchmark results for length {length}:\n\tPrefill step average time: {ms:.3f} ms\n"
          f"\tPrefill total TFLOPs/device: {tflops:.3f}\n\tPrefill TFLOPs/sec/device: {tflops / ms * 1000:.3f}\n")
      insert_ms = b.timed_ms(b.prefill_insert(length))
      results["insert"][length] = {"time_in_ms": insert_ms - ms}
      log(f"Prefill and insert benchmark results for length {length}:\n"
          f"\tPrefill + Insert step average time: {insert_ms:.3f} ms\n")

  if "prefill-multisampling" in stages:
    results["prefill-multisampling"] = {}
    for length in lengths:
      results["prefill-multisampling"][length] = {}
      log(f"Multi-sampling prefill benchmark results for length {length}:")
      for n in inf.inference_microbenchmark_num_samples:
        ms = b.timed_ms(b.prefill(length, num_samples=int(n)))
        results["prefill-multisampling"][length][int(n)] = {"time_in_ms": ms}
        log(f"\nNum samples: {n}\n\tPrefill step average time: {ms:.3f} ms\n")

  if "generate" in stages:
    b.fill_slots(lengths[0])
    ms = b.timed_ms(b.generate())
    batch = engine.max_concurrent_decodes
    bw = (model_bytes + cache_bytes) / 1e9 / devices / (ms / 1000)
    results["autoregressive"] = {"step_in_ms": ms, "step_in_ms_per_seq": ms / batch, "global_batch_size": batch,
                                 "total_throughput_tokens_per_second": batch / (ms / 1000),
                                 "bw_per_device_GB_per_second": bw}
    probe = measure_memory_bandwidth()
    machine = probe["best"] / 1e9
    results["memory_bandwidth"] = {"measured_GB_per_second": machine, "read_GB_per_second": probe["read"] / 1e9,
                                   "copy_GB_per_second": probe["copy"] / 1e9, "ar_fraction_of_measured": bw / machine}
    log(f"AutoRegressive results:\n\tAR step average time: {ms:.3f} ms\n\tAR step average time per seq: "
        f"{ms / batch:.3f} ms\n\tAR global batch size: {batch}\n\tAR throughput: {batch / (ms / 1000):.3f} "
        f"tokens/second\n\tAR memory bandwidth per device: {bw:.3f} GB/s\n\tMachine memory bandwidth (read and copy "
        f"probes, best of {BANDWIDTH_PROBES}): {machine:.3f} GB/s; AR step at {100 * bw / machine:.1f}% of it\n")

  results["sizes"] = {"model_size_in_gb": model_bytes / 1e9, "cache_size_in_gb": cache_bytes / 1e9,
                      "model_params_in_billions": num_params / 1e9}
  return results


def print_results_for_analyze(results: dict, log=print) -> None:
  """MaxText's summary lines for analyze_sharegpt.py."""
  log("\nFor usage in analyze_sharegpt.py :")
  if "prefill" in results:
    log(f"PREFILL_BUCKET_SIZE_TO_MS = { {int(k): round(v['time_in_ms'], 3) for k, v in results['prefill'].items()} }")
  if "prefill-multisampling" in results:
    ms = {int(k): {n: round(v["time_in_ms"], 3) for n, v in d.items()} for k, d in results["prefill-multisampling"].items()}
    log(f"MULTISAMPLING_PREFILL_BUCKET_SIZE_TO_MS = {ms}")
  if "insert" in results:
    log(f"INSERT_BUCKET_SIZE_TO_MS = { {int(k): round(v['time_in_ms'], 3) for k, v in results['insert'].items()} }")
  if "autoregressive" in results:
    log(f"SYSTEM_TIME_PER_DECODE_TOKEN_MS = {results['autoregressive']['step_in_ms_per_seq']}")
