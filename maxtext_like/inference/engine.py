"""Load a model's parameters and generate: prefill right-padded prompts, then decode token by token with a KV cache."""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from maxtext_like.config import Config
from maxtext_like.inference.sampling import SamplingOptions, sample
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
  lens = np.array([len(p) for p in prompts], np.int32)
  tokens = np.zeros((B, max_prefill), np.int32)
  segs = np.zeros((B, max_prefill), np.int32)
  for b, p in enumerate(prompts):
    tokens[b, :len(p)] = p
    segs[b, :len(p)] = 1
  steps = max_target - max_prefill
  graphdef, state = nnx.split(model)
  fns = _compiled(graphdef, options, max_target)
  key = jax.random.PRNGKey(seed)
  nxt, cache, key = fns.prefill(state, jnp.asarray(tokens), jnp.asarray(segs), jnp.asarray(lens), key)
  out = [nxt]
  # Decode in chunks so the host checks EOS now and then instead of syncing on every token.
  chunk = 16
  while len(out) < steps:
    n = min(chunk, steps - len(out))
    toks, cache, key = fns.decode(state, out[-1], cache, key, n)
    out.extend(toks[i] for i in range(n))
    if eos_id is not None and bool(np.all(np.any(np.stack([np.asarray(t) for t in out], 1) == eos_id, axis=1))):
      break
  ids = np.stack([np.asarray(t) for t in out], axis=1)[:, :steps]
  result = []
  for b in range(B):
    row = ids[b].tolist()
    if eos_id is not None and eos_id in row:
      row = row[:row.index(eos_id)]
    result.append(row)
  return result


@dataclasses.dataclass(frozen=True)
class _Fns:
  prefill: object
  decode: object


_CACHE: dict = {}


def _compiled(graphdef, options: SamplingOptions, max_target: int) -> _Fns:
  """Jitted prefill and n-token decode on the split model (plain jax.jit: no per-call graph traversal)."""
  key = (graphdef, options, max_target)
  if key in _CACHE:
    return _CACHE[key]

  @jax.jit
  def prefill(state, tokens_BT, segs_BT, lens_B, rng):
    model = nnx.merge(graphdef, state)
    logits_BTV, cache = model.prefill(tokens_BT, segs_BT, max_length=max_target)
    last_BV = jnp.take_along_axis(logits_BTV, (lens_B - 1)[:, None, None], axis=1)[:, 0]
    rng, sub = jax.random.split(rng)
    return sample(last_BV, sub, options), cache, rng

  @functools.partial(jax.jit, static_argnums=(4,), donate_argnums=(2,))
  def decode(state, tok_B, cache, rng, n):
    model = nnx.merge(graphdef, state)

    def body(carry, _):
      tok_B, cache, rng = carry
      logits_BTV, cache = model.decode_step(tok_B[:, None], cache)
      rng, sub = jax.random.split(rng)
      nxt = sample(logits_BTV[:, -1], sub, options)
      return (nxt, cache, rng), nxt

    (_, cache, rng), toks = jax.lax.scan(body, (tok_B, cache, rng), None, length=n)
    return toks, cache, rng

  _CACHE[key] = _Fns(prefill, decode)
  return _CACHE[key]
