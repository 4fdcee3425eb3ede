"""Where metrics go: a compact stdout line with ETA, JSONL (`metrics_file`), TensorBoard, and a loss-curve PNG."""

from __future__ import annotations

import json
import os
import sys
import time


class MetricsWriter:
  def __init__(self, *, metrics_file: str | None, tensorboard_dir: str | None, total_steps: int, is_primary: bool = True):
    self.total_steps = total_steps
    self.is_primary = is_primary
    self.history: list[dict] = []
    self._jsonl = None
    self._tb = None
    self._start = time.perf_counter()
    if not is_primary:
      return
    if metrics_file:
      os.makedirs(os.path.dirname(os.path.abspath(metrics_file)), exist_ok=True)
      self._jsonl = open(metrics_file, "a")
    if tensorboard_dir:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(tensorboard_dir)

  def write(self, step: int, metrics: dict, *, eta_s: float | None = None) -> None:
    record = {"step": step, **{k: (float(v) if not isinstance(v, (str, int)) else v) for k, v in metrics.items()}}
    self.history.append(record)
    if not self.is_primary:
      return
    if self._jsonl:
      self._jsonl.write(json.dumps(record) + "\n")
      self._jsonl.flush()
    if self._tb:
      for k, v in record.items():
        if k != "step" and isinstance(v, (int, float)):
          self._tb.add_scalar(k, v, step)
      self._tb.flush()
    line = f"step {step:>6}/{self.total_steps}"
    if "loss" in record:
      line += f" | loss {record['loss']:.4f}"
    if "eval_loss" in record:
      line += f" | eval_loss {record['eval_loss']:.4f}"
    if "moe_lb_loss" in record:  # MoE load-balance loss (included in loss)
      line += f" | moe_lb_loss {record['moe_lb_loss']:.4f}"
    if "moe_max_expert_load" in record:  # busiest expert's token share x num_experts (1 = balanced)
      line += f" | max expert load {record['moe_max_expert_load']:.2f}x"
    for k, fmt in (("rewards/margin", ".3f"), ("rewards/accuracy", ".2f"),  # DPO; all its metrics go to JSONL/TensorBoard
                   ("learning_rate", ".2e"), ("grad_norm", ".3f"), ("step_time_s", ".3f"), ("tokens_per_s", ",.0f"),
                   ("tflops_per_device", ".3f"), ("mfu", ".1%")):
      if k in record:
        line += f" | {k} {record[k]:{fmt}}"
    if eta_s is not None:
      line += f" | eta {int(eta_s) // 60}m{int(eta_s) % 60:02d}s"
    print(line, file=sys.stdout, flush=True)

  def close(self, png_path: str | None = None) -> None:
    if self._jsonl:
      self._jsonl.close()
    if self._tb:
      self._tb.close()
    if png_path and self.is_primary:
      save_loss_curve(self.history, png_path)


def save_loss_curve(history: list[dict], path: str) -> None:
  points = [(r["step"], r["loss"]) for r in history if "loss" in r]
  evals = [(r["step"], r["eval_loss"]) for r in history if "eval_loss" in r]
  if not points:
    return
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  ax.plot(*zip(*points), label="train loss")
  if evals:
    ax.plot(*zip(*evals), "o-", label="eval loss")
  ax.set_xlabel("step")
  ax.set_ylabel("loss")
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)
