"""The loop's observability hooks in one object: profiler windows, dumps, goodput and step timing.

The loop calls `before_step`, `data()`, `dispatch(step)`, `finished(step)`, `phase(name)` and `close(state)`; each
feature reads its own config keys (debug: profiler and dumps; metrics: goodput and step-time deviation).
"""

from __future__ import annotations

import contextlib
import os

import jax

from maxtext_like.training.goodput import Goodput
from maxtext_like.training.profiling import Dumps, Profiler


class Observers:
  def __init__(self, cfg, run_dir: str, start_step: int, end_step: int, log=print):
    m, primary = cfg.metrics, jax.process_index() == 0
    self.log = log if primary else (lambda *_: None)
    self.start = start_step
    self.profiler = Profiler(cfg.debug, run_dir, start_step, end_step, log=self.log)
    self.dumps = Dumps(cfg.debug, start_step, log=self.log)
    self.goodput = Goodput(run_dir, start_step, end_step, record=m.enable_goodput_recording, metrics=m.monitor_goodput,
                           metrics_interval_s=m.goodput_upload_interval_seconds,
                           deviation=m.monitor_step_time_deviation,
                           deviation_interval_s=m.step_deviation_interval_seconds, is_primary=primary, log=self.log)

  def before_step(self, step: int, state, jitted=None, batch=None) -> None:
    """Profile window edges, then (at the dump step) the HLO / jaxpr dumps, counted as compilation time."""
    with self.goodput.timed("profile"):
      self.profiler.before_step(step, state)
    if jitted is not None:
      with self.goodput.timed("compile", self.dumps.wanted and step == self.dumps.step):
        self.dumps.maybe_dump(step, jitted, state, batch)

  def data(self):
    return self.goodput.timed("data")

  def phase(self, name: str):
    """'checkpoint', 'eval' or 'nn_metrics' time."""
    return self.goodput.timed(name)

  @contextlib.contextmanager
  def dispatch(self, step: int):
    """Around the train step call: the first call compiles; the profiler's step annotation."""
    self.goodput.step_started()
    with self.goodput.timed("compile", step == self.start), self.profiler.annotate(step):
      yield

  def finished(self, step: int) -> None:
    self.goodput.step_finished(step)

  def metrics(self) -> dict:
    """Goodput figures due for the metrics sinks (monitor_goodput)."""
    return self.goodput.metrics_due()

  def close(self, state) -> dict:
    """Stops profiling; prints what was written and the goodput summary; returns both for tests."""
    with self.goodput.timed("profile"):
      traces = self.profiler.close(state)
    summary = self.goodput.finish()
    written = [*traces, *self.dumps.written]
    if written:
      self.log("written by the profiler and dumps:\n  " + "\n  ".join(_by_directory(written)))
    if summary:
      self.log(summary)
    return {"traces": traces, "dumps": list(self.dumps.written), "goodput": summary}


def _by_directory(paths: list[str], shown: int = 3) -> list[str]:
  """One line per directory: its file count and the first few names (an HLO dump has hundreds of files)."""
  groups: dict[str, list[str]] = {}
  for p in paths:
    groups.setdefault(os.path.dirname(p), []).append(os.path.basename(p))
  return [f"{d}/ ({len(names)} files): {', '.join(sorted(names)[:shown])}{', ...' if len(names) > shown else ''}"
          for d, names in groups.items()]
