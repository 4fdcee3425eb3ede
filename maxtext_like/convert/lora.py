"""LoRA adapters in and out: merge into the base (a normal checkpoint), Hugging Face PEFT export and import.

PEFT stores, per torch Linear `W` [out, in], `lora_A.weight` [r, in] and `lora_B.weight` [out, r] with
W' = W + B·A·lora_alpha/r. Ours (models/lora.py) are A [prod(in_features), r], B [r, prod(out_features)] on a
kernel [*in_features, *out_features]. The family's HF table maps a kernel to its torch weight by reshapes and
transposes only, i.e. by a permutation of the flattened input and output indices; we read those permutations off
the table by mapping index-valued kernels, so the adapter's module names and layouts are exactly `to_hf`'s.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx

from maxtext_like.config import ConfigError, load_config
from maxtext_like.convert import layout
from maxtext_like.convert.errors import ConvertError, listing
from maxtext_like.models import build_model
from maxtext_like.models import lora as lora_lib
from maxtext_like.models.linears import DenseGeneral
from maxtext_like.models.hf_registry import get_hf_mapping
from maxtext_like.runtime import checkpoints as ckpt
from maxtext_like.runtime.model_spec import model_spec

PEFT_PREFIX = "base_model.model."
_STACK = re.compile(r"decoder\.(\w*layers)\.(?:sublayers\.(\d+)\.)?(.+)")


def _config(argv: Sequence[str]):
  try:
    cfg = load_config(list(argv), env={})
  except ConfigError as e:
    raise ConvertError(str(e)) from None
  lspec = lora_lib.lora_spec(cfg.finetune)
  if lspec is None:
    raise ConvertError("give the adapter's LoRA keys as in training: enable_lora=true lora_rank=R lora_alpha=A "
                       "[lora_module_path=...]")
  return cfg, model_spec(cfg), lspec


def abstract_adapters(spec, lspec) -> nnx.State:
  from maxtext_like.training.lora_train import abstract_adapters as abstract
  return abstract(spec, lspec)


def unscanned_names(spec, abstract: nnx.State) -> dict[str, tuple[tuple, int | None]]:
  """Dotted unscanned adapter name ('decoder.layers.3.mlp.wo.kernel_lora_a') -> (flat state key, index along the
  scan axis or None)."""
  out = {}
  for path, var in nnx.to_flat_state(abstract):
    name = ".".join(map(str, path))
    m = _STACK.fullmatch(name)
    if spec.scan_layers and m:
      c = layout._cycles(spec).get(m.group(1), 1)
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
      raise ConvertError(f"{kernel_path} maps to {len(hit)} Hugging Face tensors; PEFT adapters need one torch Linear")
    return hit[0]
  name, w_out = mapped(np.broadcast_to(np.arange(n_out, dtype=np.float64), (n_in, n_out)))
  _, w_in = mapped(np.broadcast_to(np.arange(n_in, dtype=np.float64)[:, None], (n_in, n_out)))
  if w_out.shape != (n_out, n_in) or not (w_out == w_out[:, :1]).all() or not (w_in == w_in[:1, :]).all():
    raise ConvertError(f"{kernel_path} -> {name} is not a torch Linear [out, in] of this kernel; LoRA export "
                       "supports Linear projections only")
  return name, w_in[0].astype(np.int64), w_out[:, 0].astype(np.int64)


def _module_table(spec, names) -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
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


def to_peft(spec, lspec, adapters: nnx.State) -> tuple[dict[str, np.ndarray], dict]:
  """(safetensors tensors, adapter_config.json) of our adapters, named after `to_hf`'s output of the base."""
  items = dict(layout.iter_unscanned(spec, adapters))
  table = _module_table(spec, items)
  tensors = {}
  for module, (hf, p_in, p_out) in table.items():
    a, b = np.asarray(items[module + "." + lora_lib.A]), np.asarray(items[module + "." + lora_lib.B])
    tensors[hf + ".lora_A.weight"] = np.ascontiguousarray(a[p_in, :].T)
    tensors[hf + ".lora_B.weight"] = np.ascontiguousarray(b[:, p_out].T)
  hf_names = sorted(h.removeprefix(PEFT_PREFIX) for h, _, _ in table.values())
  config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": lspec.rank, "lora_alpha": lspec.alpha,
            "target_modules": "|".join(re.escape(n) for n in hf_names), "lora_dropout": 0.0, "bias": "none",
            "fan_in_fan_out": False, "use_rslora": False, "use_dora": False, "init_lora_weights": True,
            "inference_mode": True, "modules_to_save": None, "base_model_name_or_path": None}
  return tensors, config


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
  try:
    table = _module_table(spec, names)
  except ConvertError as e:
    raise lora_lib.LoraError(str(e)) from None
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
    parts = ([listing("mis-shaped", shaped)] if shaped else []) + ([listing(
        "not adapted by this model (another base model, or lora_module_path differs)", extra)] if extra else []) + (
        [listing("missing (set lora_module_path to the adapter's target modules)", missing)] if missing else [])
    raise lora_lib.LoraError(f"PEFT adapter {path} does not fit this base model and LoRA keys: " + "; ".join(parts))
  return nnx.from_flat_state([(p, var.replace(flat[p])) for p, var in nnx.to_flat_state(abstract)])


def _restore(path: str, abstract) -> nnx.State:
  dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=dev), abstract)
  return ckpt.restore_from_path(path, {"params": target}, params_only=True)


def load_adapters(cfg, spec, lspec) -> nnx.State:
  """The adapters named by lora_restore_path (ours) or hf_lora_adapter_path (PEFT)."""
  abstract = abstract_adapters(spec, lspec)
  if cfg.finetune.lora_restore_path:
    from maxtext_like.training.lora_train import restore_adapters
    dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return restore_adapters(cfg.finetune.lora_restore_path,
                            jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=dev), abstract))
  if cfg.checkpointing.hf_lora_adapter_path:
    return adapters_from_peft(cfg.checkpointing.hf_lora_adapter_path, spec, lspec, abstract)
  raise ConvertError("name the adapter: lora_restore_path=DIR (a LoRA training checkpoint step) or "
                     "hf_lora_adapter_path=DIR (a PEFT adapter)")


def lora_to_hf(output: str, argv: Sequence[str]) -> str:
  """Writes OUTPUT/{adapter_config.json, adapter_model.safetensors} from a LoRA training checkpoint."""
  from safetensors.numpy import save_file
  output = os.path.abspath(output.rstrip("/"))
  cfg, spec, lspec = _config(argv)
  if os.path.exists(output):
    raise ConvertError(f"output {output} already exists; remove it or choose another --output")
  tensors, config = to_peft(spec, lspec, load_adapters(cfg, spec, lspec))
  tmp = output + ".tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  save_file(tensors, os.path.join(tmp, "adapter_model.safetensors"))
  with open(os.path.join(tmp, "adapter_config.json"), "w") as f:
    json.dump(config, f, indent=2)
  os.replace(tmp, output)
  return output


def merge_lora(output: str, argv: Sequence[str]) -> str:
  """Writes OUTPUT: a params checkpoint (load_parameters_path) of the base with the adapter folded in."""
  from maxtext_like.convert.to_maxtext import _save_streaming
  output = os.path.abspath(output.rstrip("/"))
  cfg, spec, lspec = _config(argv)
  if not cfg.checkpointing.load_parameters_path:
    raise ConvertError("merge_lora needs the base: load_parameters_path=DIR")
  if os.path.exists(output):
    raise ConvertError(f"output {output} already exists; remove it or choose another --output")
  adapters = load_adapters(cfg, spec, lspec)
  base = _restore(cfg.checkpointing.load_parameters_path, layout.abstract_params(spec))
  merged = lora_lib.merge_into(base, adapters, lspec, spec.param_scan_axis)
  tmp = output + ".tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  _save_streaming(tmp, {"params": jax.tree.map(np.asarray, merged)})
  os.replace(tmp, output)
  return output


def serving_adapter(cfg, spec, path: str) -> tuple[nnx.State, lora_lib.LoraSpec]:
  """(adapters, their LoraSpec) for lora_input_adapters_path: a PEFT directory (r and lora_alpha from its
  adapter_config.json) or a LoRA run's checkpoint step (its saved config's lora_rank / lora_alpha /
  lora_module_path)."""
  if os.path.isfile(os.path.join(path, "adapter_config.json")):
    with open(os.path.join(path, "adapter_config.json")) as f:
      pc = json.load(f)
    lspec = lora_lib.LoraSpec(rank=int(pc.get("r", 0)), alpha=float(pc.get("lora_alpha", 0)),
                              module_path=cfg.finetune.lora_module_path)
    return adapters_from_peft(path, spec, lspec, abstract_adapters(spec, lspec)), lspec
  saved = (ckpt.read_saved_config(path) or {}).get("flat", {})
  if not saved.get("enable_lora"):
    raise lora_lib.LoraError(f"lora_input_adapters_path={path!r} is neither a PEFT adapter directory "
                             "(adapter_config.json) nor a checkpoint step of a run with enable_lora=true")
  lspec = lora_lib.LoraSpec(rank=saved["lora_rank"], alpha=saved["lora_alpha"], module_path=saved.get("lora_module_path", ""))
  from maxtext_like.training.lora_train import restore_adapters
  dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=dev), abstract_adapters(spec, lspec))
  return restore_adapters(path, abstract), lspec


def with_adapter(cfg, model: nnx.Module, path: str) -> nnx.Module:
  """`model` with the adapter at `path` folded into its weights (serving a LoRA adapter on its base)."""
  adapters, lspec = serving_adapter(cfg, model.spec, path)
  nnx.update(model, lora_lib.merge_into(nnx.state(model, nnx.Param), adapters, lspec, model.spec.param_scan_axis))
  return model
