"""Reading LoRA adapters for a base model: a LoRA run's adapter-only checkpoint, or a Hugging Face PEFT adapter
directory; and folding one into a loaded base (lora_input_adapters_path). Shared by training (lora_restore_path,
hf_lora_adapter_path), inference and convert.

PEFT stores, per torch Linear `W` [out, in], `lora_A.weight` [r, in] and `lora_B.weight` [out, r] with
W' = W + B·A·lora_alpha/r. Ours (models/lora.py) are A [prod(in_features), r], B [r, prod(out_features)] on a
kernel [*in_features, *out_features]. The family's HF table maps a kernel to its torch weight by reshapes and
transposes only, i.e. by a permutation of the flattened input and output indices; we read those permutations off
the table by mapping index-valued kernels, so module names and layouts are exactly `to_hf`'s.
"""

from __future__ import annotations

import json
import math
import os
import re

import jax
import numpy as np
from flax import nnx

from maxtext_like.models import build_model
from maxtext_like.models import lora as lora_lib
from maxtext_like.models.decoder import layer_stacks
from maxtext_like.models.hf_registry import get_hf_mapping
from maxtext_like.models.linears import DenseGeneral
from maxtext_like.runtime import checkpoints as ckpt

PEFT_PREFIX = "base_model.model."
_STACK = re.compile(r"decoder\.(\w*layers)\.(?:sublayers\.(\d+)\.)?(.+)")


def _listing(title: str, items: list[str], limit: int = 20) -> str:
  shown = ", ".join(items[:limit]) + (f" ... ({len(items) - limit} more)" if len(items) > limit else "")
  return f"{title} ({len(items)}): {shown}"


def _single_device(abstract):
  dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=dev), abstract)


def unscanned_names(spec, abstract: nnx.State) -> dict[str, tuple[tuple, int | None]]:
  """Dotted unscanned adapter name ('decoder.layers.3.mlp.wo.kernel_lora_a') -> (flat state key, index along the
  scan axis or None)."""
  out = {}
  for path, var in nnx.to_flat_state(abstract):
    name = ".".join(map(str, path))
    m = _STACK.fullmatch(name)
    if spec.scan_layers and m:
      c = {st.name: st.cycle for st in layer_stacks(spec)}.get(m.group(1), 1)
      j = int(m.group(2) or 0)
      for u in range(var.shape[spec.param_scan_axis]):
        out[f"decoder.{m.group(1)}.{u * c + j}.{m.group(3)}"] = (tuple(path), u)
    else:
      out[name] = (tuple(path), None)
  return out


def _permutations(mapping, spec, kernel_path: str, shape: tuple[int, ...], n_in: int, n_out: int):
  """(HF weight name, input permutation, output permutation) of one kernel: W[o, i] = K[perm_in[i], perm_out[o]]."""
  def mapped(index):
    hit = mapping.to_hf(spec, kernel_path, index.reshape(shape))
    if len(hit) != 1:
      raise lora_lib.LoraError(f"{kernel_path} maps to {len(hit)} Hugging Face tensors; PEFT adapters need one "
                               "torch Linear")
    return hit[0]
  name, w_out = mapped(np.broadcast_to(np.arange(n_out, dtype=np.float64), (n_in, n_out)))
  _, w_in = mapped(np.broadcast_to(np.arange(n_in, dtype=np.float64)[:, None], (n_in, n_out)))
  if w_out.shape != (n_out, n_in) or not (w_out == w_out[:, :1]).all() or not (w_in == w_in[:1, :]).all():
    raise lora_lib.LoraError(f"{kernel_path} -> {name} is not a torch Linear [out, in] of this kernel; PEFT "
                             "adapters cover Linear projections only")
  return name, w_in[0].astype(np.int64), w_out[:, 0].astype(np.int64)


def module_table(spec, names) -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
  """Our module (dotted, unscanned) -> (PEFT module name, perm_in, perm_out), for every adapted module."""
  mapping = get_hf_mapping(spec.decoder_block)
  unscanned = nnx.eval_shape(lambda: build_model(spec.replace(scan_layers=False), nnx.Rngs(0)))
  dense = {".".join(map(str, p)): m for p, m in nnx.iter_modules(unscanned) if isinstance(m, DenseGeneral)}
  table = {}
  for name in names:
    module = name.rsplit(".", 1)[0]
    if module not in table:
      m = dense[module]
      n_in, n_out = math.prod(m.in_features), math.prod(m.out_features)
      hf, p_in, p_out = _permutations(mapping, spec, module + ".kernel", m.in_features + m.out_features, n_in, n_out)
      table[module] = (PEFT_PREFIX + hf.removesuffix(".weight"), p_in, p_out)
  return table


def adapters_from_peft(path: str, spec, lspec, abstract: nnx.State) -> nnx.State:
  """Our adapter state from a PEFT adapter directory; LoraError naming what does not fit (exit code 2)."""
  from safetensors.numpy import load_file
  cfg_file, weights = os.path.join(path, "adapter_config.json"), os.path.join(path, "adapter_model.safetensors")
  if not (os.path.isfile(cfg_file) and os.path.isfile(weights)):
    raise lora_lib.LoraError(f"hf_lora_adapter_path={path!r} needs adapter_config.json and adapter_model.safetensors "
                             "(a PEFT save_pretrained directory)")
  with open(cfg_file) as f:
    pc = json.load(f)
  problems = [f"{k}={pc.get(k)!r}" for k in ("use_rslora", "use_dora", "fan_in_fan_out") if pc.get(k)]
  if pc.get("peft_type", "LORA") != "LORA":
    problems.append(f"peft_type={pc.get('peft_type')!r}")
  if pc.get("r") != lspec.rank or float(pc.get("lora_alpha", -1)) != lspec.alpha:
    problems.append(f"r={pc.get('r')} lora_alpha={pc.get('lora_alpha')} but lora_rank={lspec.rank} "
                    f"lora_alpha={lspec.alpha}")
  if problems:
    raise lora_lib.LoraError(f"PEFT adapter {path} cannot be used as configured: " + "; ".join(problems))
  hf = load_file(weights)
  names = unscanned_names(spec, abstract)
  table = module_table(spec, names)
  flat = {p: np.zeros(v.shape, v.dtype) for p, v in nnx.to_flat_state(abstract)}
  shaped, missing, used = [], [], set()
  for name, (key, index) in names.items():
    module, which = name.rsplit(".", 1)
    peft_name, p_in, p_out = table[module]
    tensor = peft_name + (".lora_A.weight" if which == lora_lib.A else ".lora_B.weight")
    if tensor not in hf:
      missing.append(tensor)
      continue
    used.add(tensor)
    w = hf[tensor]
    target = flat[key] if index is None else np.take(flat[key], index, axis=spec.param_scan_axis)
    ours = None
    if which == lora_lib.A and w.shape[1] == len(p_in):  # A_hf [r, in]: ours[perm_in[i], :] = A_hf[:, i]
      ours = np.empty((len(p_in), w.shape[0]), target.dtype)
      ours[p_in, :] = w.T
    elif which == lora_lib.B and w.shape[0] == len(p_out):  # B_hf [out, r]: ours[:, perm_out[o]] = B_hf[o, :]
      ours = np.empty((w.shape[1], len(p_out)), target.dtype)
      ours[:, p_out] = w.T
    if ours is None or ours.shape != target.shape:
      shaped.append(f"{tensor} {tuple(w.shape)} (this model needs {tuple(target.shape[::-1])})")
    elif index is None:
      flat[key] = ours
    else:
      idx = [slice(None)] * flat[key].ndim
      idx[spec.param_scan_axis] = index
      flat[key][tuple(idx)] = ours
  extra = sorted(set(hf) - used)
  if shaped or extra or missing:
    parts = ([_listing("mis-shaped", shaped)] if shaped else []) + ([_listing(
        "not adapted by this model (another base model, or lora_module_path differs)", extra)] if extra else []) + (
        [_listing("missing (set lora_module_path to the adapter's target modules)", missing)] if missing else [])
    raise lora_lib.LoraError(f"PEFT adapter {path} does not fit this base model and LoRA keys: " + "; ".join(parts))
  return nnx.from_flat_state([(p, var.replace(flat[p])) for p, var in nnx.to_flat_state(abstract)])


def restore_adapters(path: str, abstract_adapters) -> nnx.State:
  """The adapters of an adapter-only checkpoint (a training run's step dir); a clear CheckpointError naming every
  adapter that does not fit (another base model, rank or target modules)."""
  try:
    return ckpt.restore_from_path(path, {"params": abstract_adapters}, params_only=True)
  except ckpt.CheckpointError as e:
    raise ckpt.CheckpointError(f"LoRA adapter {path} does not fit this base model and LoRA keys (lora_rank, "
                                  f"lora_module_path): {e}") from None


def serving_adapter(cfg, spec, path: str) -> tuple[nnx.State, lora_lib.LoraSpec]:
  """(adapters, their LoraSpec) for lora_input_adapters_path: a PEFT directory (r and lora_alpha from its
  adapter_config.json) or a LoRA run's checkpoint step (its saved config's lora_rank / lora_alpha /
  lora_module_path)."""
  if os.path.isfile(os.path.join(path, "adapter_config.json")):
    with open(os.path.join(path, "adapter_config.json")) as f:
      pc = json.load(f)
    lspec = lora_lib.LoraSpec(rank=int(pc.get("r", 0)), alpha=float(pc.get("lora_alpha", 0)),
                              module_path=cfg.finetune.lora_module_path)
    return adapters_from_peft(path, spec, lspec, lora_lib.abstract_adapters(spec, lspec)), lspec
  saved = (ckpt.read_saved_config(path) or {}).get("flat", {})
  if not saved.get("enable_lora"):
    raise lora_lib.LoraError(f"lora_input_adapters_path={path!r} is neither a PEFT adapter directory "
                             "(adapter_config.json) nor a checkpoint step of a run with enable_lora=true")
  lspec = lora_lib.LoraSpec(rank=saved["lora_rank"], alpha=saved["lora_alpha"], module_path=saved.get("lora_module_path", ""))
  return restore_adapters(path, _single_device(lora_lib.abstract_adapters(spec, lspec))), lspec


def with_adapter(cfg, model: nnx.Module, path: str) -> nnx.Module:
  """`model` with the adapter at `path` folded into its weights (serving a LoRA adapter on its base)."""
  adapters, lspec = serving_adapter(cfg, model.spec, path)
  nnx.update(model, lora_lib.merge_into(nnx.state(model, nnx.Param), adapters, lspec, model.spec.param_scan_axis))
  return model
