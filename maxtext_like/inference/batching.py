"""Continuous batching on the engine: requests wait in a queue, and as soon as a slot is free the next request is
prefilled and inserted there, while the other slots keep decoding. A request leaves its slot on a stop token (EOS
or its own `stop_ids`), on its `max_tokens`, or when the slot's cache row is full.

`Batcher.step()` does one round (admit what fits, then a few generate steps) and reports tokens through each
request's callbacks: the offline driver (`Batcher.run`) loops it until every request is done; the HTTP server calls
it from its engine thread. Several samples of one prompt (`n`) share one prefill (`Engine.bulk_insert`). With a
paged engine a request is admitted only when its pages fit, and a slot that runs out of pages mid-way is finished
with an error while the others continue.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable

import jax
import numpy as np

from maxtext_like.inference.engine import Engine, EngineError, SlotRequest, host_key
from maxtext_like.inference.paging import PageAllocator, PagesExhausted
from maxtext_like.inference.prefix_cache import PrefixCache
from maxtext_like.inference.sampling import SamplingOptions

MAX_STEPS_PER_CALL = 16  # generate steps between two looks at the queue when nothing waits


@dataclasses.dataclass
class Request:
  ids: list[int]
  max_tokens: int | None = None  # None: until the cache row is full (max_target_length)
  sampling: SamplingOptions | None = None  # None: the config's decode_sampling_*
  stop_ids: tuple[int, ...] = ()
  n: int = 1  # samples of this prompt, each in its own slot
  seed: int | None = None
  # callbacks: on_token(sample, token, log_prob); on_done(sample, finish_reason, error)
  on_token: Callable | None = None
  on_done: Callable | None = None


@dataclasses.dataclass
class Sequence:
  """One sample of one request, as it decodes."""

  request: Request
  index: int  # request number
  sample: int
  stop_ids: frozenset[int] = frozenset()  # the request's stop ids and EOS: they end it and are not emitted
  tokens: list[int] = dataclasses.field(default_factory=list)
  log_probs: list[float] = dataclasses.field(default_factory=list)
  finish_reason: str | None = None  # stop | length | error | cancelled
  error: str | None = None
  submitted: float = 0.0
  first_token_at: float | None = None
  done_at: float | None = None

  @property
  def ttft_s(self) -> float | None:
    return None if self.first_token_at is None else self.first_token_at - self.submitted

  @property
  def per_token_s(self) -> float | None:
    if self.done_at is None or self.first_token_at is None or len(self.tokens) < 2:
      return None
    return (self.done_at - self.first_token_at) / (len(self.tokens) - 1)


class Batcher:
  def __init__(self, engine: Engine, params, *, eos_id: int | None = None, prefix_cache: PrefixCache | None = None,
               seed: int = 0, steps_per_call: int = 4):
    self.engine, self.params, self.eos_id = engine, params, eos_id
    self.prefix_cache = prefix_cache
    self.state = engine.init_decode_state()
    self.slots: list[Sequence | None] = [None] * engine.max_concurrent_decodes
    self.lengths = [0] * engine.max_concurrent_decodes  # host copy of each slot's cache length
    self.queue: collections.deque[tuple[int, Request, float]] = collections.deque()
    self.pages = None if engine.paged is None else PageAllocator(engine.paged)
    self.keys = np.random.default_rng(seed)  # prefill keys of unseeded requests, drawn on the host
    self.steps_per_call = steps_per_call
    self._next_id = 0
    self.sequences: dict[int, list[Sequence]] = {}

  @classmethod
  def for_config(cls, engine: Engine, cfg, eos_id: int | None) -> "Batcher":
    """The batcher decode and the server use: the engine's parameters, the config's prefix cache
    (`enable_prefix_caching`) and seed (`data_shuffle_seed`); `eos_id` < 0 means the tokenizer has none."""
    inf = cfg.inference
    cache = PrefixCache(inf.prefix_caching_hbm_byte, inf.prefix_caching_dram_byte) if inf.enable_prefix_caching else None
    return cls(engine, engine.load_params(), eos_id=eos_id if eos_id is not None and eos_id >= 0 else None,
               prefix_cache=cache, seed=cfg.training.data_shuffle_seed)

  # ---- requests ----

  def submit(self, request: Request) -> int:
    """Queues a request; returns its id. Bad requests (too long, n > slots) raise EngineError at once."""
    e = self.engine
    e.check_prompt(len(request.ids))
    if request.n > 1 and not e.multi_sampling:
      raise EngineError(f"n={request.n}: several samples per prompt need multi_sampling=true")
    if request.n > e.max_concurrent_decodes:
      raise EngineError(f"n={request.n} samples need that many slots; this engine has {e.max_concurrent_decodes}")
    if self.pages is not None and not self._fits_ever(request):
      raise EngineError(f"a prompt of {len(request.ids)} tokens needs more pages than the paged cache holds "
                        f"(pagedattn_num_pages={e.paged.num_pages}, {e.paged.page} tokens each, page 0 is scratch)")
    rid = self._next_id
    self._next_id += 1
    self.queue.append((rid, request, time.perf_counter()))
    return rid

  def cancel(self, rid: int) -> None:
    """Stops a request (client gone): frees its slots at once; queued, it is dropped."""
    self.queue = collections.deque(q for q in self.queue if q[0] != rid)
    for b, seq in enumerate(self.slots):
      if seq is not None and seq.index == rid:
        self._finish(b, "cancelled")

  def _fits_ever(self, r: Request) -> bool:
    return self.engine.paged.pages_for(len(r.ids) + 1) * r.n <= self.engine.paged.num_pages - 1

  @property
  def busy(self) -> bool:
    return bool(self.queue) or any(s is not None for s in self.slots)

  # ---- one round ----

  def step(self) -> None:
    self._admit()
    live = [b for b, s in enumerate(self.slots) if s is not None]
    if not live:
      return
    n = self._steps(live)
    if self.pages is not None:
      n = self._grow_pages(live, n)
      live = [b for b, s in enumerate(self.slots) if s is not None]
      if not live:
        return
    greedy = all(self._greedy(self.slots[b].request) for b in live)
    self.state, out = self.engine.generate_n(self.params, self.state, None, n, greedy_only=greedy)
    toks, logps, valid, done = out.tokens_B, out.log_probs_B, out.valid_B, out.done_B  # numpy [n, B]
    now = time.perf_counter()
    for b in live:
      for i in range(n):
        if not valid[i, b] or self.slots[b] is None:
          break
        self.lengths[b] += 1
        self._emit(b, int(toks[i, b]), float(logps[i, b]), bool(done[i, b]), now)

  def run(self, requests: list[Request], *, order: str = "longest_first",
          on_step: Callable[[], None] | None = None) -> list[list[Sequence]]:
    """Offline: every request to completion; per request its samples, in the order given.

    `order` is the admission order: "longest_first" (default) admits the requests with the largest token budget
    first (ties in the order given), so the longest ones do not start last and run alone at the end; "given"
    admits them as listed. `on_step` is called after every round (e.g. to sample occupancy)."""
    if order not in ("longest_first", "given"):
      raise ValueError(f"order={order!r}: 'longest_first' or 'given'")
    admit = list(range(len(requests)))
    if order == "longest_first":
      admit.sort(key=lambda i: -self._budget(requests[i]) * requests[i].n)
    ids = [0] * len(requests)
    for i in admit:
      ids[i] = self.submit(requests[i])
    while self.busy:
      self.step()
      if on_step is not None:
        on_step()
    return [self.sequences[i] for i in ids]

  # ---- internals ----

  def _greedy(self, r: Request) -> bool:
    s = r.sampling or self.engine.default_request.sampling
    return s.strategy == "greedy"

  def _steps(self, live: list[int]) -> int:
    """Generate steps this call: while requests wait, exactly up to the nearest known end (token budget or cache
    row), at most `steps_per_call`; otherwise up to the furthest, at most MAX_STEPS_PER_CALL."""
    e = self.engine
    left = []
    for b in live:
      seq = self.slots[b]
      budget = self._budget(seq.request) - len(seq.tokens)
      left.append(max(1, min(budget, e.max_target_length - self.lengths[b])))
    if self.queue:
      return max(1, min(min(left), self.steps_per_call))
    return max(1, min(max(left), MAX_STEPS_PER_CALL))

  def _budget(self, r: Request) -> int:
    return r.max_tokens if r.max_tokens is not None else self.engine.max_target_length

  def _request_row(self, r: Request) -> SlotRequest:
    stops = tuple(r.stop_ids) + (() if self.eos_id is None else (self.eos_id,))
    return SlotRequest(r.sampling or self.engine.default_request.sampling, self._budget(r), stops)

  def _admit(self) -> None:
    e = self.engine
    while self.queue:
      rid, r, submitted = self.queue[0]
      free = [b for b, s in enumerate(self.slots) if s is None]
      if len(free) < r.n:
        return
      slots = free[:r.n]
      if self.pages is not None:
        need = e.paged.pages_for(len(r.ids) + 1)
        if need * r.n > self.pages.num_free:
          return  # wait for pages; admission stays in order
      self.queue.popleft()
      self._start(rid, r, submitted, slots)

  def _start(self, rid: int, r: Request, submitted: float, slots: list[int]) -> None:
    e = self.engine
    row = self._request_row(r)
    seqs = [Sequence(r, rid, j, frozenset(row.stop_ids), submitted=submitted) for j in range(r.n)]
    self.sequences[rid] = seqs
    try:
      existing = None
      ids = list(r.ids)
      if self.prefix_cache is not None:
        hit = self.prefix_cache.lookup(ids)
        if hit is not None:
          existing = e.truncate(hit[0], hit[1])
          ids = ids[hit[1]:]
      key = host_key(r.seed) if r.seed is not None else self.keys.integers(0, 1 << 32, size=2, dtype=np.uint32)
      prefix = e.prefill_ids(self.params, ids, key, request=row, num_samples=r.n, existing_prefix=existing)
      if self.prefix_cache is not None:
        self.prefix_cache.put(r.ids, prefix)
      pages = None
      if self.pages is not None:
        for b in slots:
          self.pages.ensure(b, len(r.ids) + 1)
        pages = [self.pages.table_row(b) for b in slots]
      self.state = e.bulk_insert(prefix, self.state, slots, request=row, pages=pages)
    except (EngineError, PagesExhausted) as err:
      for seq in seqs:
        self._close(seq, "error", str(err))
      for b in slots:
        if self.pages is not None:
          self.pages.release(b)
      return
    first, logp = jax.device_get((prefix.tokens, prefix.log_probs))
    now = time.perf_counter()
    for j, b in enumerate(slots):
      self.slots[b] = seqs[j]
      self.lengths[b] = len(r.ids)
      self._emit(b, int(first[j]), float(logp[j]), row.max_tokens <= 1 or len(r.ids) >= e.max_target_length, now)

  def _emit(self, b: int, token: int, logp: float, done: bool, now: float) -> None:
    """Records slot b's token; a stop token ends the sequence (as it ended the slot on the device) unemitted."""
    seq = self.slots[b]
    if seq.first_token_at is None:
      seq.first_token_at = now
    stop = token in seq.stop_ids
    if not stop:
      seq.tokens.append(token)
      seq.log_probs.append(logp)
      if seq.request.on_token is not None:
        seq.request.on_token(seq.sample, token, logp)
    if done or stop:
      self._finish(b, "stop" if stop else "length", now=now)

  def _finish(self, b: int, reason: str, error: str | None = None, now: float | None = None) -> None:
    seq = self.slots[b]
    self.slots[b] = None
    if reason in ("cancelled", "error"):  # the device still thinks it is live
      self.state = self.engine.free(self.state, b)
    if self.pages is not None:
      self.pages.release(b)
      self.state = self.engine.set_page_tables(self.state, self.pages.table())
    self._close(seq, reason, error, now)

  def _close(self, seq: Sequence, reason: str, error: str | None = None, now: float | None = None) -> None:
    seq.finish_reason, seq.error = reason, error
    seq.done_at = now or time.perf_counter()
    if seq.first_token_at is None:
      seq.first_token_at = seq.done_at
    if seq.request.on_done is not None:
      seq.request.on_done(seq.sample, reason, error)

  def _target(self, b: int, n: int) -> int:
    """Tokens slot b can hold after n more steps: never more than its request can reach."""
    seq = self.slots[b]
    most = len(seq.request.ids) + self._budget(seq.request)
    return min(self.lengths[b] + n, most, self.engine.max_target_length)

  def _grow_pages(self, live: list[int], n: int) -> int:
    """Pages for the next n steps of every live slot; fewer steps when the pool is short, and at one step a slot
    that still cannot get a page finishes with an error (the others go on). Returns the steps to run."""
    need = lambda n: sum(max(0, self.pages.layout.pages_for(self._target(b, n)) - len(self.pages.owned.get(b, [])))  # noqa: E731
                         for b in live)
    while n > 1 and need(n) > self.pages.num_free:
      n //= 2
    changed = False
    for b in live:
      try:
        changed |= self.pages.ensure(b, self._target(b, n))
      except PagesExhausted as err:
        self._finish(b, "error", f"the paged KV cache is full: {err}")
        changed = True
    if changed:
      self.state = self.engine.set_page_tables(self.state, self.pages.table())
    return n
