"""TPU slice names (`compile_topology=v5e-256`) -> devices of that topology for ahead-of-time compilation on this host.

JAX describes a TPU topology without TPUs through libtpu (TPU's compiler). libtpu is kept beside the environment, not
in it (setup.sh puts it in `.venv/libtpu`): installed in the environment, every JAX process would try to start a TPU
backend. train_compile points JAX at it through TPU_LIBRARY_PATH before JAX starts.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import re
import sys

from maxtext_like.config import ConfigError, Problem

# Chips of a 2-D slice (v5e, v6e: one core per chip) and of a 3-D slice (v4, v5p: one megacore per chip, two cores
# counted per chip in the name) -> the topology's shape. Slices of 64 chips and more wrap around (a torus).
_SHAPES_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}
_SHAPES_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8", 256: "4x8x8",
              512: "8x8x8", 1024: "8x8x16", 2048: "8x16x16", 4096: "16x16x16"}
_HBM_GB = {"v4": 32, "v5e": 16, "v5p": 95, "v6e": 32}


@dataclasses.dataclass(frozen=True)
class TpuSlice:
  name: str
  topology: str  # e.g. "v5e:16x16"
  chip_config: str  # "default" or "megacore"
  chips_per_host: tuple[int, int, int]
  devices: int
  wrap: tuple[bool, bool, bool]
  hbm_gb: float


def known_names() -> list[str]:
  two = [f"{g}-{n}" for g in ("v5e", "v6e") for n in _SHAPES_2D]
  three = [f"{g}-{2 * n}" for g in ("v4", "v5p") for n in _SHAPES_3D]
  return two + three


def tpu_slice(name: str) -> TpuSlice:
  m = re.fullmatch(r"(v4|v5e|v5p|v6e)-(\d+)", name)
  if m and m[1] in ("v5e", "v6e") and int(m[2]) in _SHAPES_2D:
    n = int(m[2])
    wrap = (n >= 256, n >= 128, False)
    return TpuSlice(name, f"{m[1]}:{_SHAPES_2D[n]}", "default", (1, 1, 1) if n == 1 else (2, 2, 1), n, wrap, _HBM_GB[m[1]])
  if m and m[1] in ("v4", "v5p") and int(m[2]) % 2 == 0 and int(m[2]) // 2 in _SHAPES_3D:
    chips = int(m[2]) // 2
    gen = "v4" if m[1] == "v4" else "v5"
    return TpuSlice(name, f"{gen}:{_SHAPES_3D[chips]}", "megacore", (2, 2, 1), chips, (chips >= 64,) * 3, _HBM_GB[m[1]])
  raise ConfigError([Problem("compile_topology", "is not a TPU slice name known here", name,
                             allowed=", ".join(known_names()))])


def libtpu_requirement() -> str:
  """The libtpu version this jax was released with (from jax's `tpu` extra)."""
  for req in importlib.metadata.requires("jax") or []:
    if req.startswith("libtpu") and "tpu" in req.split(";")[-1]:
      return req.split(";")[0].strip().replace(" ", "")
  return "libtpu"


def point_jax_at_libtpu() -> str | None:
  """Sets TPU_LIBRARY_PATH to libtpu beside this environment when nothing else provides it; the path, or None."""
  if os.environ.get("TPU_LIBRARY_PATH"):
    return os.environ["TPU_LIBRARY_PATH"]
  try:
    return f"the installed libtpu {importlib.metadata.version('libtpu')}"
  except importlib.metadata.PackageNotFoundError:
    pass
  beside = os.path.join(sys.prefix, "libtpu", "libtpu", "libtpu.so")
  if os.path.isfile(beside):
    os.environ["TPU_LIBRARY_PATH"] = beside
    return beside
  return None


def topology_devices(name: str, num_slices: int = 1) -> tuple[list, TpuSlice]:
  """The devices of `num_slices` slices of `name` (abstract: nothing runs on them, they compile)."""
  target = tpu_slice(name)
  where = point_jax_at_libtpu()
  # Compiling only (no TPU chips are opened): several processes may load libtpu at once (else its lock file).
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  if where is None:
    req = libtpu_requirement()
    raise ConfigError([Problem(
        "compile_topology", f"compiling for TPU needs libtpu (TPU's compiler), which is not found: install it beside "
        f"the environment with `pip install --no-deps --target {sys.prefix}/libtpu '{req}'` (setup.sh does) or set "
        "TPU_LIBRARY_PATH to a libtpu.so matching this jax", name)])
  from jax.experimental import topologies
  try:
    desc = topologies.get_topology_desc(platform="tpu", topology_name=target.topology,
                                        chip_config_name=target.chip_config, chips_per_host_bounds=target.chips_per_host,
                                        num_slices=num_slices, wrap=target.wrap)
  except Exception as e:  # noqa: BLE001 - libtpu reports a version mismatch or a bad topology in many ways
    raise ConfigError([Problem("compile_topology", f"libtpu ({where}) could not describe {target.topology}: "
                               f"{' '.join(str(e).split())[:300]}", name)]) from None
  return list(desc.devices), target
