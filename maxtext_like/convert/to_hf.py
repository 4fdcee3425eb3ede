"""orbax params (`load_parameters_path`) -> Hugging Face safetensors (sharded above a size) + config.json."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from maxtext_like.config import ConfigError, load_config
from maxtext_like.convert import layout
from maxtext_like.convert.errors import ConvertError
from maxtext_like.convert.safetensors_io import ShardedWriter
from maxtext_like.models.hf_registry import HFConfigError, get_hf_mapping
from maxtext_like.runtime import checkpoints as ckpt
from maxtext_like.runtime.model_spec import model_spec

DEFAULT_MAX_SHARD_BYTES = 5 * 1024**3
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                    "vocab.json", "merges.txt", "generation_config.json", "chat_template.jinja")


def to_hf(output: str, argv: Sequence[str], *, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> str:
  """Writes OUTPUT/{config.json, model*.safetensors[, index], tokenizer files}; returns OUTPUT."""
  output = os.path.abspath(output.rstrip("/"))
  try:
    cfg = load_config(list(argv), env={})
  except ConfigError as e:
    raise ConvertError(str(e)) from None
  path = cfg.checkpointing.load_parameters_path
  if not path:
    raise ConvertError("to_hf needs load_parameters_path=DIR (a checkpoint step dir, or a to_maxtext output)")
  if os.path.exists(output):
    raise ConvertError(f"output {output} already exists; remove it or choose another --output")
  spec = model_spec(cfg)
  try:
    mapping = get_hf_mapping(spec.decoder_block)
    hf_config = mapping.hf_config_from(spec)
  except HFConfigError as e:
    raise ConvertError(str(e)) from None
  dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=dev), layout.abstract_params(spec))
  try:
    leaves = _restore_leaf_by_leaf(path, abstract)
  except ckpt.CheckpointError as e:
    raise ConvertError(str(e)) from None

  dtype = np.dtype(spec.weight_dtype)
  hf_config["dtype"] = hf_config["torch_dtype"] = dtype.name
  tmp = output + ".tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  try:
    writer = ShardedWriter(tmp, max_shard_bytes)
    items = (item for leaf in leaves for item in layout.iter_unscanned(spec, leaf()))
    for name, a in mapping.to_hf_many(spec, items):
      writer.add(name, np.asarray(a, dtype))
      del a
    writer.close()
    with open(os.path.join(tmp, "config.json"), "w") as f:
      json.dump(hf_config, f, indent=2)
    _copy_tokenizer(cfg.tokenizer.tokenizer_path, tmp)
    os.replace(tmp, output)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return output


def _restore_leaf_by_leaf(path: str, abstract):
  """Checks the checkpoint against `abstract` (all problems in one error), then returns one thunk per parameter
  restoring only that parameter (orbax partial restore), so at most one parameter is in memory at a time."""
  path = os.path.abspath(path)
  item = os.path.join(path, "state") if os.path.isdir(os.path.join(path, "state")) else path
  if not os.path.isdir(item):
    raise ckpt.CheckpointError(f"checkpoint path {path} does not exist")
  try:
    meta = ocp.StandardCheckpointer().metadata(item)
    meta = getattr(meta, "item_metadata", meta)
  except Exception as e:  # noqa: BLE001
    raise ckpt.CheckpointError(f"checkpoint {path} is unreadable or incomplete ({type(e).__name__}: "
                               f"{str(e)[:200]})") from None
  ckpt.check_fits({"params": meta["params"]} if "params" in meta else meta, {"params": abstract}, path)

  def restore(flat_leaf):
    def thunk():
      try:
        target = {"params": nnx.from_flat_state([flat_leaf])}
        args = jax.tree.map(lambda a: ocp.RestoreArgs(restore_type=np.ndarray, dtype=a.dtype), target)
        return ocp.PyTreeCheckpointer().restore(item, args=ocp.args.PyTreeRestore(
            item=target, restore_args=args, partial_restore=True))["params"]  # numpy: no device copy
      except Exception as e:  # noqa: BLE001
        raise ckpt.CheckpointError(f"checkpoint {path} could not be restored ({type(e).__name__}: "
                                   f"{str(e)[:300]})") from None
    return thunk

  return [restore(leaf) for leaf in nnx.to_flat_state(abstract)]


def _copy_tokenizer(tokenizer_path, out_dir: str) -> None:
  """Copies a Hugging Face tokenizer directory's files (other tokenizer kinds are left out)."""
  if not tokenizer_path or not os.path.isdir(str(tokenizer_path)):
    return
  for name in _TOKENIZER_FILES:
    src = os.path.join(tokenizer_path, name)
    if os.path.isfile(src):
      shutil.copy(src, os.path.join(out_dir, name))
