"""Where a run's wall time goes, measured locally: productive steps versus compilation, data loading,
checkpointing, evaluation and steps lost to a restart (goodput); slow-step warnings; the early ETA line.

Each run of a `run_name` keeps a small JSON record in `<run_dir>/goodput/` (rewritten at most once a second, so a
killed run leaves at most a second unrecorded); the next run reads them to count the steps it re-does after
restarting from an older checkpoint, and the summary covers this run and every earlier run of the same name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import os
import statistics
import time

BUCKETS = ("compile", "data", "checkpoint", "eval", "profile", "nn_metrics")
ETA_AFTER_STEPS = 3  # steps after the first (compiling) one before the expected duration is printed
SLOW_FACTOR = 2.0  # a step slower than this multiple of the median step is reported (monitor_step_time_deviation)


@dataclasses.dataclass
class RunRecord:
  """One process run of a run_name: which steps it did and where its wall time went (persisted as JSON)."""
  started_at: float
  start_step: int
  last_step: int  # steps completed: the next step to run
  updated_at: float
  productive_s: float = 0.0
  buckets: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(BUCKETS, 0.0))

  @property
  def wall_s(self) -> float:
    return self.updated_at - self.started_at

  @property
  def step_s(self) -> float:
    n = self.last_step - self.start_step
    return self.productive_s / n if n > 0 else 0.0


def summarize(records: list[RunRecord]) -> dict:
  """Goodput over runs in start order: a run's steps beyond where the next run restarted were lost (re-done);
  time between one run's last record and the next run's start counts as downtime."""
  records = sorted(records, key=lambda r: r.started_at)
  wall = sum(r.wall_s for r in records)
  productive = sum(r.productive_s for r in records)
  lost_steps, lost_s, down_s = 0, 0.0, 0.0
  for prev, nxt in zip(records, records[1:]):
    redo = max(0, prev.last_step - nxt.start_step)
    lost_steps += redo
    lost_s += redo * prev.step_s
    down_s += max(0.0, nxt.started_at - prev.updated_at)
  buckets = {b: sum(r.buckets.get(b, 0.0) for r in records) for b in BUCKETS}
  total = wall + down_s
  good = productive - lost_s
  other = wall - productive - sum(buckets.values())
  return {"runs": len(records), "wall_s": total, "goodput": good / total if total > 0 else 0.0,
          "productive_s": good, "lost_steps": lost_steps, "lost_s": lost_s, "downtime_s": down_s,
          **{f"{b}_s": v for b, v in buckets.items()}, "startup_and_other_s": max(other, 0.0)}


def format_summary(s: dict, title: str) -> str:
  rows = [("productive steps", s["productive_s"]), ("compilation", s["compile_s"]), ("data loading", s["data_s"]),
          ("checkpointing", s["checkpoint_s"]), ("evaluation", s["eval_s"]), ("starting/stopping profiles", s["profile_s"]),
          ("record_internal_nn_metrics probes", s["nn_metrics_s"]),
          (f"lost steps (re-done after a restart: {s['lost_steps']})", s["lost_s"]),
          ("startup and other", s["startup_and_other_s"])]
  if s["runs"] > 1:
    rows.append(("between runs (down)", s["downtime_s"]))
  lines = [f"{title}: goodput {s['goodput']:.1%} of {s['wall_s']:.1f} s"]
  lines += [f"  {name:<45} {v:9.1f} s  {v / s['wall_s']:6.1%}" if s["wall_s"] > 0 else f"  {name}" for name, v in rows]
  return "\n".join(lines)


class Goodput:
  """Times the phases of the loop. Always: per-step times and the early ETA line. With `record=True`
  (enable_goodput_recording) the run record is persisted and summarised; `metrics=True` (monitor_goodput) adds the
  goodput figures to the logged metrics; `deviation=True` (monitor_step_time_deviation) reports slow steps."""

  def __init__(self, run_dir: str, start_step: int, total_steps: int, *, record: bool, metrics: bool = False,
               metrics_interval_s: float = 30.0, deviation: bool = False, deviation_interval_s: float = 30.0,
               is_primary: bool = True, process_start: float | None = None, log=print):
    self.dir = os.path.join(run_dir, "goodput")
    self.total_steps, self.record, self.metrics, self.deviation = total_steps, record, metrics, deviation
    self.metrics_interval_s, self.deviation_interval_s = metrics_interval_s, deviation_interval_s
    self.is_primary, self.log = is_primary, log
    started = process_start if process_start is not None else _run_start()
    now = time.time()
    self.run = RunRecord(started_at=started, start_step=start_step, last_step=start_step, updated_at=now)
    self.previous = self._read_previous() if record else []
    self.step_times: dict[int, float] = {}
    self._last_finish = None
    self._buckets_at_finish = 0.0
    self._last_write = self._last_metrics = self._last_deviation_check = 0.0
    self._checked_upto = start_step
    self._eta_printed = False
    self.path = os.path.join(self.dir, f"run_{int(started * 1000)}_{os.getpid()}.json")

  # ---- timing hooks ----
  @contextlib.contextmanager
  def timed(self, bucket: str, when: bool = True):
    """Adds the block's wall time to a bucket (BUCKETS)."""
    t = time.perf_counter()
    try:
      yield
    finally:
      if when:
        self.run.buckets[bucket] += time.perf_counter() - t

  def step_started(self) -> None:
    """The loop dispatches its first step: the clock for step times starts here."""
    if self._last_finish is None:
      self._last_finish = time.perf_counter()
      self._buckets_at_finish = sum(self.run.buckets.values())

  def step_finished(self, step: int) -> None:
    """Step `step` has its result: its time is the wall time since the previous result minus timed phases."""
    now = time.perf_counter()
    spent = sum(self.run.buckets.values())
    dt = max(now - self._last_finish - (spent - self._buckets_at_finish), 0.0)
    self._last_finish, self._buckets_at_finish = now, spent
    self.step_times[step] = dt
    self.run.productive_s += dt
    self.run.last_step = step + 1
    self._maybe_eta(step)
    if self.deviation and time.time() - self._last_deviation_check >= self.deviation_interval_s:
      self.check_deviation()
    if self.record and time.time() - self._last_write >= 1.0:
      self.persist()

  # ---- outputs ----
  def _maybe_eta(self, step: int) -> None:
    start = self.run.start_step
    if self._eta_printed or step < start + ETA_AFTER_STEPS or not self.is_primary:
      return
    self._eta_printed = True
    steady = [self.step_times[s] for s in range(start + 1, step + 1) if s in self.step_times]
    per = statistics.median(steady) if steady else self.step_times[step]
    left = self.total_steps - step - 1
    first = self.step_times.get(start, 0.0) + self.run.buckets["compile"]
    self.log(f"expected: {left} more steps at ~{per:.3f} s/step = about {_duration(per * left)} "
             f"(first step with compilation {first:.1f} s; checkpoints and eval come on top)")

  def check_deviation(self) -> list[int]:
    """Steps since the last check slower than SLOW_FACTOR x the median step of the run (the first step excluded)."""
    self._last_deviation_check = time.time()
    steady = [t for s, t in self.step_times.items() if s > self.run.start_step]
    if len(steady) < 3:
      return []
    median = statistics.median(steady)
    slow = [s for s, t in sorted(self.step_times.items())
            if s >= self._checked_upto and s > self.run.start_step and t > SLOW_FACTOR * median]
    self._checked_upto = max(self.step_times) + 1
    if slow and self.is_primary:
      shown = ", ".join(f"{s} ({self.step_times[s]:.3f} s)" for s in slow[:10])
      self.log(f"step time deviation: {len(slow)} step(s) slower than {SLOW_FACTOR:g}x the median {median:.3f} s: "
               f"{shown}{' ...' if len(slow) > 10 else ''}")
    return slow

  def metrics_due(self) -> dict:
    """Goodput figures for the metrics sinks (monitor_goodput), at most every goodput_upload_interval_seconds."""
    if not self.metrics or time.time() - self._last_metrics < self.metrics_interval_s:
      return {}
    self._last_metrics = time.time()
    s = self.summary(current_only=True)
    return {"goodput": s["goodput"], "badput_compile_s": s["compile_s"], "badput_data_s": s["data_s"],
            "badput_checkpoint_s": s["checkpoint_s"], "badput_eval_s": s["eval_s"]}

  def summary(self, *, current_only: bool = False) -> dict:
    self.run.updated_at = time.time()
    return summarize([self.run] if current_only else [*self.previous, self.run])

  def persist(self) -> None:
    if not self.is_primary:
      return
    self._last_write = time.time()
    self.run.updated_at = self._last_write
    os.makedirs(self.dir, exist_ok=True)
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(dataclasses.asdict(self.run), f)
    os.replace(tmp, self.path)

  def finish(self) -> str:
    """Persists the record and returns the end-of-run summary ('' without enable_goodput_recording)."""
    if self.deviation:
      self.check_deviation()
    if not self.record:
      return ""
    self.persist()
    text = format_summary(self.summary(current_only=True), "goodput of this run")
    if self.previous:
      text += "\n" + format_summary(self.summary(), f"goodput across {len(self.previous) + 1} runs of this run_name")
    return text

  def _read_previous(self) -> list[RunRecord]:
    out = []
    for path in sorted(glob.glob(os.path.join(self.dir, "run_*.json"))):
      try:
        with open(path) as f:
          out.append(RunRecord(**json.load(f)))
      except (OSError, ValueError, TypeError):
        continue  # a record cut short by a crash: that run's time is unknown
    return out


_STARTED = []  # runs started in this process


def _run_start() -> float:
  """When this run started: the process's start for its first run (startup counts in the goodput denominator),
  now for a later run in the same process."""
  _STARTED.append(time.time())
  if len(_STARTED) > 1:
    return _STARTED[-1]
  try:
    import psutil
    return psutil.Process().create_time()
  except Exception:  # noqa: BLE001 - psutil missing or restricted: count from now
    return _STARTED[-1]


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  if seconds >= 3600:
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
  return f"{seconds // 60}m{seconds % 60:02d}s"
