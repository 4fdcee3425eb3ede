"""The serving engine: slots, continuous batching, chunked prefill, prefix caching, the paged cache, sampling per
request, bad input, and decode through the engine equal to the full forward for every kind of attention."""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from maxtext_like.config import load_config
from maxtext_like.inference.batching import Batcher, Request
from maxtext_like.inference.engine import Engine, EngineError, SlotRequest
from maxtext_like.inference.loading import load_model
from maxtext_like.inference.prefix_cache import PrefixCache
from maxtext_like.inference.sampling import SamplingOptions
from maxtext_like.inference.static_batch import generate_ids

TINY = ["override_model_config=true", "base_emb_dim=64", "base_num_query_heads=4", "base_num_kv_heads=2", "head_dim=16",
        "base_mlp_dim=128", "base_num_decoder_layers=2", "vocab_size=256", "max_target_length=48", "dtype=float32",
        "max_prefill_predict_length=16", "per_device_batch_size=3", "run_name=engine"]
GREEDY = SamplingOptions()


@pytest.fixture(scope="module")
def make_cfg(tmp_path_factory):
  out = tmp_path_factory.mktemp("engine")

  def make(*argv):
    return load_config(["base.yml", *TINY, f"base_output_directory={out}", *argv], env={})
  return make


@pytest.fixture(scope="module")
def model(make_cfg):
  return load_model(make_cfg()).model


@pytest.fixture(scope="module")
def engine(make_cfg, model):
  """The default engine (3 slots, contiguous cache), shared so its compiled steps are reused."""
  return Engine(make_cfg(), model)


def prompts(lengths, seed=0):
  rs = np.random.RandomState(seed)
  return [[int(t) for t in rs.randint(1, 256, size=n)] for n in lengths]


REF_TOKENS = 24
_REFS: dict = {}


def alone(model, p, n):
  """Greedy continuation (n <= REF_TOKENS tokens) of one prompt decoded by itself: the static-batch path (itself
  tested against Hugging Face), one row per call, cached."""
  key = (id(model), tuple(p))
  if key not in _REFS:
    _REFS[key] = generate_ids(model, [p], max_prefill=16, max_target=16 + REF_TOKENS, eos_id=None, options=GREEDY)[0]
  return _REFS[key][:n]


def test_continuous_batching_equals_each_prompt_alone(engine, model):
  """Seven prompts of different lengths and budgets through 3 slots: later ones are inserted as earlier ones
  finish, at different times, into a full batch."""
  ps = prompts((3, 9, 16, 5, 12, 1, 7))
  budgets = [8, 3, 10, 1, 6, 9, 4]
  out = Batcher(engine, engine.load_params()).run([Request(p, max_tokens=n) for p, n in zip(ps, budgets)])
  for p, n, seqs in zip(ps, budgets, out):
    assert seqs[0].tokens == alone(model, p, n)
    assert seqs[0].finish_reason == "length"


def test_insert_into_a_busy_slot_leaves_the_others_unchanged(engine, model):
  params, state = engine.load_params(), engine.init_decode_state()
  a, b, c = prompts((5, 11, 8), seed=3)
  for slot, p in ((0, a), (1, b)):
    state = engine.insert(engine.prefill_ids(params, p), state, slot)
  got = {0: [], 1: []}
  for step in range(10):
    if step == 4:  # replace slot 1 mid-sequence; slot 0 must not notice
      state = engine.insert(engine.prefill_ids(params, c), state, 1)
      got[1] = []
    state, r = engine.generate(params, state, greedy_only=True)
    for s in (0, 1):
      got[s].append(int(r.tokens_B[s]))
  assert got[0] == alone(model, a, 11)[1:]
  assert got[1] == alone(model, c, 7)[1:]


def _prefix_equal(p, q, n):
  np.testing.assert_allclose(np.asarray(p.logits), np.asarray(q.logits), atol=1e-5, rtol=1e-5)
  for x, y in ((p.cache.k_LBSKH, q.cache.k_LBSKH), (p.cache.v_LBSKH, q.cache.v_LBSKH)):
    np.testing.assert_allclose(np.asarray(x)[:, :, :n], np.asarray(y)[:, :, :n], atol=1e-5, rtol=1e-5)
  assert int(p.true_length) == int(q.true_length) == n
  assert int(p.tokens[0]) == int(q.tokens[0])


def test_chunked_and_prefix_cached_prefill_equal_one_shot(make_cfg, model, engine):
  one = engine
  chunked = Engine(make_cfg("use_chunked_prefill=true", "prefill_chunk_size=4"), model)
  params = one.load_params()
  (p,) = prompts((15,), seed=5)
  ref = one.prefill_ids(params, p)
  _prefix_equal(chunked.prefill_ids(params, p), ref, 15)
  # prefix caching: a stored prompt sharing the first 9 tokens, then only the rest is prefilled
  store = PrefixCache(1 << 30, 1 << 30)
  other = p[:9] + prompts((4,), seed=6)[0]
  store.put(other, one.prefill_ids(params, other))
  hit, m = store.lookup(p)
  assert m == 9
  _prefix_equal(one.prefill_ids(params, p[m:], existing_prefix=one.truncate(hit, m)), ref, 15)


def test_chunked_prefill_accepts_prompts_past_the_prefill_limit(make_cfg, model):
  engine = Engine(make_cfg("use_chunked_prefill=true", "prefill_chunk_size=8"), model)
  (p,) = prompts((30,), seed=7)
  (seqs,) = Batcher(engine, engine.load_params()).run([Request(p, max_tokens=5)])
  full = np.asarray(model(jnp.asarray([p + seqs[0].tokens[:-1]])))[0]
  assert seqs[0].tokens == [int(t) for t in np.argmax(full[len(p) - 1:], -1)]


def test_prefix_cache_prefills_a_shared_system_prompt_once(engine, model):
  system = prompts((10,), seed=8)[0]
  users = [system + u for u in prompts((3, 5, 2, 4), seed=9)]
  store = PrefixCache(1 << 30, 1 << 30)
  out = Batcher(engine, engine.load_params(), prefix_cache=store).run([Request(u, max_tokens=4) for u in users])
  plain = Batcher(engine, engine.load_params()).run([Request(u, max_tokens=4) for u in users])
  assert [s[0].tokens for s in out] == [s[0].tokens for s in plain]
  assert store.hits == 3 and store.tokens_reused >= 30


def test_prefix_cache_lru_moves_to_host_then_drops(engine, model):
  params = engine.load_params()
  ps = prompts((8, 8, 8), seed=10)
  one = engine.prefill_ids(params, ps[0])
  size = sum(a.nbytes for a in jax.tree.leaves(one))
  store = PrefixCache(hbm_bytes=size, dram_bytes=size)
  for p in ps:
    store.put(p, engine.prefill_ids(params, p))
  s = store.stats()
  assert s["entries"] == 2 and s["hbm_bytes"] == size and s["dram_bytes"] == size  # oldest dropped
  assert store.lookup(ps[0] + [1]) is None
  hit, m = store.lookup(ps[1] + [1])  # on the host: comes back to the device
  assert m == 8 and isinstance(hit.cache.k_LBSKH, jax.Array)


def test_paged_and_contiguous_caches_give_identical_tokens(make_cfg, model, engine):
  ps = prompts((3, 9, 16, 5, 12, 1, 7), seed=11)
  reqs = lambda: [Request(p, max_tokens=n) for p, n in zip(ps, [8, 3, 20, 1, 6, 9, 4])]  # noqa: E731
  contiguous = engine
  paged = Engine(make_cfg("attention=paged", "pagedattn_tokens_per_page=4", "pagedattn_num_pages=40"), model)
  a = Batcher(contiguous, contiguous.load_params()).run(reqs())
  batcher = Batcher(paged, paged.load_params())
  b = batcher.run(reqs())
  assert [s[0].tokens for s in a] == [s[0].tokens for s in b]
  assert batcher.pages.num_free == 39  # every page returned (page 0 is scratch)


def test_paged_cache_holds_more_sequences_than_slots_x_length(make_cfg, model):
  """12 slots over a pool of 24 pages of 4 tokens (96 tokens, the contiguous cache of 2 slots of 48): short
  sequences all decode at once."""
  engine = Engine(make_cfg("attention=paged", "pagedattn_tokens_per_page=4", "pagedattn_num_pages=25",
                           "per_device_batch_size=12"), model)
  ps = prompts([3] * 12, seed=12)
  batcher = Batcher(engine, engine.load_params())
  for p in ps:
    batcher.submit(Request(p, max_tokens=4))
  batcher.step()  # one round: all 12 admitted at once (their pages fit), then decoded together to the end
  assert not batcher.busy and len({id(s) for s in batcher.sequences.values()}) == 12
  assert [s[0].tokens for s in batcher.sequences.values()] == [alone(model, p, 4) for p in ps]


def test_pages_exhausted_fails_that_sequence_and_the_others_continue(make_cfg, model):
  engine = Engine(make_cfg("attention=paged", "pagedattn_tokens_per_page=4", "pagedattn_num_pages=9",
                           "per_device_batch_size=2"), model)
  a, b = prompts((4, 4), seed=13)
  out = Batcher(engine, engine.load_params()).run([Request(a, max_tokens=40), Request(b, max_tokens=6)])
  assert out[0][0].finish_reason == "error" and "paged KV cache is full" in out[0][0].error
  assert out[1][0].finish_reason == "length" and out[1][0].tokens == alone(model, b, 6)
  small = Engine(make_cfg("attention=paged", "pagedattn_tokens_per_page=4", "pagedattn_num_pages=3"), model)
  with pytest.raises(EngineError, match="needs more pages"):
    Batcher(small, small.load_params()).submit(Request(prompts((12,))[0]))


def test_bad_engine_input_is_refused_clearly(make_cfg, engine, model):
  params, state = engine.load_params(), engine.init_decode_state()
  with pytest.raises(EngineError, match=r"17 tokens .* at most 16 .*use_chunked_prefill"):
    engine.prefill_ids(params, list(range(1, 18)))
  with pytest.raises(EngineError, match="slot 3 is out of range"):
    engine.insert(engine.prefill_ids(params, [1, 2]), state, 3)
  with pytest.raises(EngineError, match="empty prompt"):
    engine.prefill_ids(params, [])
  batcher = Batcher(Engine(make_cfg("multi_sampling=true"), model), params)
  with pytest.raises(EngineError, match="n=4 samples"):
    batcher.submit(Request([1, 2], n=4))
  # a refused request leaves a running one untouched
  (p,) = prompts((6,), seed=14)
  rid = batcher.submit(Request(p, max_tokens=5))
  batcher.step()
  with pytest.raises(EngineError):
    batcher.submit(Request(list(range(1, 30))))
  while batcher.busy:
    batcher.step()
  assert batcher.sequences[rid][0].tokens == alone(model, p, 5)


def test_stop_ids_eos_and_log_probs(engine, model):
  (p,) = prompts((6,), seed=15)
  ref = alone(model, p, 8)
  out = Batcher(engine, engine.load_params(), eos_id=ref[3]).run(
      [Request(p, max_tokens=8), Request(p, max_tokens=8, stop_ids=(ref[1],))])
  assert out[0][0].tokens == ref[:3] and out[0][0].finish_reason == "stop"
  assert out[1][0].tokens == ref[:1] and out[1][0].finish_reason == "stop"
  # log-probs are the full forward's log-softmax of each emitted token
  (seqs,) = Batcher(engine, engine.load_params()).run([Request(p, max_tokens=6)])
  logits = np.asarray(model(jnp.asarray([p + seqs[0].tokens[:-1]])))[0, len(p) - 1:]
  logp = jax.nn.log_softmax(logits, -1)
  want = [float(logp[i, t]) for i, t in enumerate(seqs[0].tokens)]
  np.testing.assert_allclose(seqs[0].log_probs, want, atol=1e-4)


def test_per_slot_sampling_and_multi_sampling(make_cfg, model):
  with pytest.raises(EngineError, match="multi_sampling=true"):
    Batcher(Engine(make_cfg(), model), None).submit(Request([1, 2], n=2))
  engine = Engine(make_cfg("per_device_batch_size=4", "multi_sampling=true"), model)
  (p,) = prompts((6,), seed=16)
  greedy = alone(model, p, 6)
  hot = SamplingOptions("weighted", temperature=5.0)
  out = Batcher(engine, engine.load_params(), seed=1).run(
      [Request(p, max_tokens=6, sampling=hot, n=3), Request(p, max_tokens=6)])
  samples = [s.tokens for s in out[0]]
  assert len(samples) == 3 and len({tuple(s) for s in samples}) == 3  # independent draws at temperature 5
  assert out[1][0].tokens == greedy  # the greedy slot decoding beside them is unaffected
  # a seeded request samples the same alone or beside others (each slot has its own key)
  seeded = lambda: Request(p, max_tokens=6, sampling=hot, seed=7)  # noqa: E731
  (solo,) = Batcher(engine, engine.load_params(), seed=3).run([seeded()])
  crowd = Batcher(engine, engine.load_params(), seed=4).run([Request(p, max_tokens=3, sampling=hot), seeded()])
  assert crowd[1][0].tokens == solo[0].tokens
  topk1 = SamplingOptions("topk", top_k=1, temperature=3.0)  # top-1 sampling is greedy
  (seqs,) = Batcher(engine, engine.load_params(), seed=2).run([Request(p, max_tokens=6, sampling=topk1)])
  assert seqs[0].tokens == greedy


def test_sample_rows_matches_the_single_options_sampler():
  from maxtext_like.inference.sampling import row_params, sample, sample_rows
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  for o in (SamplingOptions("topk", top_k=2), SamplingOptions("nucleus", nucleus_p=0.7),
            SamplingOptions("composite", top_k=3, nucleus_p=0.7), SamplingOptions("weighted", temperature=0.7)):
    t, k, p = row_params(o)
    keys = jax.random.split(jax.random.PRNGKey(0), 300)
    rows = [int(sample_rows(logits, key, jnp.array([t]), jnp.array([k]), jnp.array([p]), greedy_only=False)[0])
            for key in keys]
    ref = [int(sample(logits, key, o)[0]) for key in keys]
    assert rows == ref, o


# ---- every kind of attention and cache: decode through the engine equals the full forward ----------------------

FAMILIES = [("mistral", "mistral_window"), ("gemma2", "gemma2"), ("gemma3", "gemma3"), ("olmo3", "olmo3"),
            ("deepseek", "v3"), ("mixtral", "mixtral"), ("llama4", "scout"), ("gpt_oss", "gpt_oss")]


@pytest.mark.parametrize("block,name", FAMILIES, ids=[f"{b}-{n}" for b, n in FAMILIES])
def test_engine_decode_equals_full_forward(make_cfg, block, name, monkeypatch):
  """Sliding window (mistral, gemma2/3, olmo3, gpt-oss), local/global layers (gemma2/3), MLA's compressed cache
  (deepseek), MoE (mixtral, deepseek, gpt-oss, llama4) and chunked attention with NoPE layers (llama4): engine
  tokens are the argmax of the full forward over prompt + generated, and its log-probs that forward's."""
  from hf_parity_lib import random_model
  from parity_cases import CASES, spec
  for obj, attr, value in CASES[block][name].patches:
    monkeypatch.setattr(obj, attr, value)
  s = dataclasses.replace(spec(block, name), dtype=jnp.float32, weight_dtype=jnp.float32)
  m = random_model(s, seed=1)
  engine = Engine(make_cfg("max_target_length=28"), m, num_slots=2)
  ps = prompts((11, 4), seed=17)
  ps = [[t % s.vocab_size or 1 for t in p] for p in ps]
  out = Batcher(engine, engine.load_params()).run([Request(p, max_tokens=n) for p, n in zip(ps, (13, 5))])
  for p, (seq,) in zip(ps, out):
    logits = np.asarray(nnx.jit(lambda mm, t: mm(t))(m, jnp.asarray([p + seq.tokens[:-1]])))[0, len(p) - 1:]
    assert seq.tokens == [int(t) for t in np.argmax(logits, -1)]
    np.testing.assert_allclose(seq.log_probs, [float(jax.nn.log_softmax(logits[i])[t]) for i, t in enumerate(seq.tokens)],
                               atol=1e-4)


def test_sharded_engine_equals_one_device(make_cfg, model):
  """Parameters over fsdp x tensor and the cache by the cache_* rules on 8 fake devices: same tokens."""
  from maxtext_like.config.resolve import resolve
  from maxtext_like.training.state import make_mesh
  cfg = make_cfg("ici_fsdp_parallelism=2", "ici_tensor_parallelism=2", "ici_data_parallelism=2",
                 "per_device_batch_size=0.5")
  mesh = make_mesh(resolve(cfg, jax.device_count()))
  engine = Engine(cfg, model, mesh=mesh)
  assert engine.max_concurrent_decodes == 4
  ps = prompts((5, 13, 8), seed=18)
  out = Batcher(engine, engine.load_params()).run([Request(p, max_tokens=7) for p in ps])
  assert [s[0].tokens for s in out] == [alone(model, p, 7) for p in ps]
  leaf = engine.init_decode_state().cache.k_LBSKH[0]  # layer 0's buffer
  assert len(leaf.sharding.device_set) > 1


def test_prefill_logits_at_equals_the_full_forward_at_that_position(model):
  """`logits_at` (the engine's prefill): the logits of one position per row, equal to the full forward's there."""
  toks = jnp.asarray(prompts((12, 12), seed=31))
  seg = jnp.asarray([[1] * 12, [1] * 7 + [0] * 5])
  full, _ = model.prefill(toks, seg, max_length=16)
  at = jnp.asarray([11, 6])
  one, _ = model(toks, None, seg, cache=model.init_cache(2, 16), logits_at=at)
  assert one.shape == (2, 1, full.shape[-1])
  np.testing.assert_allclose(np.asarray(one[:, 0]), np.asarray(full[jnp.arange(2), at]), atol=1e-5, rtol=1e-5)


def test_decode_step_reads_the_cache_buffers_without_copying_them(engine):
  """The generate step writes the previous step's pending entries into the per-layer buffers in place, then only
  reads them, and `commit` (Engine.flush) updates them in place: neither compiled program copies a cache-sized
  array (XLA:CPU copies a buffer that one program reads and then updates, and a layer's slice of a stacked cache),
  which would make the step's cost grow with the cache."""
  params, state = engine.load_params(), engine.init_decode_state()
  buffers = state.cache.arrays()
  assert all(isinstance(a, tuple) and len(a) == 2 for a in buffers)  # one buffer per layer
  small = dataclasses.replace(state, cache=state.cache.without_arrays())
  new = jax.tree.map(lambda a: jnp.zeros((a.shape[0], 1, *a.shape[2:]), a.dtype), buffers)
  pending = (new, state.cache.index_B)
  step = engine._fns.generate.lower(params, buffers, small, pending, True).compile().as_text()
  first = engine._fns.generate.lower(params, buffers, small, None, True).compile().as_text()
  commit = engine._fns.commit.lower(buffers, new, state.cache.index_B, None).compile().as_text()
  size = int(np.prod(buffers[0][0].shape))

  def cache_sized_copies(text):  # copies, slices and their fusions whose result is as big as a layer's buffer
    out = []
    for name, dims in re.findall(r"%([\w.-]+) = \w+\[([\d,]*)\]", text):
      if ("copy" in name or "slice" in name) and "update" not in name and dims and int(np.prod([int(d) for d in dims.split(",")])) >= size:
        out.append(name)
    return out
  assert cache_sized_copies(step) == [] and cache_sized_copies(first) == [] and cache_sized_copies(commit) == []
  def read_and_update(c):  # the pattern the step avoids: the check must see its copies
    return c.at[:, 0].set(1.0), jnp.einsum("bskh,bskh->b", c, c)
  both = jax.jit(read_and_update, donate_argnums=0).lower(buffers[0][0]).compile().as_text()
  assert cache_sized_copies(both)


def test_pending_entries_are_flushed_before_the_cache_changes(engine, model):
  """After a step the state's cache lags by that step's entries (`pending`); `flush` writes them, and an insert
  flushes first, so a slot's tokens are all in the cache when another slot is replaced. (A state passed to
  generate, insert or flush is consumed: its buffers are donated.)"""
  params = engine.load_params()
  p, q = prompts((6, 9), seed=40)
  state = engine.insert(engine.prefill_ids(params, p), engine.init_decode_state(), 0)
  layer0_keys = lambda st: np.asarray(st.cache.arrays()[0][0][0])  # noqa: E731 - slot 0's row of layer 0's keys
  before = layer0_keys(state)
  for _ in range(3):  # writes positions 6, 7 and 8
    state, _ = engine.generate(params, state, greedy_only=True)
  assert state.pending is not None
  lagging = layer0_keys(state)
  assert not np.array_equal(lagging[7], before[7]) and np.array_equal(lagging[8], before[8])
  flushed = engine.flush(state)
  assert flushed.pending is None and engine.flush(flushed) is flushed
  row = layer0_keys(flushed)
  assert not np.array_equal(row[8], before[8]) and np.array_equal(row[9:], before[9:])
  np.testing.assert_array_equal(row[:8], lagging[:8])
  state, _ = engine.generate(params, flushed, greedy_only=True)  # writes position 9, pending
  state = engine.insert(engine.prefill_ids(params, q), state, 1)  # flushes first
  assert state.pending is None
  after = layer0_keys(state)
  assert not np.array_equal(after[9], before[9]) and np.array_equal(after[:9], row[:9])


def test_run_admits_the_longest_budget_first_and_answers_in_the_given_order(make_cfg, model):
  """One slot: requests run one after another, so their first-token times give the admission order."""
  engine = Engine(make_cfg("per_device_batch_size=1"), model)
  ps = prompts((4, 6, 5), seed=32)
  budgets = (3, 9, 5)
  for order, want in (("longest_first", [1, 2, 0]), ("given", [0, 1, 2])):
    out = Batcher(engine, engine.load_params()).run([Request(p, max_tokens=m) for p, m in zip(ps, budgets)],
                                                   order=order)
    assert [s[0].tokens for s in out] == [alone(model, p, m) for p, m in zip(ps, budgets)]
    assert sorted(range(3), key=lambda i: out[i][0].first_token_at) == want
  with pytest.raises(ValueError, match="longest_first"):
    Batcher(engine, engine.load_params()).run([], order="shortest")
