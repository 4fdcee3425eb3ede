"""Training FLOPs per step (MaxText's formula for a dense decoder) and the device's peak FLOP/s."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from maxtext_like.models import ModelSpec

# Peak dense FLOP/s per device for known accelerators (bfloat16), by jax device_kind substring.
KNOWN_PEAKS = {"TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v6": 918e12,
               "H100": 989e12, "A100": 312e12, "H200": 989e12, "B200": 2250e12}


def train_flops_per_step(spec: ModelSpec, batch: int, seq: int, grad_accum: int = 1) -> float:
  """3 x forward FLOPs: ffn (MoE: router + active experts) + qkv + out projection per layer, unembedding, causal
  attention."""
  B, S, L = batch, seq, spec.num_decoder_layers
  n_act = len(spec.mlp_activations)
  ffn = 2 * B * S * spec.mlp_dim * spec.emb_dim * n_act + 2 * B * S * spec.mlp_dim * spec.emb_dim
  qkv = 2 * B * S * spec.emb_dim * (spec.num_query_heads + 2 * spec.num_kv_heads) * spec.head_dim
  proj = 2 * B * S * spec.emb_dim * spec.num_query_heads * spec.head_dim
  unembed = 2 * B * S * spec.emb_dim * spec.vocab_size
  attention = 4 * B * S * S * spec.num_query_heads * spec.head_dim / 2
  ffn_all = ffn * L
  if spec.moe is not None:  # MoE layers (MaxText's count): router + top-k routed experts + shared experts
    m, n_moe = spec.moe, L - min(spec.moe.first_num_dense_layers, L)
    expert = 2 * B * S * m.mlp_dim * spec.emb_dim * (n_act + 1)
    ffn_all = ffn * (L - n_moe) + n_moe * ((m.num_experts_per_tok + m.shared_experts) * expert
                                           + 2 * B * S * spec.emb_dim * m.num_experts)
  return 3 * (ffn_all + (qkv + proj) * L + unembed + attention * L) * grad_accum


def _cache_file() -> Path:
  return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "maxtext_like" / "peak_flops.json"


def cpu_matmul_probe(n: int = 1024, repeats: int = 5) -> float:
  """Measured float32 matmul FLOP/s of one CPU device (best of a few runs)."""
  import jax
  import jax.numpy as jnp
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n**3 / best


PROBE_ROUNDS = 3  # a full measurement: the best of this many probes, a short pause apart
CLEARLY_LOW = 1.15  # a quick probe this much faster than the cached peak means the cache was taken on a busy machine


def _boot_time() -> float:
  try:
    import psutil
    return psutil.boot_time()
  except Exception:  # noqa: BLE001 - unknown: never treat a cache as older than the machine
    return 0.0


def _hardware_key(device_kind: str) -> str:
  model = ""
  try:
    model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "")
  except OSError:
    pass
  return f"{device_kind}|{model}|{os.cpu_count()}|{os.environ.get('XLA_FLAGS', '')}"


def cpu_peak(device_kind: str, *, probe=cpu_matmul_probe, now=time.time, boot_time=_boot_time) -> tuple[float, str]:
  """The CPU's peak from the best of PROBE_ROUNDS probes, cached per hardware. The cache is re-measured when it was
  written before this machine booted (other hardware behind the same home directory) or when a quick probe now beats
  it clearly (it was taken while other work ran); a cached figure is never lowered by a slower quick probe."""
  cache, key = _cache_file(), _hardware_key(device_kind)
  try:
    data = json.loads(cache.read_text())
  except (OSError, ValueError):
    data = {}
  entry = data.get(key) if isinstance(data.get(key), dict) else None  # older caches held a bare number: re-measure
  reason = "no cached probe for this hardware"
  if entry is not None:
    quick = probe(repeats=3)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(entry["measured_at"]))
    if entry["measured_at"] < boot_time():
      reason = f"the cached probe ({when}) is older than this machine's boot"
    elif quick > CLEARLY_LOW * entry["peak"]:
      reason = f"a quick probe ({quick / 1e9:.1f} GFLOP/s) beat the cached {entry['peak'] / 1e9:.1f} GFLOP/s"
    else:
      return max(entry["peak"], quick), (f"CPU matmul probe cached {when}, best of {entry['rounds']}, checked now "
                                         f"({quick / 1e9:.1f} GFLOP/s); {cache}")
  probes = []
  for i in range(PROBE_ROUNDS):
    if i:
      time.sleep(0.05)
    probes.append(probe())
  peak = max(probes)
  try:
    cache.parent.mkdir(parents=True, exist_ok=True)
    data[key] = {"peak": peak, "measured_at": now(), "rounds": PROBE_ROUNDS}
    cache.write_text(json.dumps(data))
  except OSError:
    pass
  return peak, f"CPU matmul probe measured now, best of {PROBE_ROUNDS} ({reason}); cached in {cache}"


def peak_flops_per_device(configured: float, device_kind: str, platform: str) -> tuple[float, str]:
  """(peak FLOP/s, how it was obtained). Configured value wins; then a known accelerator; on CPU a measured probe."""
  if configured > 0:
    return configured, "peak_flops_per_device"
  for name, peak in KNOWN_PEAKS.items():
    if name.lower() in device_kind.lower():
      return peak, f"known peak of {name}"
  if platform != "cpu":
    return 0.0, "unknown accelerator: set peak_flops_per_device for MFU"
  return cpu_peak(device_kind)
