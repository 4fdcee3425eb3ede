"""The serving engine, with MaxEngine's shape (JetStream's engine API): a fixed number of decode *slots*, each
holding one sequence at its own position.

  params = engine.load_params()
  state = engine.init_decode_state()                  # max_concurrent_decodes empty slots
  prefix, first = engine.prefill(params=params, padded_tokens=ids, true_length=n, rng=key)
  state = engine.insert(prefix, state, slot)          # or bulk_insert(prefix, state, [slots]) for several samples
  state, result = engine.generate(params, state, rng) # every live slot advances by one token

Slot state is explicit (`DecodeState`): per slot its cache row, next input token, length (= the cache's index),
live flag, tokens generated, token budget, stop token ids and sampling settings. A slot stops (goes dead) on a stop
token (EOS or the request's own), on its token budget, or when its cache row is full; `generate` never advances a
dead slot, so another can be inserted there at any time without touching the others.

The cache is contiguous (per layer [slots, max_target_length, K, H], `models/kv_cache.py`) or paged (`attention=paged`:
a pool of pages, `inference/paging.py`); both give identical tokens. Prefill lengths are padded to power-of-two
buckets (`prefill_buckets`) so a new prompt length does not recompile; prompts longer than
`max_prefill_predict_length` need `use_chunked_prefill` (chunks of `prefill_chunk_size` into the same prefix).

All device work is in jitted functions of (params, state, ...) with the state donated. The decode state's cache is
one buffer per layer. A generate step first writes the previous step's new entries (`DecodeState.pending`) into
the buffers in place, then only reads them, and returns its own new entries as the next `pending`
(models/kv_cache.py says why a program must not read a buffer and then update it); `Engine.flush` writes pending
entries at once, and insert / free / set_page_tables flush first. On a single CPU device the step's few-row
matmuls, few-query attention and logits statistics run as the C++ kernels of `maxtext_like.kernels`
(`cpu_decode_kernels`). With a mesh, parameters follow their logical axes and the cache the `cache_*` logical
rules.
"""

from __future__ import annotations

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from maxtext_like import kernels
from maxtext_like.config import Config
from maxtext_like.inference.sampling import SamplingOptions, row_params, sample_rows, token_log_probs
from maxtext_like.models import build_model
from maxtext_like.models import kv_cache as kv_cache_lib
from maxtext_like.models.kv_cache import KVCache
from maxtext_like.models.sharding import logical_to_pspec, under_activation_sharding

MAX_STOP_IDS = 8  # stop token ids per slot (EOS included)
MIN_PREFILL_BUCKET = 16

CACHE_KV_AXES = (None, "cache_batch", "cache_sequence", "cache_heads", "cache_kv")
CACHE_SCALE_AXES = (None, "cache_batch", "cache_sequence", "cache_heads", None)  # quantized cache: [L, B, S, K, J]
CACHE_BS_AXES = ("cache_batch", "cache_sequence")
CACHE_B_AXES = ("cache_batch",)


class EngineError(ValueError):
  """Bad input to the engine (a prompt that does not fit, a slot out of range, no free pages): the request is
  refused, the engine and its other slots are unaffected."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Prefix:
  """A prefilled prompt: its cache (batch 1), first sampled token(s) and their log-probs, and its length."""

  cache: KVCache
  tokens: jax.Array  # int32 [n]: one first token per sample
  log_probs: jax.Array  # float32 [n]
  logits: jax.Array  # float32 [V]: the last prompt token's logits
  true_length: jax.Array  # int32 []: tokens in the cache
  key: jax.Array  # uint32 [2]: the continuation's random key (sample j's slot gets fold_in(key, j))


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class DecodeState:
  """Everything about the slots, on device. B = max_concurrent_decodes."""

  cache: KVCache  # row b = slot b; cache.index_B = each slot's length (next position)
  tokens_B: jax.Array  # int32: the next input token of each slot (its last emitted token)
  live_B: jax.Array  # bool
  generated_B: jax.Array  # int32: tokens emitted so far, the prefill's first included
  max_tokens_B: jax.Array  # int32: the slot's token budget
  stop_BS: jax.Array  # int32 [B, MAX_STOP_IDS], -1 = unused
  temperature_B: jax.Array  # float32, 0 = greedy
  top_k_B: jax.Array  # int32, 0 = off
  top_p_B: jax.Array  # float32, 1 = off
  key_B: jax.Array  # uint32 [B, 2]: each slot's own random key, so a seeded request samples the same in any batch
  # The last generate step's new cache entries and the slots they go to, not yet in `cache`: the next step writes
  # them first (`Engine.flush` writes them at once). None when the cache is up to date.
  pending: tuple | None = None


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class ResultTokens:
  """One generate step: per slot the token emitted, its log-prob, whether the slot emitted one (it was live), and
  whether the slot finished with it."""

  tokens_B: jax.Array
  log_probs_B: jax.Array
  valid_B: jax.Array
  done_B: jax.Array


@dataclasses.dataclass(frozen=True)
class SlotRequest:
  """Per-request decode settings stored in a slot at insert."""

  sampling: SamplingOptions = SamplingOptions()
  max_tokens: int = 1 << 30
  stop_ids: tuple[int, ...] = ()


def host_key(seed: int) -> np.ndarray:
  """jax.random.PRNGKey(seed) (threefry's raw [0, seed] words) built on the host: no device dispatch."""
  if not 0 <= seed < 1 << 32:  # rare: let jax convert it
    return np.asarray(jax.random.PRNGKey(seed))
  return np.array([0, seed], np.uint32)


def unscanned(model: nnx.Module) -> nnx.Module:
  """The model in the unscanned layout (one module per layer), its parameters sliced once here. Decoding a scanned
  model would slice (copy) every layer's weights and cache out of the stacked arrays on every step; unscanned,
  each layer reads its own weights and updates its part of the cache in place (models/kv_cache.py LayerKV.layer)."""
  spec = model.spec
  if not spec.scan_layers:
    return model
  from maxtext_like.convert.layout import fill_state, iter_unscanned
  spec_u = spec.replace(scan_layers=False)
  graphdef, _, rest = nnx.split(nnx.eval_shape(lambda: build_model(spec_u, nnx.Rngs(0))), nnx.Param, ...)
  if jax.tree.leaves(rest):  # e.g. dropout RNG streams: keep the model as it is
    return model
  arrays = dict(iter_unscanned(spec, nnx.state(model, nnx.Param), to_host=False))
  return nnx.merge(graphdef, fill_state(spec_u, arrays))


def prefill_buckets(max_prefill: int, minimum: int = MIN_PREFILL_BUCKET) -> tuple[int, ...]:
  """Powers of two from `minimum` below `max_prefill`, then `max_prefill` itself."""
  out, b = [], minimum
  while b < max_prefill:
    out.append(b)
    b *= 2
  return tuple(out) + (max_prefill,)


def bucket_for(n: int, buckets: tuple[int, ...]) -> int:
  for b in buckets:
    if n <= b:
      return b
  raise EngineError(f"a prompt of {n} tokens is longer than the largest prefill bucket ({buckets[-1]})")


class Engine:
  """See the module docstring. `model` is an nnx model with parameters (e.g. `inference.loading.load_model(cfg).model`)."""

  def __init__(self, cfg: Config, model: nnx.Module, *, mesh: jax.sharding.Mesh | None = None, rules=None,
               num_slots: int | None = None):
    inf = cfg.inference
    self.cfg = cfg
    model = unscanned(model)
    self.spec = model.spec
    self.graphdef, state = nnx.split(model)
    self._state = state
    # Parameters travel as a plain dict of arrays: flattening it on every call costs a fraction of an nnx.State's
    # (whose Variables flatten in Python), which matters at a few ms per decode step.
    self._params = nnx.to_pure_dict(state)
    self._abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state)
    self.mesh, self.rules = mesh, (None if mesh is None else [tuple(r) for r in (rules or cfg.mesh.logical_axis_rules)])
    self.max_concurrent_decodes = num_slots or self.slots_for(cfg, 1 if mesh is None else mesh.devices.size)
    self.max_target_length = inf.max_target_length
    self.max_prefill_length = inf.max_prefill_predict_length
    self.use_chunked_prefill = inf.use_chunked_prefill
    self.multi_sampling = inf.multi_sampling  # several samples per request (Batcher, server `n`) only when set
    self.prefill_chunk_size = inf.prefill_chunk_size
    self.buckets = prefill_buckets(self.max_prefill_length)
    self.default_request = SlotRequest(SamplingOptions(inf.decode_sampling_strategy, inf.decode_sampling_temperature,
                                                       inf.decode_sampling_top_k, inf.decode_sampling_nucleus_p))
    # The decode step's few-row matmuls go through the CPU kernel only on one CPU device (a sharded matmul stays a
    # dot_general, which the partitioner splits).
    wanted = inf.cpu_decode_kernels and mesh is None and jax.default_backend() == "cpu"
    self.decode_kernels = wanted and kernels.available()
    if wanted and not self.decode_kernels:
      warnings.warn(f"the CPU decode kernels are unavailable ({kernels.unavailable_reason()}); decoding uses XLA's "
                    "matmuls, with the same tokens (cpu_decode_kernels=false silences this)", stacklevel=2)
    self.paged = None
    if cfg.attention.attention == "paged":
      from maxtext_like.inference.paging import PagedLayout
      self.paged = PagedLayout.from_config(cfg, self.max_target_length, self.max_concurrent_decodes)
    key = (self.graphdef, self.max_target_length, self.paged, self.mesh, repr(self.rules), self.decode_kernels)
    if key not in _COMPILED:  # engines of the same model and layout share compiled steps
      _COMPILED[key] = _Compiled(self)
    self._fns = _COMPILED[key]

  @staticmethod
  def slots_for(cfg: Config, devices: int = 1) -> int:
    """max_concurrent_decodes: per_device_batch_size x devices (at least 1)."""
    return max(1, int(cfg.dataset.per_device_batch_size * devices))

  # ---- parameters and state ------------------------------------------------------------------------------

  @property
  def vocab_size(self) -> int:
    return self.spec.vocab_size

  def load_params(self, rng=None):
    """The model's state (parameters and the rest) as a plain dict of arrays, placed on the mesh by their logical
    axes when there is one."""
    del rng
    if self.mesh is None:
      return self._params
    from maxtext_like.models.sharding import logical_to_mesh_sharding
    shardings = nnx.to_pure_dict(logical_to_mesh_sharding(self._state, self.mesh, self.rules))
    return jax.device_put(self._params, shardings)

  def model(self, params) -> nnx.Module:
    """The nnx model of a `load_params` dict (inside or outside jit)."""
    state = jax.tree.map(lambda a: a, self._abstract)  # a fresh State to fill
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(self.graphdef, state)

  def _cache_dims(self) -> tuple[int, int, int, int]:
    """(K, Hk, Hv, J scales per head_dim) of one cache entry, as `Transformer.init_cache` lays it out."""
    model = nnx.merge(self.graphdef, self._state)
    c = jax.eval_shape(lambda: model.init_cache(1, 1))
    groups = 1 if c.k_scale_LBSKJ is None else c.k_scale_LBSKJ.shape[4]
    return c.k_LBSKH.shape[3], c.k_LBSKH.shape[4], c.v_LBSKH.shape[4], groups

  def init_decode_state(self, rng=None) -> DecodeState:
    del rng
    B, S = self.max_concurrent_decodes, self.max_target_length
    L = self.spec.num_decoder_layers
    K, Hk, Hv, J = self._cache_dims()
    dtype, quant = self.spec.dtype, self.spec.kv_quant
    if self.paged is None:
      cache = KVCache.zeros(L, B, S, K, Hk, dtype, v_head_dim=Hv, quant=quant, groups=J)
    else:
      cache = self.paged.empty_cache(L, K, Hk, Hv, dtype, quant=quant, groups=J)
    cache = cache.split()  # one read-only buffer per layer, committed after each step (models/kv_cache.py)
    state = DecodeState(
        cache=cache,
        tokens_B=jnp.zeros((B,), jnp.int32), live_B=jnp.zeros((B,), bool), generated_B=jnp.zeros((B,), jnp.int32),
        max_tokens_B=jnp.zeros((B,), jnp.int32), stop_BS=jnp.full((B, MAX_STOP_IDS), -1, jnp.int32),
        temperature_B=jnp.zeros((B,), jnp.float32), top_k_B=jnp.zeros((B,), jnp.int32),
        top_p_B=jnp.ones((B,), jnp.float32), key_B=jnp.zeros((B, 2), jnp.uint32))
    return self._place_state(state)

  def state_shardings(self, state: DecodeState):
    if self.mesh is None:
      return None
    named = lambda axes: jax.sharding.NamedSharding(self.mesh, logical_to_pspec(axes, self.mesh, self.rules))  # noqa: E731
    ways = (1 << 20) // named(CACHE_B_AXES).shard_shape((1 << 20,))[0]  # devices the slot axis is split over
    if self.max_concurrent_decodes % ways:
      raise EngineError(f"{self.max_concurrent_decodes} decode slots cannot be split over the {ways} devices the "
                        f"cache_batch rule shards them on; use a multiple of {ways} (per_device_batch_size x devices)")
    c = state.cache
    kv, scale = (CACHE_KV_AXES, CACHE_SCALE_AXES) if self.paged is None else ((None,) * 5, (None,) * 5)
    kv, scale = kv[1:], scale[1:]  # per layer (the decode state's cache is split by layer)
    one = c.layer0()
    if one.k_scale_LBSKJ is not None and one.k_scale_LBSKJ.shape[3] == 1:  # heads_and_dkv: one scale for all heads
      scale = scale[:2] + (None, None)
    L = len(c.k_LBSKH)
    kv_arrays = (named(kv), named(kv)) + (() if one.k_scale_LBSKJ is None else (named(scale), named(scale)))
    cache = dataclasses.replace(
        c.with_arrays(tuple((s,) * L for s in kv_arrays)),
        segment_ids_BS=named(CACHE_BS_AXES), index_B=named(CACHE_B_AXES),
        **({} if c.page_table_BM is None else {"page_table_BM": named(CACHE_BS_AXES)}))
    b = named(CACHE_B_AXES)
    return DecodeState(cache=cache, tokens_B=b, live_B=b, generated_B=b, max_tokens_B=b, stop_BS=named(CACHE_BS_AXES),
                       temperature_B=b, top_k_B=b, top_p_B=b, key_B=named(CACHE_BS_AXES))

  def _place_state(self, state: DecodeState) -> DecodeState:
    sh = self.state_shardings(state)
    return state if sh is None else jax.device_put(state, sh)

  # ---- prefill ---------------------------------------------------------------------------------------------

  def check_prompt(self, n: int) -> None:
    limit = self.max_target_length - 1 if self.use_chunked_prefill else self.max_prefill_length
    if n < 1:
      raise EngineError("an empty prompt cannot be prefilled (give at least one token, e.g. BOS)")
    if n > limit:
      how = ("" if self.use_chunked_prefill else
             f" (max_prefill_predict_length={self.max_prefill_length}; use_chunked_prefill=true accepts prompts up to "
             f"max_target_length - 1 = {self.max_target_length - 1})")
      raise EngineError(f"a prompt of {n} tokens is longer than this engine accepts: at most {limit}{how}")

  def pad(self, ids, length: int | None = None) -> tuple[np.ndarray, int]:
    """(ids right-padded to their bucket, or to `length`; true length)."""
    n = len(ids)
    length = length or bucket_for(n, self.buckets)
    out = np.zeros((length,), np.int32)
    out[:n] = ids
    return out, n

  def prefill(self, *, params, padded_tokens, true_length: int, rng=None, existing_prefix: Prefix | None = None,
              request: SlotRequest | None = None, num_samples: int = 1) -> tuple[Prefix, ResultTokens]:
    """Runs `padded_tokens[:true_length]` after `existing_prefix` (if any) into a batch-1 cache.

    Returns the prefix and the first token(s) (`num_samples` independent draws, for `bulk_insert`)."""
    request = request or self.default_request
    padded = jnp.asarray(padded_tokens, jnp.int32)
    rng = host_key(0) if rng is None else rng
    t, k, p = row_params(request.sampling)
    prefix = self._fns.prefill(params, padded, jnp.int32(true_length), rng, existing_prefix,
                               jnp.float32(t), jnp.int32(k), jnp.float32(p), num_samples, t == 0)
    n = num_samples
    first = ResultTokens(prefix.tokens, prefix.log_probs, jnp.ones((n,), bool), jnp.zeros((n,), bool))
    return prefix, first

  def prefill_ids(self, params, ids, rng=None, *, request: SlotRequest | None = None, num_samples: int = 1,
                  existing_prefix: Prefix | None = None) -> Prefix:
    """Prefill of a token list: bucket padding, and chunks of `prefill_chunk_size` when chunked prefill is on
    and the prompt is longer than one chunk. `existing_prefix` holds tokens already cached (prefix caching)."""
    start = 0 if existing_prefix is None else int(existing_prefix.true_length)
    self.check_prompt(start + len(ids))
    if not self.use_chunked_prefill or len(ids) <= self.prefill_chunk_size:
      if len(ids) > self.max_prefill_length:
        raise EngineError(f"{len(ids)} tokens to prefill after a cached prefix of {start}: more than "
                          f"max_prefill_predict_length={self.max_prefill_length}; use_chunked_prefill=true splits them")
      padded, n = self.pad(ids)
      return self.prefill(params=params, padded_tokens=padded, true_length=n, rng=rng, request=request,
                          num_samples=num_samples, existing_prefix=existing_prefix)[0]
    c = self.prefill_chunk_size
    prefix = existing_prefix
    for s in range(0, len(ids), c):
      chunk = ids[s:s + c]
      padded, n = self.pad(chunk, c)
      prefix = self.prefill(params=params, padded_tokens=padded, true_length=n, rng=rng, request=request,
                            num_samples=num_samples, existing_prefix=prefix)[0]
    return prefix

  def truncate(self, prefix: Prefix, length: int) -> Prefix:
    """The prefix's first `length` tokens (prefix caching reuses a stored prompt's common part)."""
    return self._fns.truncate(prefix, jnp.int32(length))

  # ---- slots -----------------------------------------------------------------------------------------------

  def _check_slot(self, slot: int) -> None:
    if not 0 <= int(slot) < self.max_concurrent_decodes:
      raise EngineError(f"slot {slot} is out of range: this engine has slots 0..{self.max_concurrent_decodes - 1} "
                        f"(max_concurrent_decodes = per_device_batch_size x devices)")

  def insert(self, prefix: Prefix, decode_state: DecodeState, slot: int, *, request: SlotRequest | None = None,
             sample: int = 0, pages=None) -> DecodeState:
    """Puts a prefilled prompt into `slot` (whatever it held), with the request's budget, stops and sampling."""
    self._check_slot(slot)
    decode_state = self.flush(decode_state)
    request = request or self.default_request
    t, k, p = row_params(request.sampling)
    stops = np.full((MAX_STOP_IDS,), -1, np.int32)
    ids = tuple(request.stop_ids)[:MAX_STOP_IDS]
    stops[:len(ids)] = ids
    row = (jnp.float32(t), jnp.int32(k), jnp.float32(p), jnp.int32(min(request.max_tokens, 1 << 30)),
           jnp.asarray(stops))
    if self.paged is not None:
      if pages is None:
        raise EngineError("a paged engine inserts with the slot's pages (see inference.paging.PageAllocator)")
      return self._fns.insert_paged(prefix, decode_state, jnp.int32(slot), jnp.int32(sample), row,
                                    jnp.asarray(pages, jnp.int32))
    return self._fns.insert(prefix, decode_state, jnp.int32(slot), jnp.int32(sample), row)

  def bulk_insert(self, prefix: Prefix, decode_state: DecodeState, slots, *, request: SlotRequest | None = None,
                  pages=None) -> DecodeState:
    """Sample j of a multi-sample prefix into slots[j] (one prompt, several continuations)."""
    for j, slot in enumerate(slots):
      decode_state = self.insert(prefix, decode_state, slot, request=request, sample=j,
                                 pages=None if pages is None else pages[j])
    return decode_state

  def free(self, decode_state: DecodeState, slot: int) -> DecodeState:
    """Marks `slot` dead (e.g. its client went away); its row is overwritten by the next insert."""
    self._check_slot(slot)
    return self._fns.free(self.flush(decode_state), jnp.int32(slot))

  def set_page_tables(self, decode_state: DecodeState, table_BM) -> DecodeState:
    """Paged engine: every slot's page table from the host allocator (`PageAllocator.table()`)."""
    return self._fns.set_pages(self.flush(decode_state), jnp.asarray(table_BM, jnp.int32))

  def flush(self, decode_state: DecodeState) -> DecodeState:
    """The state with the last generate step's new entries written into its cache. `generate` leaves them pending
    and writes them at the start of the next step; insert, free and set_page_tables flush first. Call it before
    reading the cache's arrays yourself."""
    if decode_state.pending is None:
      return decode_state
    c = decode_state.cache
    buffers = self._fns.commit(c.arrays(), *decode_state.pending, c.page_table_BM)
    return dataclasses.replace(decode_state, cache=c.with_arrays(buffers), pending=None)

  # ---- generate --------------------------------------------------------------------------------------------

  def generate(self, params, decode_state: DecodeState, rng=None, *,
               greedy_only: bool = False) -> tuple[DecodeState, ResultTokens]:
    """Every live slot advances by one token. `greedy_only` (all live slots greedy) skips the sampler. Slots
    sample with their own keys (from their prefill's `rng`); `rng` is taken for MaxEngine's signature and not used
    (building a key every step would cost a dispatch of its own).

    One program per step: it first writes the previous step's new entries (`DecodeState.pending`) into the cache
    buffers in place, then attends over the buffers without writing them, and returns this step's new entries as
    the next state's `pending` (models/kv_cache.py: a program that reads a buffer and then updates it copies it
    whole on XLA:CPU; writing first and reading after does not)."""
    del rng
    c = decode_state.cache
    small = dataclasses.replace(decode_state, cache=c.without_arrays(), pending=None)
    small, buffers, pending, out = self._fns.generate(params, c.arrays(), small, decode_state.pending, greedy_only)
    return dataclasses.replace(small, cache=small.cache.with_arrays(buffers), pending=pending), out

  def generate_n(self, params, decode_state: DecodeState, rng, n: int, *,
                 greedy_only: bool = False) -> tuple[DecodeState, ResultTokens]:
    """n generate steps dispatched back to back; the result's fields are numpy arrays [n, B], fetched once at the
    end (the host waits only then). Any n: no compiled variant per n."""
    del rng  # as in `generate`
    outs = []
    for _ in range(n):
      decode_state, out = self.generate(params, decode_state, greedy_only=greedy_only)
      outs.append(out)
    return decode_state, jax.tree.map(lambda *steps: np.stack(steps), *jax.device_get(outs))


def _stop_hit(tok_B, stop_BS):
  return jnp.any(tok_B[:, None] == stop_BS, axis=1)


_COMPILED: dict = {}


class _Compiled:
  """The engine's jitted functions (built once per engine)."""

  def __init__(self, engine: Engine):
    self.e = engine
    wrap = (lambda f: f) if engine.mesh is None else (lambda f: under_activation_sharding(f, engine.mesh, engine.rules))
    self.prefill = jax.jit(wrap(self._prefill), static_argnums=(8, 9))
    self.insert = jax.jit(self._insert, donate_argnums=(1,))
    self.insert_paged = jax.jit(self._insert_paged, donate_argnums=(1,))
    self.free = jax.jit(self._free, donate_argnums=(0,))
    self.truncate = jax.jit(self._truncate)
    self.set_pages = jax.jit(lambda ds, t: dataclasses.replace(ds, cache=dataclasses.replace(ds.cache, page_table_BM=t)),
                             donate_argnums=(0,))
    self.generate = jax.jit(wrap(self._generate), static_argnums=(4,), donate_argnums=(1, 2))
    self.commit = jax.jit(kv_cache_lib.commit, donate_argnums=(0,))

  def _model(self, params):
    return self.e.model(params)

  def _prefill(self, params, tokens_P, true_length, rng, existing, temperature, top_k, top_p, n, greedy_only):
    model = self._model(params)
    P = tokens_P.shape[0]
    if existing is None:
      cache = model.init_cache(1, P)
      start = jnp.int32(0)
    else:  # room for this chunk after the existing cache's slots
      c = existing.cache
      pad = lambda a: jnp.pad(a, [(0, 0)] * 2 + [(0, P)] + [(0, 0)] * (a.ndim - 3))  # noqa: E731
      cache = dataclasses.replace(c.with_arrays(tuple(pad(a) for a in c.arrays())),
                                  segment_ids_BS=jnp.pad(c.segment_ids_BS, [(0, 0), (0, P)]))
      start = existing.true_length
    seg_1P = (jnp.arange(P) < true_length).astype(jnp.int32)[None]
    logits_11V, cache = model(tokens_P[None], None, seg_1P, cache=cache, logits_at=(true_length - 1)[None])
    last_V = logits_11V[0, 0].astype(jnp.float32)
    rows = lambda x: jnp.broadcast_to(x, (n,))  # noqa: E731
    first_key, rest_key = jax.random.split(rng)
    toks = sample_rows(jnp.broadcast_to(last_V, (n, last_V.shape[0])), first_key, rows(temperature), rows(top_k),
                       rows(top_p), greedy_only=greedy_only)
    logp = token_log_probs(jnp.broadcast_to(last_V, (n, last_V.shape[0])), toks)
    return Prefix(cache=cache, tokens=toks, log_probs=logp, logits=last_V, true_length=start + true_length,
                  key=rest_key)

  def _slot_fields(self, ds: DecodeState, slot, first, true_length, row, key):
    temperature, top_k, top_p, max_tokens, stops = row
    done = _stop_hit(first[None], stops[None])[0] | (max_tokens <= 1) | (true_length >= self.e.max_target_length)
    set_ = lambda a, v: a.at[slot].set(v)  # noqa: E731
    return dataclasses.replace(
        ds, tokens_B=set_(ds.tokens_B, first), live_B=set_(ds.live_B, ~done), generated_B=set_(ds.generated_B, 1),
        max_tokens_B=set_(ds.max_tokens_B, max_tokens), stop_BS=set_(ds.stop_BS, stops),
        temperature_B=set_(ds.temperature_B, temperature), top_k_B=set_(ds.top_k_B, top_k),
        top_p_B=set_(ds.top_p_B, top_p), key_B=set_(ds.key_B, key))

  def _insert(self, prefix: Prefix, ds: DecodeState, slot, sample, row):
    c, pc = ds.cache, prefix.cache
    S, C = c.max_length, min(pc.max_length, c.max_length)

    def put(layers, p):  # each layer's buffer gets the prefix's row
      return tuple(jax.lax.dynamic_update_slice(a, p[i, :, :C].astype(a.dtype), (slot, 0, 0, 0))
                   for i, a in enumerate(layers))
    seg_S = jnp.zeros((S,), jnp.int32).at[:C].set(pc.segment_ids_BS[0, :C])
    cache = dataclasses.replace(c.with_arrays(tuple(map(put, c.arrays(), pc.arrays()))),
                                segment_ids_BS=c.segment_ids_BS.at[slot].set(seg_S),
                                index_B=c.index_B.at[slot].set(prefix.true_length))
    ds = dataclasses.replace(ds, cache=cache)
    return self._slot_fields(ds, slot, prefix.tokens[sample], prefix.true_length, row,
                             jax.random.fold_in(prefix.key, sample))

  def _insert_paged(self, prefix: Prefix, ds: DecodeState, slot, sample, row, pages_M):
    cache = self.e.paged.insert(ds.cache, prefix.cache, slot, pages_M, prefix.true_length)
    ds = dataclasses.replace(ds, cache=cache)
    return self._slot_fields(ds, slot, prefix.tokens[sample], prefix.true_length, row,
                             jax.random.fold_in(prefix.key, sample))

  def _truncate(self, prefix: Prefix, m):
    c = prefix.cache
    seg = jnp.where(jnp.arange(c.max_length)[None] < m, c.segment_ids_BS, 0)
    return dataclasses.replace(prefix, cache=dataclasses.replace(c, segment_ids_BS=seg, index_B=jnp.full_like(c.index_B, m)),
                               true_length=m)

  def _free(self, ds: DecodeState, slot):
    cache = ds.cache
    if cache.page_table_BM is not None:  # a dead slot's writes must land on the scratch page, not on freed pages
      cache = dataclasses.replace(cache, page_table_BM=cache.page_table_BM.at[slot].set(0))
    return dataclasses.replace(ds, cache=cache, live_B=ds.live_B.at[slot].set(False))

  def _generate(self, params, buffers, ds: DecodeState, pending, greedy_only):
    """Writes `pending` (the previous step's (new entries, slot indices)) into `buffers`, then one step that reads
    them only: (the state without buffers, the buffers, this step's (new entries, slot indices), its tokens)."""
    if pending is not None:
      buffers = kv_cache_lib.commit(buffers, *pending, ds.cache.page_table_BM)
    model = self._model(params)
    S = self.e.max_target_length
    live = ds.live_B
    if greedy_only:  # no live slot samples: keys stay as they are
      key, next_keys = None, ds.key_B
    else:
      keys_B2 = jax.vmap(jax.random.split)(ds.key_B)  # [B, 2, 2]: (next key, this step's key) per slot
      key, next_keys = keys_B2[:, 1], keys_B2[:, 0]
    index_B = ds.cache.index_B
    with kernels.decode_matmuls(self.e.decode_kernels):
      logits_B1V, cache = model(ds.tokens_B[:, None], None, live[:, None].astype(jnp.int32),
                                cache=ds.cache.with_arrays(buffers))
      logits_BV = logits_B1V[:, -1].astype(jnp.float32)
      # argmax and log-sum-exp in one vectorized pass (XLA:CPU sums a row's 32k exponentials one at a time)
      greedy_B, lse_B = kernels.logits_stats(logits_BV) if kernels.decode_matmuls_enabled() else (None, None)
    nxt = sample_rows(logits_BV, key, ds.temperature_B, ds.top_k_B, ds.top_p_B, greedy_only=greedy_only,
                      greedy_B=greedy_B)
    logp = token_log_probs(logits_BV, nxt, lse_B)
    generated = ds.generated_B + live.astype(jnp.int32)
    done = live & (_stop_hit(nxt, ds.stop_BS) | (generated >= ds.max_tokens_B) | (cache.index_B >= S))
    new = kv_cache_lib.pending_entries(cache.arrays())
    ds = dataclasses.replace(ds, cache=cache.without_arrays(), tokens_B=jnp.where(live, nxt, ds.tokens_B),
                             live_B=live & ~done, generated_B=generated, key_B=next_keys)
    return ds, buffers, (new, index_B), ResultTokens(nxt, logp, live, done)
