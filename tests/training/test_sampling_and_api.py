"""Sampling strategies, the Python API, full-state loading and TensorBoard output."""

import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maxtext_like import api
from maxtext_like.inference.sampling import SamplingOptions, sample
from maxtext_like.training.loop import Trainer

LOGITS = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))


def draws(options, n=400):
  keys = jax.random.split(jax.random.PRNGKey(0), n)
  return np.array([int(sample(LOGITS, k, options)[0]) for k in keys])


def test_greedy_is_argmax():
  assert int(sample(LOGITS, jax.random.PRNGKey(0), SamplingOptions("greedy"))[0]) == 0


def test_topk_only_draws_the_top_k():
  assert set(draws(SamplingOptions("topk", top_k=2))) == {0, 1}


def test_nucleus_keeps_the_smallest_prefix_reaching_p():
  assert set(draws(SamplingOptions("nucleus", nucleus_p=0.7))) == {0, 1}  # 0.5 < 0.7 <= 0.8
  assert set(draws(SamplingOptions("nucleus", nucleus_p=0.4))) == {0}


def test_weighted_follows_the_distribution_and_temperature_sharpens():
  d = draws(SamplingOptions("weighted", temperature=1.0), 800)
  assert abs(np.mean(d == 0) - 0.5) < 0.07 and set(d) == {0, 1, 2, 3}
  cold = draws(SamplingOptions("weighted", temperature=0.1), 200)
  assert np.mean(cold == 0) > 0.95


def test_composite_applies_topk_then_nucleus():
  assert set(draws(SamplingOptions("composite", top_k=3, nucleus_p=0.7, temperature=1.0))) == {0, 1}


def test_api_load_model_generate_and_count(tiny_cfg, tmp_path):
  cfg = tiny_cfg("dataset_type=embedded", "enable_checkpointing=false")
  model = api.load_model(cfg)
  assert "seeded init" in model.source
  logits = model.logits(np.ones((2, 5), np.int32))
  assert logits.shape == (2, 5, 4096) and logits.dtype == jnp.float32
  out = api.generate(cfg, ["It is", "She"])
  assert len(out) == 2 and all(isinstance(t, str) for t in out)
  assert api.count_params(cfg) == sum(x.size for x in jax.tree.leaves(
      jax.tree.map(lambda v: v, __import__("flax").nnx.state(model.model, __import__("flax").nnx.Param))))


def test_load_full_state_path_restores_step_and_optimizer(tiny_cfg, tmp_path):
  args = ["dataset_type=synthetic", "ici_fsdp_parallelism=1", "checkpoint_period=2", "learning_rate_schedule_steps=4"]
  src = Trainer(tiny_cfg(*args, "steps=2", "run_name=src"), devices=jax.devices()[:1]).run()
  tr = Trainer(tiny_cfg(*args, "steps=4", "run_name=dst", f"load_full_state_path={tmp_path}/src/checkpoints/2"), devices=jax.devices()[:1])
  state, step = tr.initial_state()
  assert step == 2 and int(state["step"]) == 2
  for a, b in zip(jax.tree.leaves(src.final_state["opt_state"]), jax.tree.leaves(state["opt_state"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_tensorboard_events_are_written(tiny_cfg, tmp_path):
  Trainer(tiny_cfg("dataset_type=synthetic", "ici_fsdp_parallelism=1", "enable_tensorboard=true", "steps=2", "log_period=1",
                   "enable_checkpointing=false", "run_name=tb"), devices=jax.devices()[:1]).run()
  assert glob.glob(os.path.join(tmp_path, "tb", "tensorboard", "events.out.tfevents.*"))


def test_argmax_and_token_log_probs_equal_jax_references():
  """The engine's argmax (a max, then the first matching index) is jnp.argmax, ties included; token_log_probs is
  log_softmax at the token."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from maxtext_like.inference.sampling import argmax, token_log_probs
  x = jax.random.normal(jax.random.PRNGKey(0), (5, 3000))
  x = x.at[1, 7].set(9.0).at[1, 2000].set(9.0).at[3].set(0.0)  # a tie (first index wins), an all-equal row
  np.testing.assert_array_equal(np.asarray(argmax(x)), np.asarray(jnp.argmax(x, axis=-1)))
  toks = jnp.asarray([0, 7, 2999, 5, 1234])
  want = jnp.take_along_axis(jax.nn.log_softmax(x), toks[:, None], axis=1)[:, 0]
  np.testing.assert_allclose(np.asarray(token_log_probs(x, toks)), np.asarray(want), atol=1e-5)
