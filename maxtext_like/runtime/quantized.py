"""Quantized checkpoints: write a float model's PTQ parameters, and load them without any float weights.

Layout (a step directory, so `load_parameters_path` points at it as at any other checkpoint):
  <dir>/state     orbax: {"params": ...} in the unscanned (serving) layout; a quantized kernel is
                  {"qvalue": int8 / int4 / fp8 array, "scale": float array} (no float copy)
  <dir>/config    JSON: the resolved config of the run that quantized it (model keys and quantization keys)

Loading (`checkpoint_is_quantized=true`) builds the quantized model as shapes only (models/ptq.abstract_quantized),
checks the saved quantization scheme and model keys against the configured ones (every difference listed), then
restores the arrays straight into it.
"""

from __future__ import annotations

import dataclasses
import os

import jax
from flax import nnx

from maxtext_like.config import Config
from maxtext_like.models import build_model
from maxtext_like.models import ptq
from maxtext_like.models.quantization import quant_spec
from maxtext_like.runtime import checkpoints as ckpt
from maxtext_like.runtime.model_spec import model_spec

# Keys whose saved value must equal the configured one for a quantized checkpoint to mean the same thing.
SCHEME_KEYS = ("quantization", "quantization_local_shard_count", "weight_quantization_calibration_method",
               "act_quantization_calibration_method", "replicate_quant_scale")


def _serving_spec(cfg: Config):
  return model_spec(cfg).replace(scan_layers=False)


def _ptq_kwargs(cfg: Config) -> dict:
  return {"replicate_scale": cfg.quantization.replicate_quant_scale}


def quantize_loaded(cfg: Config, model: nnx.Module) -> nnx.Module:
  """`model` (float, any layout) -> the unscanned model with its kernels quantized as `cfg.quantization` says."""
  from maxtext_like.inference.engine import unscanned
  return ptq.quantize_for_serving(unscanned(model), quant_spec(cfg.quantization), **_ptq_kwargs(cfg))


def to_plain(pure: dict) -> dict:
  """A pure param dict with qwix WithAux leaves -> plain nested dicts of arrays (what orbax writes)."""
  def conv(x):
    if ptq.is_quantized(x):
      qa = x.array
      out = {"qvalue": qa.qvalue, "scale": qa.scale}
      if qa.zero_point is not None:
        out["zero_point"] = qa.zero_point
      return out
    return x
  return jax.tree.map(conv, pure, is_leaf=ptq.is_quantized)


def from_plain(plain, like):
  """Inverse of `to_plain`, shaped by `like` (the model's pure dict, concrete or abstract)."""
  if ptq.is_quantized(like):
    qa = like.array
    return like.replace(array=dataclasses.replace(qa, qvalue=plain["qvalue"], scale=plain["scale"],
                                                  zero_point=plain.get("zero_point")))
  if isinstance(like, dict):
    return {k: from_plain(plain[k], v) for k, v in like.items()}
  return plain


def save_quantized(model: nnx.Module, cfg: Config, path: str) -> str:
  """Write the quantized `model`'s parameters and `cfg`'s record to `path` (a new directory)."""
  from maxtext_like.training.loop import config_record
  params = to_plain(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  return ckpt.write_params(path, params, config_record(cfg), what="save_quantized_params_path")


def _check_saved_config(cfg: Config, path: str) -> None:
  saved = ckpt.read_saved_config(path)
  if saved is None:
    raise ckpt.CheckpointError(f"checkpoint_is_quantized=true but {path} has no saved config (config/metadata): "
                               "write quantized checkpoints with `python -m maxtext_like.convert quantize`")
  flat = saved.get("flat", {})
  now = cfg.flat()
  model_keys = set(type(cfg.model).model_fields) | {"decoder_block", "vocab_size", "base_emb_dim", "base_num_query_heads",
                                              "base_num_kv_heads", "base_mlp_dim", "base_num_decoder_layers",
                                              "head_dim"}
  keys = [k for k in (*SCHEME_KEYS, *sorted(model_keys)) if k in flat and k in now]
  diffs = [f"{k}: saved {flat[k]!r}, configured {now[k]!r}" for k in keys if flat[k] != now[k]]
  if not flat.get("quantization"):
    diffs.insert(0, "the saved checkpoint is not quantized (its quantization is '')")
  if diffs:
    raise ckpt.CheckpointError(f"quantized checkpoint {path} does not match the configured model: "
                               + "; ".join(diffs[:20]) + ". Set these keys as the quantizing run did.")


def load_quantized(cfg: Config, path: str) -> nnx.Module:
  """The quantized model stored at `path`, built as shapes and filled from disk (no float weights)."""
  path = os.path.abspath(path)
  _check_saved_config(cfg, path)
  spec = _serving_spec(cfg)
  abstract = ptq.abstract_quantized(lambda: build_model(spec, nnx.Rngs(0)), quant_spec(cfg.quantization),
                                    **_ptq_kwargs(cfg))
  graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
  like = nnx.to_pure_dict(params)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), to_plain(like))
  restored = ckpt.restore_from_path(path, {"params": target}, params_only=True)
  nnx.replace_by_pure_dict(params, from_plain(restored, like))
  rest = jax.tree.map(_materialise, rest)  # non-parameter state (e.g. RNG streams of dropout): fresh values
  return nnx.merge(graphdef, params, rest)


def _materialise(a):
  if not isinstance(a, jax.ShapeDtypeStruct):
    return a
  if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
    return jax.random.split(jax.random.key(0), a.shape) if a.shape else jax.random.key(0)
  return jax.numpy.zeros(a.shape, a.dtype)
