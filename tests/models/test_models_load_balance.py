"""Load-balanced context parallelism: the reorder, and a model fed reordered tokens == the original, reordered."""

import functools

import numpy as np
import jax.numpy as jnp
import pytest

from maxtext_like.models import load_balance
from maxtext_like.models.moe import MoeSpec
from models_testlib import TINY, build, jit_forward


def test_dual_chunk_swap_and_striped_orders():
  np.testing.assert_array_equal(load_balance.permutation(8, 2, "dual_chunk_swap"), [0, 1, 6, 7, 2, 3, 4, 5])
  np.testing.assert_array_equal(load_balance.permutation(8, 2, "auto"), [0, 1, 6, 7, 2, 3, 4, 5])
  np.testing.assert_array_equal(load_balance.permutation(8, 2, "striped"), [0, 2, 4, 6, 1, 3, 5, 7])
  np.testing.assert_array_equal(load_balance.permutation(8, 1, "striped"), np.arange(8))
  with pytest.raises(ValueError, match="multiple of 8"):
    load_balance.permutation(12, 4, "dual_chunk_swap")


@pytest.mark.parametrize("shards", [2, 4])
@pytest.mark.parametrize("strategy", ["dual_chunk_swap", "striped"])
def test_every_shard_gets_the_same_causal_work(shards, strategy):
  T = 64
  perm = load_balance.permutation(T, shards, strategy)
  assert sorted(perm) == list(range(T))
  work = [(perm[c * T // shards:(c + 1) * T // shards] + 1).sum() for c in range(shards)]  # keys each query sees
  contiguous = [(np.arange(c * T // shards, (c + 1) * T // shards) + 1).sum() for c in range(shards)]
  assert max(work) - min(work) <= ((shards - 1) * T // shards if strategy == "striped" else 0), work
  assert max(work) - min(work) < (max(contiguous) - min(contiguous)) / 2


def tokens_and_packing(B=2, T=32, vocab=128):
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, vocab, (B, T))
  seg = np.ones((B, T), np.int32)
  seg[0, 11:25] = 2
  seg[0, 25:] = 0  # padding
  pos = np.concatenate([np.arange(11), np.arange(14), np.zeros(7, int)])[None].repeat(B, 0)
  pos[1] = np.arange(T)
  return jnp.asarray(tokens), jnp.asarray(pos), jnp.asarray(seg)


SPECS = {
    "llama_window_dot": TINY.replace(sliding_window_size=6),
    "llama_flash": TINY.replace(attention="flash", flash_block_size=8),
    "llama_window_flash": TINY.replace(attention="flash", flash_block_size=8, sliding_window_size=5),
    "gpt_oss_sinks": TINY.replace(decoder_block="gpt_oss", attention_sink=True, sliding_window_size=4,
                                  attention_bias=True, moe=MoeSpec(mlp_dim=32, num_experts=4, num_experts_per_tok=2)),
    "deepseek_mla": TINY.replace(decoder_block="deepseek", attention_type="mla", q_lora_rank=0, kv_lora_rank=16,
                                 qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8, num_kv_heads=4,
                                 moe=MoeSpec(mlp_dim=32, num_experts=4, num_experts_per_tok=2, shared_experts=1,
                                             first_num_dense_layers=1)),
}


@functools.cache  # the original model's forward and its logits, once per module for each spec
def original(name):
  forward = jit_forward(build(SPECS[name]))
  return forward, np.asarray(forward(*tokens_and_packing()))


@pytest.mark.parametrize("name", sorted(SPECS))
@pytest.mark.parametrize("shards,strategy", [(2, "dual_chunk_swap"), (4, "striped")])
def test_reordered_forward_equals_original(name, shards, strategy):
  spec = SPECS[name]
  tokens, pos, seg = tokens_and_packing()
  forward, want = original(name)
  balanced = spec.replace(context_load_balance_shards=shards, context_reorder_strategy=strategy)
  batch = load_balance.reorder_batch({"t": tokens, "p": pos, "s": seg}, shards, strategy)
  got = np.asarray(jit_forward(build(balanced))(batch["t"], batch["p"], batch["s"]))
  perm = load_balance.permutation(tokens.shape[1], shards, strategy)
  real = np.asarray(seg)[:, perm] != 0  # padding positions carry no loss
  np.testing.assert_allclose(got[real], want[:, perm][real], rtol=2e-5, atol=2e-5)
  # Without the original-order mask the reordered sequence attends the wrong keys: the test can fail.
  wrong = np.asarray(forward(batch["t"], batch["p"], batch["s"]))
  assert not np.allclose(wrong[real], want[:, perm][real], atol=1e-3)
