"""The static-batch decoder: right-padded prompts prefilled together, then every row decodes until the longest
is done. Kept as the baseline the engine's continuous batching is measured against (benchmarks/serving.py) and for
tests that want a plain batched greedy decode; serving goes through `inference.engine.Engine`."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from maxtext_like.inference.sampling import SamplingOptions, sample


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
