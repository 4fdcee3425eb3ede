"""MoE throughput: training tokens/s of a small mixtral-style model with dropless (ragged_dot) vs capacity (einsum)
dispatch, and the MoE layer alone (forward + backward) in each dispatch mode vs its dense reference (every expert on
every token).

Model: emb 256, 4 layers, 4 heads of 64, 8 experts (top-2) of hidden 512, vocab 32000, seq 256, batch 4 per device,
float32, synthetic data, 1 device. Layer alone: tokens [4, 256, 256] through the same MoeBlock.

Run:
  .venv/bin/python benchmarks/moe_throughput.py [--steps 10] [--warmup 2] [key=value ...]

Medians of `block_until_ready`-ed steps after warm-up (compilation excluded). On CPU these are relative figures
(ragged_dot lowers to a loop of dense matmuls on XLA:CPU); the layout that wins on TPU/GPU may differ.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

warnings.filterwarnings("ignore", message=".*with mesh.*", category=DeprecationWarning)

MODEL = ["override_model_config=true", "decoder_block=mixtral", "base_emb_dim=256", "base_num_query_heads=4",
         "base_num_kv_heads=4", "head_dim=64", "base_mlp_dim=512", "base_moe_mlp_dim=512", "base_num_decoder_layers=4",
         "num_experts=8", "num_experts_per_tok=2", "norm_topk_prob=true", "vocab_size=32000", "max_target_length=256",
         "per_device_batch_size=4", "dtype=float32", "weight_dtype=float32", "dataset_type=synthetic", "megablox=false",
         "enable_checkpointing=false", "enable_tensorboard=false", "log_period=1000000", "steps=1000000",
         "ici_fsdp_parallelism=1", "run_name=bench_moe"]
MODES = {"dropless, blocked grouped matmul (CPU default)": (["sparse_matmul=true"], "blocked"),
         "dropless, jax.lax.ragged_dot (TPU/GPU default)": (["sparse_matmul=true"], "ragged_dot"),
         "capacity 1.25 (einsum dispatch)": (["sparse_matmul=false", "capacity_factor=1.25"], None),
         "capacity none (einsum, C = T)": (["sparse_matmul=false", "capacity_factor=-1"], None)}


def timed(fn, steps: int, warmup: int) -> float:
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def train_tokens_per_s(overrides, steps, warmup) -> tuple[float, float]:
  import jax
  from maxtext_like.config import load_config
  from maxtext_like.models.sharding import activation_sharding
  from maxtext_like.training.loop import Trainer, to_global

  cfg = load_config(["base.yml", *MODEL, *overrides], env={})
  tr = Trainer(cfg, devices=jax.devices()[:1])
  state, _ = tr.initial_state()
  batch = to_global(next(tr.data), tr.batch_sharding)
  box = {"s": state}

  def one():
    box["s"], m = tr.train_step(box["s"], batch)
    jax.block_until_ready(m["loss"])

  with jax.set_mesh(tr.mesh), activation_sharding(tr.mesh, tr.rules):
    dt = timed(one, steps, warmup)
  return batch["inputs"].size / dt, dt


def layer_tokens_per_s(mode: str, steps, warmup) -> tuple[float, float]:
  import jax
  import jax.numpy as jnp
  from flax import nnx
  from maxtext_like.models import ModelSpec
  from maxtext_like.models.moe import MoeBlock, MoeSpec, dense_reference

  moe = MoeSpec(num_experts=8, num_experts_per_tok=2, mlp_dim=512, norm_topk_prob=True,
                sparse_matmul=mode != "capacity", capacity_factor=1.25 if mode == "capacity" else -1.0)
  blk = MoeBlock(ModelSpec(decoder_block="mixtral", emb_dim=256, moe=moe).mlp_spec, moe, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(blk)
  x = jax.random.normal(jax.random.key(0), (4, 256, 256))

  def loss(p, x):
    b = nnx.merge(graphdef, p)
    return jnp.mean(jnp.square(dense_reference(b, x) if mode == "dense" else b(x)))

  f = jax.jit(jax.grad(loss, argnums=(0, 1)))
  dt = timed(lambda: jax.block_until_ready(f(params, x)), steps, warmup)
  return x.shape[0] * x.shape[1] / dt, dt


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("overrides", nargs="*")
  args = p.parse_args(argv)
  print("| training step (4 layers, 8 experts top-2, seq 256 x batch 4, 1 device) | tokens/s | step ms |")
  print("|---|---|---|")
  from maxtext_like.models import moe as moe_lib
  for name, (mode, impl) in MODES.items():
    moe_lib.GMM_IMPL = impl
    tps, dt = train_tokens_per_s([*mode, *args.overrides], args.steps, args.warmup)
    print(f"| {name} | {tps:,.0f} | {dt * 1e3:.0f} |", flush=True)
  print()
  print("| MoE layer alone, forward + backward ([4, 256, 256], 8 experts top-2, F 512) | tokens/s | ms |")
  print("|---|---|---|")
  for mode, impl, label in (("dropless", "blocked", "dropless, blocked grouped matmul"),
                            ("dropless", "ragged_dot", "dropless, jax.lax.ragged_dot"),
                            ("capacity", None, "capacity 1.25 (einsum)"),
                            ("dense", None, "dense reference (all 8 experts on every token)")):
    moe_lib.GMM_IMPL = impl
    tps, dt = layer_tokens_per_s(mode, args.steps, args.warmup)
    print(f"| {label} | {tps:,.0f} | {dt * 1e3:.1f} |", flush=True)


if __name__ == "__main__":
  main()
