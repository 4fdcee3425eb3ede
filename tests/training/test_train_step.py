"""The pure train step: sharded == one device, accumulation == big batch, optimizers, schedules, NaN abort."""

import jax
import numpy as np
import pytest

from maxtext_like.models.sharding import activation_sharding
from maxtext_like.training.loop import Trainer, TrainingAborted
from maxtext_like.training.schedules import learning_rate_schedule
from train_lib import run_steps


COMMON = ["dataset_type=synthetic", "enable_checkpointing=false", "per_device_batch_size=1", "steps=3"]


@pytest.fixture(scope="module")
def reference(tiny_cfg_module):
  """run_steps(tiny_cfg(*argv), n, the first `devices` devices), computed once per module for each argument set:
  the references the sharded runs compare with."""
  runs = {}

  def run(argv, n, devices):
    key = (tuple(argv), n, devices)
    if key not in runs:
      runs[key] = run_steps(tiny_cfg_module(*argv), n, jax.devices()[:devices])
    return runs[key]
  return run


@pytest.mark.parametrize("mesh", [
    ["ici_data_parallelism=8", "ici_fsdp_parallelism=1"],
    ["ici_fsdp_parallelism=8"],
    ["ici_fsdp_parallelism=4", "ici_tensor_parallelism=2"],
    ["ici_data_parallelism=2", "ici_fsdp_parallelism=2", "ici_tensor_parallelism=2"],
    ["ici_context_parallelism=2", "ici_fsdp_parallelism=4", "context_parallel_load_balance=false"],
    ["ici_context_parallelism=2", "ici_fsdp_parallelism=4"],  # load-balanced (dual chunk swap)
    ["ici_context_parallelism=4", "ici_fsdp_parallelism=2", "context_parallel_reorder_strategy=striped"],
    ["ici_sequence_parallelism=2", "ici_fsdp_transpose_parallelism=2", "ici_fsdp_parallelism=2"],
    ["num_slices=2", "dcn_data_parallelism=-1", "ici_fsdp_parallelism=4"],
])
def test_sharded_matches_one_device(tiny_cfg, reference, mesh):
  assert len(jax.devices()) == 8
  _, s1, l1, n1 = reference([*COMMON, "per_device_batch_size=8", "ici_fsdp_parallelism=1"], 3, 1)
  _, s8, l8, n8 = run_steps(tiny_cfg(*COMMON, *mesh), 3)
  np.testing.assert_allclose(l8, l1, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(n8, n1, rtol=1e-5, atol=1e-5)
  p1 = jax.tree.leaves(s1["params"])
  p8 = jax.tree.leaves(s8["params"])
  for a, b in zip(p1, p8):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=5e-5)  # after 3 Adam steps


@pytest.mark.parametrize("balance", [
    ["ici_context_parallelism=2", "ici_fsdp_parallelism=4"],
    ["ici_context_parallelism=2", "ici_fsdp_parallelism=4", "context_parallel_load_balance=false"],
    ["ici_context_parallelism=4", "ici_tensor_parallelism=2", "context_parallel_reorder_strategy=striped"],
], ids=["dual_chunk_swap", "unbalanced", "striped+tensor"])
def test_context_parallel_flash_with_packing_and_window(tiny_cfg, reference, balance):
  """Packed real text, a sliding window, block-sparse flash run per context shard (shard_map): == one device."""
  from maxtext_like.models import context_attention
  from maxtext_like.models.sharding import activation_sharding as act
  common = [*COMMON, "dataset_type=embedded", "sliding_window_size=12", "attention=flash", "sa_block_q=8", "sa_block_kv=8"]
  _, _, l1, n1 = reference([*common, "per_device_batch_size=8", "ici_fsdp_parallelism=1"], 2, 1)
  tr, _, l8, n8 = run_steps(tiny_cfg(*common, *balance), 2)
  shards = 4 if "striped" in str(balance) else 2
  balanced = "context_parallel_load_balance=false" not in balance
  assert tr.spec.context_load_balance_shards == (shards if balanced else 1)
  with act(tr.mesh, tr.rules):  # the attention ran per sequence shard
    layout = context_attention.sequence_shards((8, 32, 4, 16), (8, 32, 2, 16), tr.spec.attention_spec)
  assert layout is not None and layout[3] == ("context",)
  np.testing.assert_allclose(l8, l1, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(n8, n1, rtol=1e-5, atol=1e-5)


def test_parameters_are_sharded_as_configured(tiny_cfg):
  tr = Trainer(tiny_cfg(*COMMON, "ici_fsdp_parallelism=4", "ici_tensor_parallelism=2"))
  specs = {"/".join(str(getattr(k, "key", k)) for k in path): s.spec for path, s in
           jax.tree_util.tree_flatten_with_path(tr.layout.shardings["params"])[0]}
  emb = next(v for k, v in specs.items() if "token_embedder" in k)
  assert "tensor" in emb[0] and "fsdp" in emb[1]  # ('vocab', 'embed')
  wi = next(v for k, v in specs.items() if "wi_0" in k)
  assert "fsdp" in str(wi) and "tensor" in str(wi)


def test_gradient_accumulation_matches_big_batch(tiny_cfg):
  _, _, big, nb = run_steps(tiny_cfg(*COMMON, "per_device_batch_size=4", "ici_fsdp_parallelism=1"), 2, jax.devices()[:1])
  _, _, acc, na = run_steps(tiny_cfg(*COMMON, "per_device_batch_size=1", "gradient_accumulation_steps=4", "ici_fsdp_parallelism=1"), 2,
                            jax.devices()[:1])
  np.testing.assert_allclose(acc, big, rtol=1e-5)
  np.testing.assert_allclose(na, nb, rtol=1e-4)


@pytest.mark.parametrize("opt", ["adamw", "adam_pax", "sgd", "muon"])
def test_each_optimizer_lowers_the_loss(tiny_cfg, opt):
  cfg = tiny_cfg(*COMMON, f"opt_type={opt}", "learning_rate=0.01", "warmup_steps_fraction=0", "steps=6", "ici_fsdp_parallelism=1",
                 "dataset_type=embedded")
  _, _, losses, _ = run_steps(cfg, 6, jax.devices()[:1])
  assert losses[-1] < losses[0], losses


def test_trainable_parameters_mask_freezes_the_rest(tiny_cfg):
  cfg = tiny_cfg(*COMMON, "trainable_parameters_mask=['*decoder_norm*']", "ici_fsdp_parallelism=1")
  tr, state0, _, _ = run_steps(cfg, 0, jax.devices()[:1])
  _, state, _, _ = run_steps(cfg, 2, jax.devices()[:1])
  flat0 = {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(state0["params"])[0]}
  for p, v in jax.tree_util.tree_flatten_with_path(state["params"])[0]:
    changed = not np.array_equal(flat0[jax.tree_util.keystr(p)], np.asarray(v))
    assert changed == ("decoder_norm" in jax.tree_util.keystr(p)), jax.tree_util.keystr(p)


def test_cosine_and_wsd_schedules(tiny_cfg):
  o = tiny_cfg("learning_rate=1.0", "warmup_steps_fraction=0.1", "learning_rate_final_fraction=0.1").optimizer
  s = learning_rate_schedule(o, 100)
  assert float(s(0)) == 0.0 and float(s(10)) == pytest.approx(1.0) and float(s(100)) == pytest.approx(0.1, abs=1e-6)
  assert float(s(55)) == pytest.approx(0.1 + 0.9 * 0.5, abs=1e-2)
  w = tiny_cfg("learning_rate=1.0", "lr_schedule_type=wsd", "warmup_steps_fraction=0.1", "wsd_decay_steps_fraction=0.2",
               "learning_rate_final_fraction=0.0").optimizer
  s = learning_rate_schedule(w, 100)
  assert float(s(50)) == pytest.approx(1.0) and float(s(80)) == pytest.approx(1.0) and float(s(90)) == pytest.approx(0.5)
  assert float(s(100)) == pytest.approx(0.0, abs=1e-6)


def test_nan_loss_aborts_with_step_number(tiny_cfg):
  cfg = tiny_cfg(*COMMON, "learning_rate=1e30", "warmup_steps_fraction=0", "gradient_clipping_threshold=0", "steps=12",
                 "ici_fsdp_parallelism=1", "opt_type=sgd")
  with pytest.raises(TrainingAborted, match=r"at step \d+"):
    Trainer(cfg, devices=jax.devices()[:1]).run()


def test_skip_step_on_spikes_keeps_params(tiny_cfg):
  cfg = tiny_cfg(*COMMON, "skip_step_on_spikes=true", "skip_step_interval=2", "skip_step_scaling_factor=0.0001", "steps=5",
                 "ici_fsdp_parallelism=1")
  _, s2, _, _ = run_steps(cfg, 2, jax.devices()[:1])
  _, s4, _, _ = run_steps(cfg, 4, jax.devices()[:1])
  # After 2 steps fill the window, every later loss is a "spike" at this factor: parameters stop changing.
  for a, b in zip(jax.tree.leaves(s2["params"]), jax.tree.leaves(s4["params"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  _, s3, _, _ = run_steps(tiny_cfg(*COMMON, "ici_fsdp_parallelism=1"), 3, jax.devices()[:1])
  assert any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(jax.tree.leaves(s2["params"]), jax.tree.leaves(s3["params"])))


def test_hardware_must_match_the_backend():
  from maxtext_like.config import ConfigError
  from maxtext_like.training.loop import check_hardware
  check_hardware("auto", "cpu")
  check_hardware("cpu", "cpu")
  with pytest.raises(ConfigError, match="hardware"):
    check_hardware("tpu", "cpu")


def test_log_config_lists_changed_keys_with_sources(tiny_cfg):
  from maxtext_like.training.loop import changed_keys_summary
  text = changed_keys_summary(tiny_cfg("steps=7"))
  assert "steps = 7  (cli)" in text and "learning_rate =" not in text


@pytest.mark.parametrize("offload", [["optimizer_memory_host_offload=true"],
                                     ["optimizer_memory_host_offload=true", "parameter_memory_host_offload=true"]])
def test_host_offload_keeps_state_on_host_and_matches(tiny_cfg, reference, offload):
  base = [*COMMON, "ici_fsdp_parallelism=2", "ici_data_parallelism=1"]
  _, s_ref, l_ref, _ = reference(base, 2, 2)
  tr, s_off, l_off, _ = run_steps(tiny_cfg(*base, *offload), 2, jax.devices()[:2])
  np.testing.assert_allclose(l_off, l_ref, rtol=1e-6)
  kinds = {x.sharding.memory_kind for x in jax.tree.leaves(s_off["opt_state"]) if x.ndim > 0}
  assert kinds == {"pinned_host"}
  param_kinds = {x.sharding.memory_kind for x in jax.tree.leaves(s_off["params"])}
  assert param_kinds == ({"pinned_host"} if len(offload) == 2 else {"device"})


def test_indivisible_sharding_is_a_config_error(tiny_cfg):
  from maxtext_like.config import ConfigError
  with pytest.raises(ConfigError, match=r"cannot split 8 ways"):
    Trainer(tiny_cfg(*COMMON, "ici_fsdp_parallelism=1", "ici_tensor_parallelism=8"))  # 4 query heads, 2 kv heads


def test_step_enters_the_sharding_context_itself(tiny_cfg):
  """The jitted step carries its activation constraints whether or not the caller entered a context."""
  tr = Trainer(tiny_cfg(*COMMON, "ici_fsdp_parallelism=4", "ici_tensor_parallelism=2"))
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=tr.batch_sharding)
           for k, v in next(tr.data).items()}
  with jax.set_mesh(tr.mesh):
    bare = tr.train_step.lower(tr.layout.abstract, batch).as_text()
  with jax.set_mesh(tr.mesh), activation_sharding(tr.mesh, tr.rules):
    inside = tr.train_step.lower(tr.layout.abstract, batch).as_text()
  assert bare.count("sharding_constraint") > 10 and bare == inside
