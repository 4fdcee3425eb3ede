"""Load a model's parameters: `load_parameters_path`, else the latest checkpoint of `run_name`, else the seeded init."""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
from flax import nnx

from maxtext_like.config import Config
from maxtext_like.inference.sampling import SamplingOptions
from maxtext_like.models import build_model
from maxtext_like.runtime import checkpoints as ckpt
from maxtext_like.runtime.model_spec import model_spec


def sampling_options(cfg: Config) -> SamplingOptions:
  i = cfg.inference
  return SamplingOptions(i.decode_sampling_strategy, i.decode_sampling_temperature, i.decode_sampling_top_k, i.decode_sampling_nucleus_p)


@dataclasses.dataclass
class LoadedModel:
  """A model with parameters, and where they came from. `.logits(tokens)`: int32 [B, T] -> float32 [B, T, V]."""

  model: nnx.Module
  source: str

  def logits(self, tokens_BT) -> jax.Array:
    tokens_BT = jnp.asarray(tokens_BT, jnp.int32)
    return _forward(self.model, tokens_BT).astype(jnp.float32)


@nnx.jit
def _forward(model, tokens_BT):
  return model(tokens_BT)


def load_model(cfg: Config) -> LoadedModel:
  """Parameters from load_parameters_path, else the latest checkpoint of run_name, else the seeded init.

  With `quantization` set, the model comes back post-training quantized (models/ptq.py) in the unscanned serving
  layout: read from a quantized checkpoint when `checkpoint_is_quantized`, else quantized here from float weights
  (and written to `save_quantized_params_path` when that is set)."""
  from maxtext_like.runtime import quantized
  path = cfg.checkpointing.load_parameters_path or _latest_checkpoint(cfg)
  if cfg.checkpointing.checkpoint_is_quantized:
    return LoadedModel(quantized.load_quantized(cfg, path), f"{path} (quantized: {cfg.quantization.quantization})")
  model, source = load_float(cfg, path)
  if cfg.checkpointing.lora_input_adapters_path:  # a LoRA adapter served on its base: folded into the weights
    from maxtext_like.runtime.lora_adapters import with_adapter
    model = with_adapter(cfg, model, cfg.checkpointing.lora_input_adapters_path)
    source = f"{source} + LoRA adapter {cfg.checkpointing.lora_input_adapters_path}"
  if cfg.quantization.quantization:
    model = quantized.quantize_loaded(cfg, model)
    source = f"{source}, quantized on load to {cfg.quantization.quantization}"
    if cfg.checkpointing.save_quantized_params_path:  # as MaxText: keep what was quantized on the fly
      saved = quantized.save_quantized(model, cfg, cfg.checkpointing.save_quantized_params_path)
      source = f"{source} (saved to {saved})"
  return LoadedModel(model, source)


def _latest_checkpoint(cfg: Config) -> str | None:
  if os.path.isdir(cfg.derived.checkpoint_dir):
    steps = sorted(int(d) for d in os.listdir(cfg.derived.checkpoint_dir) if d.isdigit())
    if steps:
      return os.path.join(cfg.derived.checkpoint_dir, str(steps[-1]))
  return None


def load_float(cfg: Config, path: str | None) -> tuple[nnx.Module, str]:
  """(the float model with the parameters at `path`, or the seeded init when None; where they came from)."""
  spec = model_spec(cfg)
  model = build_model(spec, nnx.Rngs(params=cfg.training.init_weights_seed, dropout=1))
  if path is None:
    return model, f"seeded init (init_weights_seed={cfg.training.init_weights_seed})"
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = {"params": jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), params)}
  params = ckpt.restore_from_path(path, abstract, params_only=True)
  return nnx.merge(graphdef, params, rest), path
