"""Trainable parameters, optimizer-state and frozen-base bytes: full fine-tuning vs LoRA vs QLoRA (nf4 base).

Counted from the train state the Trainer builds (training/state.py, training/lora_train.py) under `jax.eval_shape`,
so nothing is allocated and any model size works; optimizer state is adamw's (two moments per trained parameter,
in the parameter's dtype unless mu_dtype says otherwise).

  .venv/bin/python benchmarks/lora_memory.py                                  # the default model, ranks 8 and 64
  .venv/bin/python benchmarks/lora_memory.py --ranks 16 model_name=llama3.1-8b
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
from flax import nnx  # noqa: E402

from maxtext_like.config import load_config  # noqa: E402
from maxtext_like.models import build_model, lora  # noqa: E402
from maxtext_like.models.ptq import tree_bytes  # noqa: E402
from maxtext_like.runtime.model_spec import model_spec  # noqa: E402
from maxtext_like.training.schedules import make_optimizer  # noqa: E402

MiB = 1024**2


def _count(tree) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(tree))


def measure(cfg) -> dict:
  """{trainable, opt_bytes, frozen_bytes} of the run `cfg` describes, from shapes only."""
  spec = model_spec(cfg)
  lspec = lora.lora_spec(cfg.finetune)
  if lspec is None:
    params = nnx.state(nnx.eval_shape(lambda: build_model(spec, nnx.Rngs(0))), nnx.Param)
    frozen = {}
  else:
    model = nnx.eval_shape(lambda: lora.lora_model(spec, lspec, jax.random.PRNGKey(0)))
    params = nnx.state(model, nnx.LoRAParam)
    frozen = nnx.filter_state(nnx.state(model, nnx.Not(nnx.LoRAParam)), nnx.Param)
  opt, _ = make_optimizer(cfg.optimizer, cfg.derived.learning_rate_schedule_steps, params)
  opt_state = jax.eval_shape(opt.init, params)
  return {"trainable": _count(params), "param_bytes": tree_bytes(params), "opt_bytes": tree_bytes(opt_state),
          "frozen_bytes": tree_bytes(frozen)}


def main(argv: list[str] | None = None) -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--ranks", default="8,64")
  args, rest = ap.parse_known_args(argv)
  base = ["base.yml", *rest]
  rows = [("full fine-tuning", measure(load_config(base, env={})))]
  for r in (int(x) for x in args.ranks.split(",")):
    lk = ["enable_lora=true", f"lora_rank={r}", f"lora_alpha={2 * r}"]
    rows.append((f"LoRA r={r}", measure(load_config([*base, *lk], env={}))))
    rows.append((f"QLoRA r={r} (nf4 base, tile 64)", measure(load_config(
        [*base, *lk, "lora_weight_qtype=nf4", "lora_tile_size=64"], env={}))))
  full = rows[0][1]
  name = load_config(base, env={}).flat()["model_name"]
  print(f"model: {name}; adamw; bytes in each tensor's own dtype (int4/nf4 "
        "packed at half a byte)\n")
  print("| run | trainable params | trained weights MiB | optimizer state MiB | vs full | frozen base MiB |")
  print("|---|---:|---:|---:|---:|---:|")
  for name, m in rows:
    print(f"| {name} | {m['trainable']:,} | {m['param_bytes'] / MiB:.2f} | {m['opt_bytes'] / MiB:.2f} | "
          f"{m['opt_bytes'] / full['opt_bytes']:.2%} | {m['frozen_bytes'] / MiB:.2f} |")


if __name__ == "__main__":
  main()
