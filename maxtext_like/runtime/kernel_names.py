"""MaxText names for hardware-specific kernels and sharding modes, and what runs here instead.

Each name is accepted where MaxText accepts it. Where its kernel cannot run on this platform, the computation that
runs instead is the same (the same attention, the same grouped matmuls, the same shardings), and one line says so.
"""

from __future__ import annotations

import sys

CUDNN_ATTENTION = ("cudnn_flash_te", "cudnn_flash_jax")
_said: set[str] = set()


def attention_kernel(name: str, platform: str) -> tuple[str, str]:
  """(kernel to run, notice or ''). cuDNN names: on GPU jax.nn.dot_product_attention, which uses cuDNN's fused
  attention where it applies (TransformerEngine itself is not used); elsewhere the blocked 'flash' kernel."""
  if name not in CUDNN_ATTENTION:
    return name, ""
  if platform == "gpu":
    note = "" if name == "cudnn_flash_jax" else (
        "attention=cudnn_flash_te runs jax.nn.dot_product_attention (cuDNN fused attention), not TransformerEngine")
    return "cudnn_flash_jax", note
  return "flash", (f"attention={name} needs an NVIDIA GPU with cuDNN; on {platform} it runs the 'flash' kernel "
                   "(the same attention, computed in blocks)")


def config_notices(cfg, platform: str) -> list[str]:
  """One line per accepted name whose kernel or mode is replaced here by an equivalent."""
  a, out = cfg.attention, []
  if a.use_tokamax_gmm:
    out.append("use_tokamax_gmm: Tokamax's grouped matmul is a TPU/GPU kernel; MoE grouped matmuls run through "
               "jax.lax.ragged_dot here (the same products)")
  for key in ("use_tokamax_splash", "use_jax_splash"):
    if getattr(a, key) and platform != "tpu":
      out.append(f"{key}: splash attention is a TPU kernel; on {platform} attention=flash runs the blocked 'flash' "
                 "kernel (the same attention)")
  if cfg.mesh.shard_mode == "explicit":
    out.append("shard_mode=explicit: the mesh runs in auto mode, with every parameter and activation sharding set "
               "from logical_axis_rules as in explicit mode (the same shardings and results)")
  return out


def say_once(lines: list[str]) -> None:
  """Prints each notice once per process (model specs are built several times per run)."""
  for line in lines:
    if line and line not in _said:
      _said.add(line)
      print(f"notice: {line}", file=sys.stderr, flush=True)
