"""Training throughput of the jitted train step: tokens/s, TFLOP/s/device, MFU and step time (median over steps).

Default is the "probe config": emb 256, 4 layers, 4 query heads of 64 (kv 4), mlp 1024, vocab 32000, seq 256,
per-device batch 4, float32, synthetic data, 1 device, no checkpointing. Any `key=value` overrides pass through to
the config loader (later keys win over the probe defaults).

Run:
  .venv/bin/python benchmarks/train_throughput.py [--steps 20] [--warmup 3] [--devices N] [--json] [key=value ...]
  # 2 fake CPU devices with data parallelism:
  XLA_FLAGS=--xla_force_host_platform_device_count=2 .venv/bin/python benchmarks/train_throughput.py --devices 2 \
      ici_data_parallelism=2

Warm-up steps (which include compilation) are excluded; each timed step is `block_until_ready`-ed, so the numbers
are per-step latencies, and the reported step time is their median (medians because CPU runs are noisy).
MFU is against `peak_flops_per_device` (configured value, known accelerator, or on CPU the cached float32 matmul
probe of maxtext_like.training.flops).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings

# Trainer.run uses `with mesh:` too; its DeprecationWarning on jax 0.10 is noise here.
warnings.filterwarnings("ignore", message=".*with mesh.*", category=DeprecationWarning)

PROBE = ["override_model_config=true", "base_emb_dim=256", "base_num_query_heads=4", "base_num_kv_heads=4",
         "head_dim=64", "base_mlp_dim=1024", "base_num_decoder_layers=4", "vocab_size=32000", "max_target_length=256",
         "per_device_batch_size=4", "dtype=float32", "weight_dtype=float32", "dataset_type=synthetic",
         "enable_checkpointing=false", "enable_tensorboard=false", "log_period=1000000", "steps=1000000",
         "ici_fsdp_parallelism=1", "ici_data_parallelism=1", "ici_tensor_parallelism=1", "run_name=bench_train"]


def parse(argv: list[str]):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--steps", type=int, default=20, help="timed steps (median is reported)")
  p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation)")
  p.add_argument("--devices", type=int, default=1, help="use the first N jax devices")
  p.add_argument("--json", action="store_true", help="also print one JSON line with the results")
  p.add_argument("overrides", nargs="*", help="config key=value overrides")
  return p.parse_args(argv)


def run(args) -> dict:
  import jax
  from maxtext_like.config import load_config
  from maxtext_like.models.sharding import activation_sharding
  from maxtext_like.training.flops import peak_flops_per_device, train_flops_per_step
  from maxtext_like.training.loop import Trainer, to_global

  devices = jax.devices()[:args.devices]
  if len(devices) < args.devices:
    sys.exit(f"asked for {args.devices} devices, jax has {len(jax.devices())} "
             "(on CPU set XLA_FLAGS=--xla_force_host_platform_device_count=N)")
  cfg = load_config(["base.yml", "model_name=default", *PROBE, *args.overrides], env={})
  t0 = time.perf_counter()
  trainer = Trainer(cfg, devices=devices)
  state, _ = trainer.initial_state()
  build_s = time.perf_counter() - t0
  gbs = trainer.plan.global_batch_size_to_train_on
  seq = cfg.inference.max_target_length
  tokens_per_step = gbs * seq
  flops = train_flops_per_step(trainer.spec, gbs, seq, trainer.plan.gradient_accumulation_steps)
  dev = devices[0]
  peak, peak_how = peak_flops_per_device(cfg.mesh.peak_flops_per_device, getattr(dev, "device_kind", ""), dev.platform)

  times, compile_s, loss = [], 0.0, float("nan")
  with trainer.mesh, activation_sharding(trainer.mesh, trainer.rules):
    for i in range(args.warmup + args.steps):
      batch = to_global(next(trainer.data), trainer.batch_sharding)  # host data prep is outside the timed region
      jax.block_until_ready(batch)
      t = time.perf_counter()
      state, metrics = trainer.train_step(state, batch)
      jax.block_until_ready((state, metrics))
      dt = time.perf_counter() - t
      if i == 0:
        compile_s = dt
      if i >= args.warmup:
        times.append(dt)
    loss = float(metrics["loss"])
  step_s = statistics.median(times)
  n = len(devices)
  flat = cfg.flat()
  return {"overrides": " ".join(args.overrides) or "(probe config)", "devices": n, "global_batch": gbs, "seq": seq,
          "tokens_per_s": tokens_per_step / step_s, "tokens_per_s_per_device": tokens_per_step / step_s / n,
          "tflops_per_device": flops / step_s / n / 1e12, "mfu": flops / step_s / n / peak if peak > 0 else float("nan"),
          "step_s_median": step_s, "step_s_min": min(times), "step_s_max": max(times), "first_step_s": compile_s,
          "build_s": build_s, "peak_flops_per_device": peak, "peak_how": peak_how, "flops_per_step": flops,
          "final_loss": loss, "timed_steps": len(times), "remat_policy": flat.get("remat_policy"),
          "scan_layers": flat.get("scan_layers"), "attention": flat.get("attention")}


def table(r: dict) -> str:
  rows = [("config", f"{r['overrides']} (remat_policy={r['remat_policy']}, scan_layers={r['scan_layers']}, "
                     f"attention={r['attention']})"),
          ("devices x global batch x seq", f"{r['devices']} x {r['global_batch']} x {r['seq']}"),
          ("tokens/s", f"{r['tokens_per_s']:.0f}"),
          ("tokens/s/device", f"{r['tokens_per_s_per_device']:.0f}"),
          ("tokens/s at the fastest step", f"{r['tokens_per_s'] * r['step_s_median'] / r['step_s_min']:.0f}"),
          ("TFLOP/s/device", f"{r['tflops_per_device']:.4f}"),
          ("MFU", f"{100 * r['mfu']:.1f}% of {r['peak_flops_per_device'] / 1e9:.1f} GFLOP/s ({r['peak_how']})"),
          (f"step time, median of {r['timed_steps']}", f"{1000 * r['step_s_median']:.1f} ms "
                                                       f"(min {1000 * r['step_s_min']:.1f}, max {1000 * r['step_s_max']:.1f})"),
          ("first step (compile)", f"{r['first_step_s']:.2f} s"),
          ("final loss", f"{r['final_loss']:.4f}")]
  return "\n".join(["| metric | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def main(argv: list[str] | None = None) -> None:
  args = parse(sys.argv[1:] if argv is None else argv)
  r = run(args)
  print(table(r), flush=True)
  if args.json:
    print(json.dumps(r), flush=True)


if __name__ == "__main__":
  main()
