"""Load a model's parameters and generate: prefill right-padded prompts, then decode token by token with a KV cache."""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from maxtext_like.config import Config
from maxtext_like.inference.sampling import SamplingOptions, sample
from maxtext_like.models import build_model
from maxtext_like.training import checkpointing as ckpt
from maxtext_like.training.model_spec import model_spec


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


def generate_ids(model, prompts: list[list[int]], *, max_prefill: int, max_target: int, eos_id: int | None,
                 options: SamplingOptions, seed: int = 0) -> list[list[int]]:
  """Continuations (token ids, EOS excluded) of each prompt, batched; prompts longer than max_prefill keep their tail."""
  prompts = [p[-max_prefill:] if len(p) > max_prefill else p for p in prompts]
  B = len(prompts)
  lens = np.array([len(p) for p in prompts])
  tokens = np.zeros((B, max_prefill), np.int32)
  segs = np.zeros((B, max_prefill), np.int32)
  for b, p in enumerate(prompts):
    tokens[b, :len(p)] = p
    segs[b, :len(p)] = 1
  steps = max_target - max_prefill
  logits, cache = _prefill(model, jnp.asarray(tokens), jnp.asarray(segs), max_target)
  last = jnp.take_along_axis(logits, jnp.asarray(lens - 1)[:, None, None], axis=1)[:, 0]
  key = jax.random.PRNGKey(seed)
  out = np.zeros((B, steps), np.int32)
  done = np.zeros(B, bool)
  for t in range(steps):
    key, sub = jax.random.split(key)
    nxt = sample(last, sub, options)
    out[:, t] = np.asarray(nxt)
    if eos_id is not None:
      done |= out[:, t] == eos_id
      if done.all():
        out = out[:, :t + 1]
        break
    if t + 1 < steps:
      last, cache = _decode(model, nxt[:, None], cache)
  result = []
  for b in range(B):
    ids = out[b].tolist()
    if eos_id is not None and eos_id in ids:
      ids = ids[:ids.index(eos_id)]
    result.append(ids)
  return result


@nnx.jit(static_argnums=(3,))
def _prefill(model, tokens, segs, max_target):
  return model.prefill(tokens, segs, max_length=max_target)


@nnx.jit
def _decode(model, tokens, cache):
  logits, cache = model.decode_step(tokens, cache)
  return logits[:, -1], cache
