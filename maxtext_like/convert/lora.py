"""LoRA adapters out: merge an adapter into its base (a normal params checkpoint), and export it in Hugging Face
PEFT's format (adapter_config.json + adapter_model.safetensors, module names as `to_hf` writes the base). Reading
adapters (ours and PEFT's) lives in runtime/lora_adapters.py, shared with training and serving.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx

from maxtext_like.config import ConfigError, load_config
from maxtext_like.convert import layout
from maxtext_like.convert.errors import ConvertError
from maxtext_like.models import lora as lora_lib
from maxtext_like.runtime import checkpoints as ckpt
from maxtext_like.runtime import lora_adapters
from maxtext_like.runtime.model_spec import model_spec


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


def to_peft(spec, lspec, adapters: nnx.State) -> tuple[dict[str, np.ndarray], dict]:
  """(safetensors tensors, adapter_config.json) of our adapters, named after `to_hf`'s output of the base."""
  items = dict(layout.iter_unscanned(spec, adapters))
  table = lora_adapters.module_table(spec, items)
  tensors = {}
  for module, (hf, p_in, p_out) in table.items():
    a, b = np.asarray(items[module + "." + lora_lib.A]), np.asarray(items[module + "." + lora_lib.B])
    tensors[hf + ".lora_A.weight"] = np.ascontiguousarray(a[p_in, :].T)
    tensors[hf + ".lora_B.weight"] = np.ascontiguousarray(b[:, p_out].T)
  hf_names = sorted(h.removeprefix(lora_adapters.PEFT_PREFIX) for h, _, _ in table.values())
  config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": lspec.rank, "lora_alpha": lspec.alpha,
            "target_modules": "|".join(re.escape(n) for n in hf_names), "lora_dropout": 0.0, "bias": "none",
            "fan_in_fan_out": False, "use_rslora": False, "use_dora": False, "init_lora_weights": True,
            "inference_mode": True, "modules_to_save": None, "base_model_name_or_path": None}
  return tensors, config


def _single_device(abstract):
  dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=dev), abstract)


def load_adapters(cfg, spec, lspec) -> nnx.State:
  """The adapters named by lora_restore_path (ours) or hf_lora_adapter_path (PEFT)."""
  abstract = lora_lib.abstract_adapters(spec, lspec)
  if cfg.finetune.lora_restore_path:
    return lora_adapters.restore_adapters(cfg.finetune.lora_restore_path, _single_device(abstract))
  if cfg.checkpointing.hf_lora_adapter_path:
    return lora_adapters.adapters_from_peft(cfg.checkpointing.hf_lora_adapter_path, spec, lspec, abstract)
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
  base = ckpt.restore_from_path(cfg.checkpointing.load_parameters_path,
                                {"params": _single_device(layout.abstract_params(spec))}, params_only=True)
  merged = lora_lib.merge_into(base, adapters, lspec, spec.param_scan_axis)
  tmp = output + ".tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  _save_streaming(tmp, {"params": jax.tree.map(np.asarray, merged)})
  os.replace(tmp, output)
  return output
