"""Seeing inside a run: xplane profiles of chosen steps, a live profiler server, and HLO / jaxpr dumps of the
train step, all written locally and listed at the end of the run.

Each profiled window lands in `<run_dir>/profile/step_<first step>/plugins/profile/<timestamp>/` as `*.xplane.pb`
(TensorBoard's profile plugin: `tensorboard --logdir <run_dir>/profile`) and `perfetto_trace.json.gz` (open in
ui.perfetto.dev).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shlex

import jax


def profile_windows(first: int, steps: int, period: int, end: int) -> list[tuple[int, int]]:
  """[start, stop) step ranges to trace: `steps` steps from `first`, and again every `period` steps when period > 0."""
  if steps <= 0 or first >= end:
    return []
  starts = range(first, end, period) if period > 0 else [first]
  return [(s, min(s + steps, end)) for s in starts]


class Profiler:
  """profiler=xplane windows (skip_first_n_steps_for_profiler, profiler_steps, profile_periodically_period,
  profile_cleanly, upload_all_profiler_results) and the live server (enable_jax_profiler, jax_profiler_port)."""

  def __init__(self, debug, run_dir: str, start_step: int, end_step: int, log=print):
    self.cfg, self.log = debug, log
    self.dir = os.path.join(run_dir, "profile")
    if debug.upload_all_profiler_results and jax.process_count() > 1:
      self.dir = os.path.join(self.dir, f"process_{jax.process_index()}")
    traces_here = debug.upload_all_profiler_results or jax.process_index() == 0
    self.windows = profile_windows(start_step + debug.skip_first_n_steps_for_profiler, debug.profiler_steps,
                                   debug.profile_periodically_period, end_step) if debug.profiler == "xplane" and traces_here else []
    self.active = False
    self.server = False
    if debug.enable_jax_profiler:
      jax.profiler.start_server(debug.jax_profiler_port)
      self.server = True
      log(f"live profiler server on port {debug.jax_profiler_port}: capture from TensorBoard's profile plugin "
          f"(Capture profile, localhost:{debug.jax_profiler_port}) or `python -m jax.collect_profile "
          f"{debug.jax_profiler_port} 2000` (both need the xprof package)")

  def before_step(self, step: int, state) -> None:
    """Starts or stops a trace at window edges (after the state is ready with profile_cleanly)."""
    if any(stop == step for _, stop in self.windows) and self.active:
      self._stop(state)
    if any(start == step for start, _ in self.windows) and not self.active:
      if self.cfg.profile_cleanly:
        jax.block_until_ready(state)
      # One directory per window: traces started within the same second would share jax's timestamped directory.
      jax.profiler.start_trace(os.path.join(self.dir, f"step_{step}"), create_perfetto_trace=True)
      self.active = True

  def annotate(self, step: int):
    """The step's trace annotation (TensorBoard's step view), unless hide_profiler_step_metric."""
    if not self.active or self.cfg.hide_profiler_step_metric:
      return contextlib.nullcontext()
    return jax.profiler.StepTraceAnnotation("train", step_num=step)

  def _stop(self, state) -> None:
    if self.cfg.profile_cleanly:
      jax.block_until_ready(state)
    jax.profiler.stop_trace()
    self.active = False

  def close(self, state) -> list[str]:
    """Stops a running trace and the server; the trace files written."""
    if self.active:
      self._stop(state)
    if self.server:
      jax.profiler.stop_server()
      self.server = False
    return sorted(glob.glob(os.path.join(self.dir, "step_*", "plugins", "profile", "*", "*")))


def parse_xla_flags(text: str) -> dict[str, object]:
  """'--xla_dump_hlo_as_proto --xla_dump_hlo_pass_re=.*' -> XLA compiler options for `Lowered.compile`."""
  out: dict[str, object] = {}
  for tok in shlex.split(text):
    name, eq, value = tok.lstrip("-").partition("=")
    if not eq:
      out[name] = True
    elif value.lower() in ("true", "false"):
      out[name] = value.lower() == "true"
    else:
      try:
        out[name] = int(value)
      except ValueError:
        out[name] = value
  return out


class Dumps:
  """dump_hlo (dump_step, dump_hlo_local_dir, dump_hlo_xla_flags, dump_hlo_module_name, dump_hlo_local_module_name)
  and dump_jaxpr (dump_jaxpr_local_dir): the train step as XLA compiles it and as JAX traces it, written once."""

  def __init__(self, debug, start_step: int, log=print):
    self.cfg, self.log = debug, log
    self.step = debug.dump_step if debug.dump_step >= 0 else start_step
    self.written: list[str] = []
    self.wanted = (debug.dump_hlo or debug.dump_jaxpr) and jax.process_index() == 0

  def maybe_dump(self, step: int, jitted, *args) -> None:
    """At the dump step: jaxpr from tracing, HLO from an extra compile with XLA's dump options."""
    if not self.wanted or step != self.step:
      return
    if not hasattr(jitted, "trace"):
      self.log("dump_hlo/dump_jaxpr: the train step was loaded compiled (compiled_trainstep_file); nothing to trace")
      return
    c = self.cfg
    if c.dump_jaxpr:
      os.makedirs(c.dump_jaxpr_local_dir, exist_ok=True)
      path = os.path.join(c.dump_jaxpr_local_dir, f"jit_train_step.step_{step}.jaxpr.txt")
      with open(path, "w") as f:
        f.write(str(jitted.trace(*args).jaxpr))
      self.written.append(path)
    if c.dump_hlo:
      before = set(glob.glob(os.path.join(c.dump_hlo_local_dir, "*")))
      options = {"xla_dump_to": c.dump_hlo_local_dir, "xla_dump_hlo_as_text": True,
                 "xla_dump_hlo_module_re": c.dump_hlo_module_name, **parse_xla_flags(c.dump_hlo_xla_flags)}
      os.makedirs(c.dump_hlo_local_dir, exist_ok=True)
      jitted.lower(*args).compile(compiler_options=options)
      new = sorted(set(glob.glob(os.path.join(c.dump_hlo_local_dir, "*"))) - before)
      keep = [p for p in new if c.dump_hlo_local_module_name in os.path.basename(p)]
      for p in set(new) - set(keep):  # dump_hlo_local_module_name: only matching modules stay on local disk
        if os.path.isfile(p):
          os.remove(p)
      self.written += keep
      if not keep:
        self.log(f"dump_hlo: no module matched dump_hlo_module_name={c.dump_hlo_module_name!r} and "
                 f"dump_hlo_local_module_name={c.dump_hlo_local_module_name!r} (the train step is 'jit_train_step')")
