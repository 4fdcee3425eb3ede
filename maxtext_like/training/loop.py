"""The training run: build everything from the config, then a small loop around the pure jitted step.

Hooks (logging, NaN checks, eval, checkpointing, profiling) are small functions called from the loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from maxtext_like.config import Config
from maxtext_like.config.resolve import Plan, resolve
from maxtext_like.models import build_model
from maxtext_like.models.quantization import quant_spec
from maxtext_like.models.sharding import under_activation_sharding
from maxtext_like.runtime import checkpoints as reading
from maxtext_like.training import checkpointing as ckpt
from maxtext_like.training import lora_train
from maxtext_like.models.lora import abstract_adapters, lora_spec
from maxtext_like.training.data_source import make_iterator
from maxtext_like.training.flops import peak_flops_per_device, train_flops_per_step
from maxtext_like.training import nn_metrics
from maxtext_like.training.metrics_log import MetricsWriter
from maxtext_like.training.observers import Observers
from maxtext_like.runtime.model_spec import model_spec
from maxtext_like.training.schedules import make_optimizer
from maxtext_like.training.state import REFERENCE, batch_sharding, build_state_layout, make_mesh, sharding_report
from maxtext_like.training.step import StepOptions, make_eval_step, make_train_step


class TrainingAborted(RuntimeError):
  """NaN/Inf loss with abort_on_nan_loss / abort_on_inf_loss; saved checkpoints are kept."""


@dataclasses.dataclass
class RunResult:
  losses: dict[int, float]
  final_state: Any
  plan: Plan
  history: list[dict]
  run_dir: str


def config_record(cfg: Config) -> dict:
  """The resolved config as JSON-able data, saved with every checkpoint."""
  import json
  from maxtext_like.config.schema import MASKED, SECRET_KEYS
  flat = {k: (MASKED if k in SECRET_KEYS and v else v) for k, v in cfg.flat().items()}
  return json.loads(json.dumps({"flat": flat, "derived": cfg.derived.model_dump()}, default=str))


def to_global(batch: dict, sharding) -> dict:
  """This process's numpy batch -> global jax arrays laid out by `sharding`."""
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}


def check_hardware(hardware: str, backend: str) -> None:
  """`hardware` other than 'auto' must be what JAX found (gpu_multiprocess runs on the gpu backend)."""
  from maxtext_like.config import ConfigError, Problem
  want = {"gpu_multiprocess": "gpu"}.get(hardware, hardware)
  if hardware != "auto" and want != backend:
    raise ConfigError([Problem("hardware", f"says {hardware!r} but JAX's backend is {backend!r}", hardware,
                               allowed=f"'auto' or {backend!r}")])


def changed_keys_summary(cfg: Config) -> str:
  """The keys whose value differs from the shipped base.yml, with where each came from (log_config)."""
  from maxtext_like.config.loader import shipped_defaults
  defaults = shipped_defaults()
  from maxtext_like.config.schema import MASKED, SECRET_KEYS
  import json
  same = lambda a, b: json.dumps(a, default=str) == json.dumps(b, default=str)  # noqa: E731 - tuples == lists
  lines = [f"  {k} = {(MASKED if k in SECRET_KEYS else v)!r}  ({cfg.source(k)})" for k, v in sorted(cfg.flat().items())
           if not same(defaults.get(k), v)]
  return "config (differences from base.yml):\n" + "\n".join(lines)


def all_process_states(state: dict) -> list[dict]:
  """Every process's data-iterator state, in process order (gathered; orbax writes JSON from process 0 only)."""
  import json
  if jax.process_count() == 1:
    return [state]
  from jax.experimental import multihost_utils
  raw = np.frombuffer(json.dumps(state).encode(), np.uint8)
  lengths = np.asarray(multihost_utils.process_allgather(np.array([raw.size], np.int32))).reshape(-1)
  buf = np.zeros(int(lengths.max()), np.uint8)
  buf[:raw.size] = raw
  gathered = np.asarray(multihost_utils.process_allgather(buf)).reshape(len(lengths), -1)
  return [json.loads(bytes(gathered[i, :lengths[i]]).decode()) for i in range(len(lengths))]


class Trainer:
  """Holds what the loop needs; `run()` trains to `steps`."""

  def __init__(self, cfg: Config, devices: list | None = None, *, with_io: bool = True):
    self.cfg = cfg
    if cfg.tokenizer.use_chat_template and not (cfg.finetune.use_sft or cfg.finetune.use_dpo):
      from maxtext_like.data.errors import DataError
      raise DataError("use_chat_template=true renders conversations: for training, set use_sft=true (or use_dpo=true) "
                      "with conversation records; pretraining on plain documents would ignore it")
    check_hardware(cfg.mesh.hardware, jax.default_backend())
    self.devices = list(jax.devices() if devices is None else devices)
    self.plan = resolve(cfg, len(self.devices), num_slices=max(cfg.mesh.num_slices, 1))
    self.mesh = make_mesh(self.plan, self.devices)
    self.rules = [tuple(r) for r in cfg.mesh.logical_axis_rules]
    self.spec = model_spec(cfg, self.plan)  # pipelined over 'stage' when the plan has stages
    self.lora = lora_spec(cfg.finetune)  # LoRA / QLoRA: only the adapters are trained (training/lora_train.py)
    if self.lora is None:
      abs_params = nnx.state(nnx.eval_shape(lambda: build_model(self.spec, nnx.Rngs(0))), nnx.Param)
    else:
      abs_params = abstract_adapters(self.spec, self.lora)
    self.steps = cfg.derived.steps
    self.optimizer, self.schedule = make_optimizer(cfg.optimizer, cfg.derived.learning_rate_schedule_steps, abs_params)
    if self.lora is not None:
      self.layout = lora_train.build_lora_layout(self.spec, self.lora, self.optimizer, self.mesh, self.rules,
                                                 loss_window=cfg.optimizer.skip_step_interval)
    else:
      self.layout = build_state_layout(self.spec, self.optimizer, self.mesh, self.rules, loss_window=cfg.optimizer.skip_step_interval,
                                       offload_params=cfg.remat.parameter_memory_host_offload,
                                       offload_opt_state=cfg.remat.optimizer_memory_host_offload,
                                       quant=quant_spec(cfg.quantization), reference=cfg.finetune.use_dpo and cfg.finetune.dpo_algo == "dpo")
    self._report_sharding(abs_params)
    self.batch_sharding = batch_sharding(self.mesh, cfg.mesh.data_sharding)
    opts = StepOptions(grad_accum=self.plan.gradient_accumulation_steps, z_loss_multiplier=cfg.model.z_loss_multiplier,
                       skip_step_on_spikes=cfg.optimizer.skip_step_on_spikes,
                       skip_step_scaling_factor=cfg.optimizer.skip_step_scaling_factor,
                       deterministic=not (cfg.training.enable_dropout and cfg.training.dropout_rate > 0),
                       rows_to_train_on=self.plan.global_batch_size_to_train_on
                       if self.plan.global_batch_size_to_load != self.plan.global_batch_size_to_train_on else 0,
                       use_dpo=cfg.finetune.use_dpo, dpo_beta=cfg.finetune.dpo_beta,
                       dpo_label_smoothing=cfg.finetune.dpo_label_smoothing, dpo_algo=cfg.finetune.dpo_algo,
                       orpo_lambda=cfg.finetune.orpo_lambda)
    # The steps enter the activation-sharding context themselves (constraints never depend on the caller).
    step_fn = under_activation_sharding(make_train_step(self.layout.graphdef, self.optimizer, self.schedule, opts,
                                                        self.layout.compute_shardings), self.mesh, self.rules)
    self.train_step = jax.jit(step_fn, in_shardings=(self.layout.shardings, self.batch_sharding),
                              out_shardings=(self.layout.shardings, None), donate_argnums=0)
    if cfg.aot.compiled_trainstep_file and with_io:
      from maxtext_like.training.aot import load_compiled
      if not os.path.isfile(cfg.aot.compiled_trainstep_file):
        raise FileNotFoundError(f"compiled_trainstep_file {cfg.aot.compiled_trainstep_file} does not exist (write it with train_compile)")
      self.train_step = load_compiled(cfg.aot.compiled_trainstep_file, len(self.devices))
    self.eval_step = jax.jit(under_activation_sharding(make_eval_step(self.layout.graphdef, cfg.model.z_loss_multiplier, opts),
                                                       self.mesh, self.rules),
                             in_shardings=(self.layout.shardings, self.batch_sharding))
    self.run_dir = os.path.join(cfg.run.base_output_directory, cfg.derived.run_name)
    self.mngr = None
    if not with_io:  # ahead-of-time compile: no checkpoint directory, no data
      return
    if cfg.checkpointing.enable_checkpointing and cfg.checkpointing.enable_emergency_checkpoint:
      from maxtext_like.training.emergency import EmergencyManager
      self.mngr = EmergencyManager(cfg.checkpointing, cfg.derived.checkpoint_dir, self.mesh, self.layout.abstract)
    elif cfg.checkpointing.enable_checkpointing:
      self.mngr = ckpt.manager(cfg.derived.checkpoint_dir, period=cfg.checkpointing.checkpoint_period,
                               max_to_keep=cfg.checkpointing.max_num_checkpoints_to_keep,
                               async_save=cfg.checkpointing.async_checkpointing,
                               options=ckpt.Options.of(cfg.checkpointing))
    self.data = make_iterator(cfg, self.plan.global_batch_size_to_load, "train", jax.process_index(), jax.process_count())

  # ---- state ----
  def initial_state(self) -> tuple[Any, int]:
    if self.lora is not None:  # adapter-only checkpoints; the base from load_parameters_path
      return lora_train.initial_state(self)
    c = self.cfg.checkpointing
    with jax.set_mesh(self.mesh):
      if self.mngr is not None:
        restored = ckpt.restore_latest(self.mngr, self.layout.abstract)
        if restored is not None:
          state, data_state, step = restored
          self.data.set_state(self._own_data_state(data_state, step))
          print(f"resumed from {self.cfg.derived.checkpoint_dir}/{step}", flush=True)
          return state, step
      if c.load_full_state_path:
        state = reading.restore_from_path(c.load_full_state_path, self.layout.abstract, params_only=False)
        return state, int(state["step"])
      state = self.layout.init_fn(jax.random.PRNGKey(self.cfg.training.init_weights_seed))
      if c.load_parameters_path and c.source_checkpoint_layout == "safetensors":  # a Hugging Face directory
        from maxtext_like.training.hf_source import params_from_safetensors
        state["params"] = params_from_safetensors(self.cfg, self.spec, self.layout.abstract["params"])
      elif c.load_parameters_path:
        state["params"] = reading.restore_from_path(c.load_parameters_path, self.layout.abstract, params_only=True)
      if REFERENCE in state:  # DPO: the reference is the starting policy
        state[REFERENCE] = jax.tree.map(jnp.copy, state["params"])
      return state, 0

  def save(self, step: int, state, *, force: bool = False) -> None:
    if self.mngr is None:
      return
    with self.obs.phase("checkpoint") if self.obs is not None else contextlib.nullcontext():
      state = state if self.lora is None else lora_train.saved_part(state)  # LoRA: adapter-only checkpoints
      ckpt.save(self.mngr, step, state, {"train": all_process_states(self.data.get_state())}, config_record(self.cfg), force=force)

  def _own_data_state(self, data_state: dict, step: int) -> dict:
    """This process's iterator state; a different process count works only when every process saved the same state."""
    states = data_state["train"]
    n, me = jax.process_count(), jax.process_index()
    if len(states) == n:
      return states[me]
    if all(s == states[0] for s in states):
      return states[0]
    raise reading.CheckpointError(
        f"checkpoint {self.cfg.derived.checkpoint_dir}/{step} was written by {len(states)} processes and this run has {n}: "
        f"the position of dataset_type={self.cfg.dataset.dataset_type!r} is kept per process and cannot be re-split. "
        "Resume with the same number of processes (synthetic data resumes with any count).")

  # ---- hooks ----
  def _check_finite(self, step: int, loss: float) -> None:
    t = self.cfg.training
    if (math.isnan(loss) and t.abort_on_nan_loss) or (math.isinf(loss) and t.abort_on_inf_loss):
      raise TrainingAborted(f"loss is {loss} at step {step}; stopping (abort_on_nan_loss / abort_on_inf_loss). "
                            f"Checkpoints saved before this step are kept in {self.cfg.derived.checkpoint_dir}.")

  def evaluate(self, state) -> float:
    t = self.cfg.training
    it = make_iterator(self.cfg, self.plan.global_batch_size_to_eval_on, "eval", jax.process_index(), jax.process_count())
    total = count = 0.0
    for i, batch in enumerate(it):
      if 0 < t.eval_steps <= i:
        break
      out = self.eval_step(state, to_global(batch, self.batch_sharding))
      total += float(out["total"])
      count += float(out["count"])
    return total / max(count, 1.0)

  # ---- loop ----
  def run(self) -> RunResult:
    cfg = self.cfg
    if cfg.run.log_config and jax.process_index() == 0:
      print(changed_keys_summary(cfg), flush=True)
    state, start = self.initial_state()
    writer = MetricsWriter(metrics_file=cfg.metrics.metrics_file, total_steps=self.steps, is_primary=jax.process_index() == 0,
                           tensorboard_dir=cfg.derived.tensorboard_dir if cfg.metrics.enable_tensorboard else None)
    tokens_per_step = self.plan.global_batch_size_to_train_on * cfg.inference.max_target_length
    flops = train_flops_per_step(self.spec, self.plan.global_batch_size_to_train_on, cfg.inference.max_target_length)
    dev = self.devices[0]
    peak, peak_how = peak_flops_per_device(cfg.mesh.peak_flops_per_device, getattr(dev, "device_kind", ""), dev.platform)
    losses: dict[int, float] = {}
    pending = None  # (step, metrics) of the previous step, checked one step late so dispatch stays asynchronous
    last_log_t, last_log_step = time.perf_counter(), start
    self.obs = obs = Observers(cfg, self.run_dir, start, self.steps, log=lambda s: print(s, flush=True))
    nn_probe = nn_metrics.make_probe(self.layout.graphdef, self.spec, cfg.model.z_loss_multiplier,
                                     wrap=lambda f: under_activation_sharding(f, self.mesh, self.rules)) \
        if cfg.metrics.record_internal_nn_metrics else None
    try:
      with jax.set_mesh(self.mesh):
        for step in range(start, self.steps):
          with obs.data():
            batch = to_global(next(self.data), self.batch_sharding)
          obs.before_step(step, state, self.train_step, batch)
          with obs.dispatch(step):
            state, metrics = self.train_step(state, batch)
          if pending is not None:
            self._finish_step(*pending, losses)
          pending = (step, metrics)
          done = step + 1
          record = {}
          if done % cfg.training.log_period == 0 or done == self.steps:
            self._finish_step(*pending, losses)
            pending = None
            dt = (time.perf_counter() - last_log_t) / max(done - last_log_step, 1)  # the first interval includes compilation
            record = self._throughput_record(metrics, dt, tokens_per_step, flops, peak)
            if nn_probe is not None:  # record_internal_nn_metrics: per-layer activations and norms
              with obs.phase("nn_metrics"):
                record.update(nn_metrics.record(nn_probe, state, batch))
          if cfg.training.eval_interval > 0 and done % cfg.training.eval_interval == 0:
            with obs.phase("eval"):
              record["eval_loss"] = self.evaluate(state)
          if record:
            record.update(obs.metrics())
            writer.write(done, record, eta_s=record["step_time_s"] * (self.steps - done) if "step_time_s" in record else None)
            last_log_t, last_log_step = time.perf_counter(), done
          if self._reached_target(record):
            self.save(done, state, force=True)
            break
          if done % cfg.checkpointing.checkpoint_period == 0:
            self.save(done, state, force=True)
          elif ckpt.policy_save_due(self.mngr, done):
            self.save(done, state)
        if pending is not None:
          self._finish_step(*pending, losses)
        if cfg.checkpointing.save_checkpoint_on_completion and self.mngr is not None and losses and self.mngr.latest_step() != max(losses) + 1:
          self.save(max(losses) + 1, state, force=True)
    finally:
      if self.mngr is not None:
        with obs.phase("checkpoint"):
          self.mngr.wait_until_finished()
      self.observed = obs.close(state)
      writer.close(png_path=os.path.join(self.run_dir, "loss_curve.png"))
    if jax.process_index() == 0 and losses:
      print(f"done: {len(losses)} steps, final loss {losses[max(losses)]:.4f}; peak FLOP/s {peak:.3g} ({peak_how})", flush=True)
    return RunResult(losses=losses, final_state=state, plan=self.plan, history=writer.history, run_dir=self.run_dir)

  def _report_sharding(self, abs_params) -> None:
    """debug_sharding: every parameter's sharding. With several devices, a warning when more than
    sharding_tolerance of the parameters are stored whole on every device (as MaxText checks)."""
    if jax.process_index() != 0:
      return
    lines, replicated = sharding_report(abs_params, self.layout.shardings["params"])
    if self.cfg.run.debug_sharding:
      print(f"parameter shardings over mesh {dict(self.mesh.shape)}:\n  " + "\n  ".join(lines), flush=True)
    tolerance = self.cfg.mesh.sharding_tolerance
    if self.mesh.devices.size > 1 and replicated > tolerance:
      print(f"warning: {replicated:.1%} of the parameters are replicated on every device (sharding_tolerance="
            f"{tolerance}); debug_sharding=true lists each parameter's sharding", flush=True)

  def _throughput_record(self, metrics, dt: float, tokens_per_step: int, flops: float, peak: float) -> dict:
    """The logged metrics of one step: loss and optimizer figures, step time, tokens/s, TFLOP/s and MFU."""
    m = {k: float(v) for k, v in jax.device_get(metrics).items()}
    n = len(self.devices)
    record = {"loss": m["loss"], "learning_rate": m["learning_rate"], "grad_norm": m["grad_norm"], "step_time_s": dt,
              "tokens_per_s": tokens_per_step / dt, "tokens_per_s_per_device": tokens_per_step / dt / n,
              "tflops_per_device": flops / dt / n / 1e12, "skipped": m["skipped"]}
    if peak > 0:
      record["mfu"] = flops / dt / n / peak
    if "moe_lb_loss" in m:  # MoE load-balance loss, already included in "loss"
      record["moe_lb_loss"] = m["moe_lb_loss"]
    if "moe_max_expert_load" in m:  # the busiest expert's token share x num_experts (1 = balanced)
      record["moe_max_expert_load"] = m["moe_max_expert_load"]
    record.update({k: v for k, v in m.items() if k.startswith(("rewards/", "log_probs/"))})  # DPO (training/dpo.py)
    return record

  def _reached_target(self, record: dict) -> bool:
    target = self.cfg.training.target_eval_loss
    if "eval_loss" in record and target > 0 and record["eval_loss"] <= target:
      print(f"eval loss {record['eval_loss']:.4f} reached target_eval_loss {target}; stopping", flush=True)
      return True
    return False

  obs: Observers | None = None  # profiler, dumps, goodput of the running loop
  observed: dict | None = None  # what they wrote, after run()

  def _finish_step(self, step: int, metrics, losses: dict[int, float]) -> None:
    loss = float(metrics["loss"])
    losses[step] = loss
    if self.obs is not None:
      self.obs.finished(step)
    self._check_finite(step, loss)


def train(cfg: Config) -> RunResult:
  return Trainer(cfg).run()
