"""CPU kernels for the decode step, built from source on first use.

`small_matmul(x, w)` is `x @ w` for a float32 x of at most 8 rows (one row per decoding slot), through an XLA FFI
custom call (`small_matmul.cc`). XLA:CPU reads a weight matrix well below the machine's bandwidth in that shape (a
1 MB projection on one thread, the 4-row unembedding through a GEMM that first packs the 33 MB of weights); the
kernel streams each weight once over XLA's own thread pool.

The shared library is compiled with the system C++ compiler the first time a process asks for it, into
`$XDG_CACHE_HOME/maxtext_like/kernels/` (default `~/.cache`), keyed by the source, the jaxlib version and the CPU,
since it is built for the machine (`-march=native`). Without a compiler, or if the build fails, `available()` is
False with the reason in `unavailable_reason()`, and callers keep XLA's matmul: the kernel is a speed-up, never a
requirement.

The model code asks for it only inside `decode_matmuls()` (the engine's generate step), and `DenseGeneral` uses it
only where it applies: a float32 matmul of at most `MAX_ROWS` rows on a single device, not intercepted by qwix
(quantized or LoRA layers keep their dot_general).
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
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

MAX_ROWS = 8
_SOURCE = Path(__file__).with_name("small_matmul.cc")
_TARGET = "maxtext_like_small_matmul"

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
  return root / f"small_matmul-{key}.so"


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
  cmd = [compiler, "-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w", f"-I{jax.ffi.include_dir()}",
         str(_SOURCE), "-o", tmp]
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
        jax.ffi.register_ffi_target(_TARGET, jax.ffi.pycapsule(lib.MaxtextLikeSmallMatmul), platform="cpu")
        _state.update(ok=True, lib=lib)
      except Exception as e:  # noqa: BLE001 - any failure means "use XLA's matmul", with the reason kept
        _state.update(ok=False, reason=f"{type(e).__name__}: {e}")
    return bool(_state["ok"])


def unavailable_reason() -> str | None:
  return None if available() else str(_state["reason"])


def small_matmul(x_MK: jax.Array, w_KN: jax.Array) -> jax.Array:
  """x [M, K] @ w [K, N] in float32 through the kernel (M <= MAX_ROWS; call only when `available()`)."""
  M, K = x_MK.shape
  if M > MAX_ROWS or w_KN.shape[0] != K or x_MK.dtype != jnp.float32 or w_KN.dtype != jnp.float32:
    raise ValueError(f"small_matmul takes float32 x [M<={MAX_ROWS}, K] and w [K, N]: got {x_MK.dtype}{list(x_MK.shape)}"
                     f" and {w_KN.dtype}{list(w_KN.shape)}")
  out = jax.ShapeDtypeStruct((M, w_KN.shape[1]), jnp.float32)
  return jax.ffi.ffi_call(_TARGET, out, vmap_method="sequential")(x_MK, w_KN)


@contextlib.contextmanager
def decode_matmuls(enabled: bool = True):
  """Within this context (while a decode step is traced), eligible `DenseGeneral` matmuls use `small_matmul`."""
  token = _enabled.set(bool(enabled) and available())
  try:
    yield
  finally:
    _enabled.reset(token)


def decode_matmuls_enabled() -> bool:
  return _enabled.get()
