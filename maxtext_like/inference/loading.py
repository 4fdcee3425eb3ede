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
  """Parameters from load_parameters_path, else the latest checkpoint of run_name, else the seeded init."""
  if cfg.quantization.quantization:  # quantized training is built (models/quantization.py); quantizing on load is not
    from maxtext_like.config import ConfigError, Problem
    raise ConfigError([Problem("quantization", "post-training quantization on load (decode, serve, the "
                               "microbenchmark) is not built yet; refused rather than run in float",
                               cfg.quantization.quantization, allowed="'' (float)")])
  spec = model_spec(cfg)
  model = build_model(spec, nnx.Rngs(params=cfg.training.init_weights_seed, dropout=1))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  abstract = {"params": jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0])), params)}
  path, source = None, f"seeded init (init_weights_seed={cfg.training.init_weights_seed})"
  if cfg.checkpointing.load_parameters_path:
    path = cfg.checkpointing.load_parameters_path
  elif os.path.isdir(cfg.derived.checkpoint_dir):
    steps = sorted(int(d) for d in os.listdir(cfg.derived.checkpoint_dir) if d.isdigit())
    if steps:
      path = os.path.join(cfg.derived.checkpoint_dir, str(steps[-1]))
  if path is not None:
    params = ckpt.restore_from_path(path, abstract, params_only=True)
    source = path
  return LoadedModel(nnx.merge(graphdef, params, rest), source)


