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
from maxtext_like.runtime.model_spec import model_spec


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
  except (KeyError, TypeError, ValueError) as e:
    raise ConvertError(f"{hf_path}/config.json is incomplete or malformed for {arch} "
                       f"({type(e).__name__}: {e}); is it the config the checkpoint was saved with?") from None
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
    _save_streaming(tmp, {"params": state})
    _debug_rss("saved")
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
  slices: dict[str, int] = {}  # path -> slices written so far (mappings addressing 'path[i]')
  for file in files:
    for hf_name, hf_array in iter_tensors(file):
      produced = mapping.to_ours(spec, hf_name, hf_array)
      hf_shape = list(hf_array.shape)
      del hf_array  # unmapped now unless `produced` views it (a transposed copy does not)
      if produced is None:
        unexpected.append(f"{hf_name} {hf_shape}")
        continue
      for path, a in produced:
        path, index = layout.split_slice(path)  # 'p[e]': index e of p's axis 0 (e.g. one expert of [E, D, F])
        if path not in wanted:
          unexpected.append(f"{hf_name} (-> {path}, which this model has not)")
        elif tuple(a.shape) != (wanted[path] if index is None else wanted[path][1:]) or \
            (index is not None and not 0 <= index < wanted[path][0]):
          needs = list(wanted[path]) if index is None else f"[{index}] of {list(wanted[path])}"
          shaped.append(f"{hf_name} {hf_shape} (-> {path} needs {needs})")
          seen.setdefault(path, hf_name)  # reported as mis-shaped, not also as missing
        elif (path if index is None else (path, index)) in seen or (index is not None and path in seen):
          twice.append(f"{path}{'' if index is None else f'[{index}]'} (from "
                       f"{seen.get(path if index is None else (path, index), seen.get(path))} and {hf_name})")
        else:
          if index is None:
            seen[path] = hf_name
          else:
            seen[(path, index)] = hf_name
            slices[path] = slices.get(path, 0) + 1
            if slices[path] == wanted[path][0]:
              seen[path] = hf_name  # every slice written
          key, layer = layout.stacked_key(spec, path)
          mode = "r+"
          if key not in arrays:
            shape = list(wanted[path])
            if layer is not None:
              shape.insert(spec.param_scan_axis, layout.stack_size(spec, key))
            arrays[key] = (os.path.join(staging, f"{len(arrays)}.bin"), tuple(shape))
            mode = "w+"
          if layer is None and index is None:  # write(2), not a mapping: mapped pages stay resident (in RSS)
            with open(arrays[key][0], "wb") as fh:
              np.ascontiguousarray(a, dtype).tofile(fh)
            del a
            continue
          # mapped only while writing: a mapping kept open keeps its written pages resident (in RSS)
          staged = np.memmap(arrays[key][0], dtype=dtype, mode=mode, shape=arrays[key][1])
          target = staged if layer is None else np.moveaxis(staged, spec.param_scan_axis, 0)[layer]
          if index is None:
            target[...] = a
          else:
            target[index] = a
          staged.flush()
          del staged
        del a
      del produced
  _debug_rss("staged")
  missing = sorted(set(wanted) - {k for k in seen if isinstance(k, str)})
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
  return {k: np.memmap(f, dtype=dtype, mode="r", shape=shape) for k, (f, shape) in arrays.items()}


_SLAB_BYTES = 64 * 1024**2


def _debug_rss(phase: str) -> None:
  if os.environ.get("MAXTEXT_LIKE_CONVERT_DEBUG"):
    import resource
    import sys
    print(f"convert: peak RSS after {phase}: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB",
          file=sys.stderr, flush=True)


class _StreamingNumpyHandler(ocp.type_handlers.NumpyHandler):
  """orbax's NumpyHandler, but a staged np.memmap is written slab by slab (64 MiB along axis 0, read with read(2),
  not mapped) and one array at a time. The stock handler deep-copies every host array before an async save and
  writes all arrays at once, i.e. holds the whole model in memory (measured in docs/performance.md)."""

  def __init__(self):
    super().__init__(deepcopy_host_arrays=False)
    self._one_at_a_time = None

  async def _open_and_write(self, value, tspec, ts_context):
    import asyncio

    import tensorstore as ts
    if not isinstance(value, np.memmap) or value.ndim == 0 or value.nbytes <= _SLAB_BYTES:
      return await super()._open_and_write(np.asarray(value), tspec, ts_context)
    if self._one_at_a_time is None:
      self._one_at_a_time = asyncio.Semaphore(1)
    async with self._one_at_a_time:
      row = value.nbytes // value.shape[0]
      # chunks are bands of whole rows and each write covers whole chunks (a partial write would rewrite a chunk)
      step = max(1, _SLAB_BYTES // row)
      if "metadata" in tspec and "chunks" in tspec["metadata"]:
        tspec = {**tspec, "metadata": {**tspec["metadata"], "chunks": [min(step, value.shape[0]), *value.shape[1:]]}}
      t = await ts.open(ts.Spec(tspec), create=True, open=True, context=ts_context)
      step = int(t.chunk_layout.write_chunk.shape[0])
      for i in range(0, value.shape[0], step):
        n = min(step, value.shape[0] - i)
        slab = np.fromfile(value.filename, dtype=value.dtype, count=n * row // value.itemsize,
                           offset=value.offset + i * row).reshape((n, *value.shape[1:]))
        await t[i:i + n].write(slab)
        del slab


def _save_streaming(directory: str, tree) -> None:
  registry = ocp.type_handlers.create_type_handler_registry((np.ndarray, _StreamingNumpyHandler()))
  ckptr = ocp.Checkpointer(ocp.PyTreeCheckpointHandler(type_handler_registry=registry))
  ckptr.save(directory, args=ocp.args.PyTreeSave(tree))


def _hf_names(mapping, spec, path: str, shape) -> str:
  try:
    names = [n for n, _ in mapping.to_hf(spec, path, np.zeros(shape, np.int8))]
    return f"{'/'.join(names)} {list(shape)}"
  except Exception:  # noqa: BLE001 - only for the message
    return f"{path} {list(shape)}"
