"""Hugging Face safetensors -> orbax params (a directory usable as `load_parameters_path`).

Streams one tensor at a time: each HF tensor is memory-mapped, mapped by the family's `to_ours`, cast to
`weight_dtype` and written into an on-disk staging array (a layer slice of the stacked array when
scan_layers=true), so peak memory stays near twice the largest tensor until orbax serialises the staged arrays.
Everything is written under OUTPUT.tmp and renamed only when complete and checked.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Sequence

import numpy as np
import orbax.checkpoint as ocp
import yaml

from maxtext_like.config import ConfigError, load_config
from maxtext_like.convert import layout
from maxtext_like.convert.errors import ConvertError, listing
from maxtext_like.convert.safetensors_io import checkpoint_files, iter_tensors
from maxtext_like.models.hf_registry import HFConfigError, mapping_for_architecture
from maxtext_like.training.model_spec import model_spec


def read_hf_config(hf_path: str) -> dict:
  path = os.path.join(hf_path, "config.json")
  if not os.path.isfile(path):
    raise ConvertError(f"{hf_path} has no config.json: --hf_path must be a Hugging Face model directory "
                       "(config.json and *.safetensors, e.g. from save_pretrained)")
  with open(path) as f:
    return json.load(f)


def _same(a, b) -> bool:
  if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
    return math.isclose(float(a), float(b), rel_tol=1e-9)
  if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
    return list(a) == list(b)
  return a == b


def _check_preset(cfg, keys: dict, decoder_blocks: tuple[str, ...], arch: str) -> None:
  if cfg.model.decoder_block not in decoder_blocks:
    raise ConvertError(f"the checkpoint's architecture {arch} converts to decoder_block {list(decoder_blocks)}, but "
                       f"model_name={cfg.get('model_name')} has "
                       f"decoder_block={cfg.model.decoder_block!r}; pick a matching model_name or omit it to derive "
                       "the model from config.json")
  diffs = [f"{k}: checkpoint {v!r}, config {cfg.get(k)!r}" for k, v in keys.items()
           if k not in ("decoder_block",) and not _same(v, cfg.get(k))]
  if diffs:
    raise ConvertError("the checkpoint's config.json does not match the chosen model (" + "; ".join(diffs) +
                       "); pick the matching model_name, override the keys, or omit model_name")


def to_maxtext(hf_path: str, output: str, argv: Sequence[str] = ()) -> str:
  """Converts HF_PATH into OUTPUT (orbax params + model.yml when no model_name is given); returns OUTPUT."""
  hf_path, output = os.path.abspath(hf_path), os.path.abspath(output.rstrip("/"))
  hf = read_hf_config(hf_path)
  arch = (hf.get("architectures") or [hf.get("model_type", "?")])[0]
  try:
    mapping = mapping_for_architecture(arch)
    keys = mapping.model_keys_from_hf(hf)
  except HFConfigError as e:
    raise ConvertError(f"{hf_path}: {e}") from None
  files = checkpoint_files(hf_path)
  if not files:
    raise ConvertError(f"{hf_path} has no *.safetensors files (only safetensors checkpoints are supported)")
  if os.path.exists(output):
    raise ConvertError(f"output {output} already exists; remove it or choose another --output")

  tmp, staging = output + ".tmp", output + ".staging"
  for d in (tmp, staging):
    shutil.rmtree(d, ignore_errors=True)
  os.makedirs(staging)
  try:
    argv = list(argv)
    given_model = any(a.startswith("model_name=") for a in argv)
    model_yml = os.path.join(staging, "model.yml")
    if not given_model:
      with open(model_yml, "w") as f:
        f.write(f"# Derived from {hf_path}/config.json ({arch}) by maxtext_like.convert.\n")
        yaml.safe_dump(keys, f, sort_keys=False)
      argv.append(f"model_name={model_yml}")
    try:
      cfg = load_config(argv, env={})
    except ConfigError as e:
      raise ConvertError(str(e)) from None
    if given_model:
      _check_preset(cfg, keys, mapping.decoder_blocks, arch)
    spec = model_spec(cfg)
    arrays = _stream(mapping, spec, files, staging)
    state = layout.fill_state(spec, arrays)
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(tmp, {"params": state})
    ckptr.wait_until_finished()
    if not given_model:
      shutil.copy(model_yml, os.path.join(tmp, "model.yml"))
    del arrays, state
    os.replace(tmp, output)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return output


def _stream(mapping, spec, files: list[str], staging: str) -> dict[str, np.ndarray]:
  """Maps every HF tensor into on-disk arrays keyed by the checkpoint's dotted paths; one error for all problems."""
  wanted = layout.flat_shapes(spec)
  dtype = np.dtype(spec.weight_dtype)
  arrays: dict[str, np.ndarray] = {}
  seen: dict[str, str] = {}
  unexpected, shaped, twice = [], [], []
  for file in files:
    for hf_name, hf_array in iter_tensors(file):
      produced = mapping.to_ours(spec, hf_name, hf_array)
      if produced is None:
        unexpected.append(f"{hf_name} {list(hf_array.shape)}")
        continue
      for path, a in produced:
        if path not in wanted:
          unexpected.append(f"{hf_name} (-> {path}, which this model has not)")
        elif tuple(a.shape) != wanted[path]:
          shaped.append(f"{hf_name} {list(hf_array.shape)} (-> {path} needs {list(wanted[path])})")
          seen.setdefault(path, hf_name)  # reported as mis-shaped, not also as missing
        elif path in seen:
          twice.append(f"{path} (from {seen[path]} and {hf_name})")
        else:
          seen[path] = hf_name
          key, layer = layout.stacked_key(spec, path)
          if key not in arrays:
            shape = list(a.shape)
            if layer is not None:
              shape.insert(spec.param_scan_axis, spec.num_decoder_layers)
            arrays[key] = np.memmap(os.path.join(staging, f"{len(arrays)}.bin"), dtype=dtype, mode="w+",
                                    shape=tuple(shape))
          if layer is None:
            arrays[key][...] = a
          else:
            np.moveaxis(arrays[key], spec.param_scan_axis, 0)[layer] = a
        del a
  missing = sorted(set(wanted) - set(seen))
  if missing or unexpected or shaped or twice:
    parts = []
    if missing:
      parts.append(listing("missing", [_hf_names(mapping, spec, p, wanted[p]) for p in missing]))
    if unexpected:
      parts.append(listing("unexpected", unexpected))
    if shaped:
      parts.append(listing("mis-shaped", shaped))
    if twice:
      parts.append(listing("produced twice", twice))
    raise ConvertError(f"the checkpoint does not fit decoder_block={spec.decoder_block!r} with the configured "
                       f"dimensions; " + "; ".join(parts) + ". Nothing was written.")
  for a in arrays.values():
    a.flush()
  return arrays


def _hf_names(mapping, spec, path: str, shape) -> str:
  try:
    names = [n for n, _ in mapping.to_hf(spec, path, np.zeros(shape, np.int8))]
    return f"{'/'.join(names)} {list(shape)}"
  except Exception:  # noqa: BLE001 - only for the message
    return f"{path} {list(shape)}"
