"""CPU kernels for the decode step, built from source on first use.

XLA FFI custom calls (`decode_kernels.cc`), all float32:
- `small_matmul(x, w)`: `x @ w` for x of at most 8 rows (one per decoding slot); `small_matmuls(x, ws)` computes
  several projections of the same x in one call. XLA:CPU reads a weight matrix
  well below the machine's bandwidth in that shape (a 1 MB projection on one thread, the 4-row unembedding
  through a GEMM that first packs the 33 MB of weights).
- `decode_attention(q, keys, values, limit, mask, ...)`: few-query attention (logits, mask, soft cap, softmax with
  the step's own new entries and sinks, values) against a cache stored [B, S, K, H] (or a page pool read through
  the page table) in one call. XLA runs it as many tiny batched matmuls over the whole cache and a dozen small
  softmax fusions per layer; the kernel reads each row's filled positions only.
- `logits_stats(logits)`: each row's argmax and log-sum-exp in one vectorized pass (the greedy token and any
  token's log-prob follow from them); XLA:CPU sums a row's 32k exponentials one at a time.
Each reads the weights or the cache once, in memory order, over XLA's own thread pool.

The shared library is compiled with the system C++ compiler the first time a process asks for it, into
`$XDG_CACHE_HOME/maxtext_like/kernels/` (default `~/.cache`), keyed by the source, the jaxlib version and the CPU,
since it is built for the machine (`-march=native`). Without a compiler, or if the build fails, `available()` is
False with the reason in `unavailable_reason()`, and callers keep XLA's matmul: the kernel is a speed-up, never a
requirement.

The model code asks for them only inside `decode_matmuls()` (the engine's generate step on a single CPU device), and
only where they apply: `DenseGeneral` for a float32 matmul of at most `MAX_ROWS` rows not intercepted by qwix
(quantized or LoRA layers keep their dot_general; `linears.apply_together` groups the projections of one input into
one call), few-query attention for a float32 query and cache (a quantized
cache keeps XLA's dots), and the engine's generate step reads its float32 logits through `logits_stats`.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import dataclasses
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

MAX_ROWS = 8
_SOURCE = Path(__file__).with_name("decode_kernels.cc")
_TARGETS = {"maxtext_like_small_matmul": "MaxtextLikeSmallMatmul",
            "maxtext_like_decode_attention": "MaxtextLikeDecodeAttention",
            "maxtext_like_logits_stats": "MaxtextLikeLogitsStats"}

_lock = threading.Lock()
_state: dict[str, object] = {}
_enabled: contextvars.ContextVar[bool] = contextvars.ContextVar("maxtext_like_decode_matmuls", default=False)


def _cpu_signature() -> str:
  """The CPU model and feature flags: a library built with -march=native must not run on another CPU."""
  try:
    text = Path("/proc/cpuinfo").read_text()
  except OSError:
    return platform.processor() or platform.machine()
  keep = [line for line in text.splitlines() if line.startswith(("model name", "flags", "Features", "CPU part"))]
  return "\n".join(sorted(set(keep)))


def _library_path(source: bytes, compiler: str) -> Path:
  import jaxlib
  key = hashlib.sha256(b"\0".join([source, jaxlib.__version__.encode(), compiler.encode(),
                                   _cpu_signature().encode()])).hexdigest()[:16]
  root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "maxtext_like" / "kernels"
  return root / f"decode_kernels-{key}.so"


def _build() -> Path:
  compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
  if not compiler:
    raise RuntimeError("no C++ compiler found (set CXX, or install g++)")
  source = _SOURCE.read_bytes()
  out = _library_path(source, compiler)
  if out.exists():
    return out
  out.parent.mkdir(parents=True, exist_ok=True)
  # Build into a temporary file and rename: concurrent processes (test workers, several servers) may race here.
  fd, tmp = tempfile.mkstemp(prefix=out.stem, suffix=".so.tmp", dir=out.parent)
  os.close(fd)
  cmd = [compiler, "-O3", "-march=native", "-fopenmp-simd", "-std=c++17", "-shared", "-fPIC", "-w",
         f"-I{jax.ffi.include_dir()}", str(_SOURCE), "-o", tmp]
  try:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
      raise RuntimeError(f"`{' '.join(cmd)}` failed: {done.stderr.strip()[-2000:]}")
    os.replace(tmp, out)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)
  return out


def available() -> bool:
  """Whether the kernel is built and registered with XLA (building it on the first call)."""
  with _lock:
    if "ok" not in _state:
      try:
        if os.environ.get("MAXTEXT_LIKE_CPU_KERNELS", "1") == "0":
          raise RuntimeError("disabled by MAXTEXT_LIKE_CPU_KERNELS=0")
        lib = ctypes.cdll.LoadLibrary(str(_build()))
        for target, symbol in _TARGETS.items():
          jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
        _state.update(ok=True, lib=lib)
      except Exception as e:  # noqa: BLE001 - any failure means "use XLA's matmul", with the reason kept
        _state.update(ok=False, reason=f"{type(e).__name__}: {e}")
    return bool(_state["ok"])


def unavailable_reason() -> str | None:
  return None if available() else str(_state["reason"])


def _require() -> None:
  if not available():
    raise RuntimeError(f"the CPU decode kernels are not available: {unavailable_reason()}")


def small_matmul(x_MK: jax.Array, w_KN: jax.Array) -> jax.Array:
  """x [M, K] @ w [K, N] in float32 through the kernel (M <= MAX_ROWS)."""
  return small_matmuls(x_MK, [w_KN])[0]


def small_matmuls(x_MK: jax.Array, ws_KN) -> list[jax.Array]:
  """[x @ w for w in ws_KN], float32, M <= MAX_ROWS: one kernel call, so the group's slabs share one parallel loop
  (one hand-off to XLA's thread pool for a layer's q, k and v, not one per projection)."""
  M, K = x_MK.shape
  ws_KN = list(ws_KN)
  if (M > MAX_ROWS or not ws_KN or x_MK.dtype != jnp.float32
      or any(w.ndim != 2 or w.shape[0] != K or w.dtype != jnp.float32 for w in ws_KN)):
    raise ValueError(f"small_matmul takes float32 x [M<={MAX_ROWS}, K] and weights w [K, N]: got "
                     f"{x_MK.dtype}{list(x_MK.shape)} and {[f'{w.dtype}{list(w.shape)}' for w in ws_KN]}")
  _require()
  out = [jax.ShapeDtypeStruct((M, w.shape[1]), jnp.float32) for w in ws_KN]
  return list(jax.ffi.ffi_call("maxtext_like_small_matmul", out, vmap_method="sequential")(x_MK, *ws_KN))


def _check_f32(name: str, *arrays) -> None:
  if any(a.dtype != jnp.float32 for a in arrays):
    raise ValueError(f"{name} takes float32 arrays: got {[str(a.dtype) for a in arrays]}")


@dataclasses.dataclass(frozen=True)
class PagedPool:
  """A paged layer's keys or values for the attention kernels to read in place: the pool [P, page, K, H] and the
  rows' page tables [B, M]. `shape` and `dtype` are those of the gathered [B, M * page, K, H] it stands for."""

  pool: jax.Array
  table_BM: jax.Array

  @property
  def shape(self) -> tuple[int, ...]:
    (B, M), (_, page, *rest) = self.table_BM.shape, self.pool.shape
    return (B, M * page, *rest)

  @property
  def dtype(self):
    return self.pool.dtype

  def astype(self, dtype) -> "PagedPool":
    if jnp.dtype(dtype) != self.pool.dtype:
      raise TypeError(f"a paged pool read by the kernels stays {self.pool.dtype}, not {jnp.dtype(dtype)}")
    return self


def _table(page_table_BM, B: int) -> jax.Array:
  return jnp.zeros((B, 0), jnp.int32) if page_table_BM is None else page_table_BM.astype(jnp.int32)


def decode_attention(q_BTKGH: jax.Array, keys: jax.Array, values: jax.Array, limit_B: jax.Array, mask_BTS: jax.Array,
                     page_table_BM=None, new=None, sinks_N=None, soft_cap: float | None = None) -> jax.Array:
  """Few-query attention in one call, as `attention_kernels._few_queries` computes it with XLA:
  out[b, t, k, g, :] = sum over s of p[s] * values[b, s, k, :], p the softmax of cap(q[b, t, k, g, :] . keys[b, s, k, :])
  over the positions with mask[b, t, s] (q comes scaled; cap is soft_cap * tanh(x / soft_cap) when soft_cap is set).
  A query that may see no position gets zeros (XLA's masked softmax averages values it may not see: padding).

  keys, values: [B, S, K, H] and [B, S, K, Hv], or with `page_table_BM` [B, M] page pools [P, page, K, H] read in
  place (S = M * page). Only positions s < limit[b] are read: the mask must hide every later one from all of row b's
  queries. `new` = (k_BUKH, v_BUKH, mask_BTU): entries not in the cache (the step's own), in the same softmax;
  `sinks_N` [K * G]: one logit per query head, in the denominator only. Returns [B, T, K, G, Hv] float32."""
  _check_f32("decode_attention", q_BTKGH, keys, values)
  _require()
  B, T, K, G, H = q_BTKGH.shape
  S = mask_BTS.shape[-1]
  if new is None:
    k_new, v_new, mask_new = (jnp.zeros((B, 0, K, H), jnp.float32), jnp.zeros((B, 0, K, values.shape[-1]), jnp.float32),
                              jnp.zeros((B, T, 0), bool))
  else:
    k_new, v_new, mask_new = new
  sinks = jnp.zeros((0,), jnp.float32) if sinks_N is None else sinks_N.astype(jnp.float32).reshape(K * G)
  out = jax.ShapeDtypeStruct((B, T, K, G, values.shape[-1]), jnp.float32)
  return jax.ffi.ffi_call("maxtext_like_decode_attention", out, vmap_method="sequential")(
      q_BTKGH, keys, values, _table(page_table_BM, B), limit_B.astype(jnp.int32),
      jnp.broadcast_to(mask_BTS, (B, T, S)).astype(bool), k_new.astype(jnp.float32), v_new.astype(jnp.float32),
      mask_new.astype(bool), sinks, soft_cap=np.float32(soft_cap or 0.0))


def logits_stats(logits_BV: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(argmax [B] int32, log-sum-exp [B] float32) of float32 logits [B, V]: the first index of each row's largest
  value, as `jnp.argmax`, and `logsumexp` so that `log_softmax(logits)[b, t] = logits[b, t] - lse[b]`. A row with a
  NaN gives index V - 1 (as `sampling.argmax`) and a NaN lse."""
  _check_f32("logits_stats", logits_BV)
  _require()
  B = logits_BV.shape[0]
  out = (jax.ShapeDtypeStruct((B,), jnp.int32), jax.ShapeDtypeStruct((B,), jnp.float32))
  return jax.ffi.ffi_call("maxtext_like_logits_stats", out, vmap_method="sequential")(logits_BV)


@contextlib.contextmanager
def decode_matmuls(enabled: bool = True):
  """Within this context (while a decode step is traced), eligible `DenseGeneral` matmuls use `small_matmul`,
  few-query attention over a float32 cache uses `decode_attention`, and the engine's step takes
  its logits' argmax and log-sum-exp from `logits_stats`."""
  token = _enabled.set(bool(enabled) and available())
  try:
    yield
  finally:
    _enabled.reset(token)


def decode_matmuls_enabled() -> bool:
  return _enabled.get()
