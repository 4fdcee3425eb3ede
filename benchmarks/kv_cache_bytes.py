"""Decode-cache bytes of a model with a float, int8, int4 and fp8 KV cache (quantize_kvcache, kv_quant_dtype,
kv_quant_axis), from shapes only (no memory is allocated).

Bytes are the engine's whole cache tree (keys, values, their scales, segment ids and lengths) counted packed:
int4 is half a byte per value (`models.ptq.tree_bytes`), scales are in `dtype` (float32 here). The cache is the
one `Engine.init_decode_state` builds: per_device_batch_size slots of max_target_length tokens.

Run: .venv/bin/python benchmarks/kv_cache_bytes.py [key=value ...]   (default: the default model,
max_target_length=1024 per_device_batch_size=4 dtype=float32)
"""

from __future__ import annotations

import sys

import jax
from flax import nnx

from maxtext_like.config import load_config
from maxtext_like.models import build_model
from maxtext_like.models.ptq import tree_bytes
from maxtext_like.runtime.model_spec import model_spec

DEFAULTS = ["max_target_length=1024", "per_device_batch_size=4", "dtype=float32"]
VARIANTS = [("float32", []), *[(f"{d} {a}", ["quantize_kvcache=true", f"kv_quant_dtype={d}", f"kv_quant_axis={a}"])
                               for d in ("int8", "int4", "fp8") for a in ("dkv", "heads_and_dkv")]]


def cache_bytes(argv: list[str]) -> tuple[int, dict]:
  """(bytes of the decode cache, the cache's abstract arrays) for a config."""
  cfg = load_config(["base.yml", *argv], env={})
  spec = model_spec(cfg)
  slots = max(1, int(cfg.dataset.per_device_batch_size))
  cache = jax.eval_shape(lambda: nnx.eval_shape(lambda: build_model(spec, nnx.Rngs(0))).init_cache(slots))
  return tree_bytes(cache), cache


def main(argv: list[str]) -> None:
  base = DEFAULTS + argv
  rows = []
  for name, extra in VARIANTS:
    n, cache = cache_bytes(base + extra)
    scales = 0 if cache.k_scale_LBSKJ is None else tree_bytes((cache.k_scale_LBSKJ, cache.v_scale_LBSKJ))
    rows.append((name, str(cache.k_LBSKH.dtype), tuple(cache.k_LBSKH.shape), scales, n))
  f32 = rows[0][-1]
  print(f"config: {' '.join(base)}")
  print(f"{'kv cache':<22}{'values':<15}{'k shape [L,B,S,K,H]':<28}{'scale MB':>10}{'total MB':>11}{'vs float32':>12}")
  for name, dtype, shape, scales, n in rows:
    print(f"{name:<22}{dtype:<15}{str(shape):<28}{scales / 1e6:>10.2f}{n / 1e6:>11.2f}{100 * n / f32:>11.1f}%")


if __name__ == "__main__":
  main(sys.argv[1:])
