"""Profiles, HLO/jaxpr dumps, goodput (with a restart that re-does steps), step-time deviation, the early ETA line,
the CPU peak-FLOP/s probe and log_config, from short CPU runs checked by content."""

import glob
import gzip
import json
import os
import socket

import pytest

from maxtext_like.training import flops
from maxtext_like.training.goodput import Goodput, RunRecord, summarize
from maxtext_like.training.loop import Trainer, changed_keys_summary
from maxtext_like.training.profiling import Profiler, parse_xla_flags, profile_windows

OBSERVED = ["steps=6", "learning_rate_schedule_steps=10", "log_period=3", "checkpoint_period=4",
            "save_checkpoint_on_completion=false", "per_device_batch_size=1", "dataset_type=synthetic",
            "profiler=xplane", "skip_first_n_steps_for_profiler=1", "profiler_steps=1", "profile_periodically_period=3",
            "dump_hlo=true", "dump_jaxpr=true", "enable_goodput_recording=true", "monitor_goodput=true",
            "goodput_upload_interval_seconds=0", "record_internal_nn_metrics=1"]


@pytest.fixture(scope="module")
def runs(tiny_cfg_module, tmp_path_factory):
  """Run 1: 6 steps, checkpoint at 4, profiled and dumped. Run 2 (same run_name, steps=8) restarts from step 4,
  re-doing steps 4 and 5."""
  d = tmp_path_factory.mktemp("dumps")
  dirs = [f"dump_hlo_local_dir={d}/hlo", f"dump_jaxpr_local_dir={d}/jaxpr", f"metrics_file={d}/metrics.jsonl"]
  out = []
  for steps in (6, 8):
    cfg = tiny_cfg_module(*OBSERVED, *dirs, f"steps={steps}")
    tr = Trainer(cfg)
    result = tr.run()
    out.append((cfg, tr, result))
  return out


def test_profile_windows_are_traced_and_readable(runs):
  cfg, tr, _ = runs[0]
  assert profile_windows(1, 1, 3, 6) == [(1, 2), (4, 5)]
  traces = tr.observed["traces"]
  windows = sorted({p.split(os.sep + "profile" + os.sep)[1].split(os.sep)[0] for p in traces})
  assert windows == ["step_1", "step_4"]
  assert any(p.endswith(".xplane.pb") and os.path.getsize(p) > 0 for p in traces)
  perfetto = [p for p in traces if p.endswith("perfetto_trace.json.gz")]
  events = json.loads(gzip.open(perfetto[0]).read())
  names = {e.get("name", "") for e in (events["traceEvents"] if isinstance(events, dict) else events)}
  assert any("train_step" in n for n in names), sorted(names)[:30]


def test_hlo_and_jaxpr_dumps_hold_the_train_step(runs):
  cfg, tr, _ = runs[0]
  dumps = tr.observed["dumps"]
  jaxpr = [p for p in dumps if p.endswith(".jaxpr.txt")]
  assert len(jaxpr) == 1 and "dot_general" in open(jaxpr[0]).read()
  hlo = [p for p in dumps if p.endswith("after_optimizations.txt")]
  assert hlo and all("jit_train_step" in os.path.basename(p) for p in dumps if p not in jaxpr)
  assert "HloModule jit_train_step" in open(hlo[0]).read()
  assert parse_xla_flags("--xla_dump_hlo_as_proto --xla_dump_hlo_pass_re=.* --xla_dump_max_hlo_modules=3 --a=false") \
      == {"xla_dump_hlo_as_proto": True, "xla_dump_hlo_pass_re": ".*", "xla_dump_max_hlo_modules": 3, "a": False}


def test_goodput_per_run_across_restart_and_in_metrics(runs, capsys):
  (cfg1, tr1, _), (cfg2, tr2, res2) = runs
  first = tr1.observed["goodput"]
  assert first.startswith("goodput of this run: goodput ") and "compilation" in first and "lost steps (re-done after a restart: 0)" in first
  second = tr2.observed["goodput"]
  assert "goodput across 2 runs of this run_name" in second
  assert "lost steps (re-done after a restart: 2)" in second.split("across")[1]
  records = sorted(glob.glob(os.path.join(tr2.run_dir, "goodput", "run_*.json")))
  assert [json.load(open(p))["start_step"] for p in records] == [0, 4]
  logged = [json.loads(l) for l in open(cfg2.metrics.metrics_file)]
  assert all(0 < r["goodput"] < 1 and r["badput_compile_s"] > 0 for r in logged)


def test_internal_nn_metrics_per_layer_at_log_steps(runs):
  cfg, _, result = runs[0]
  logged = [r for r in result.history if "loss" in r]
  assert [r["step"] for r in logged] == [3, 6]
  for r in logged:
    for i in range(2):  # two decoder layers: each one's input activations, gradient and parameter norms
      assert r[f"nn/layer_{i}/grad_norm"] > 0 and r[f"nn/layer_{i}/param_norm"] > 0
      assert 0.5 < r[f"nn/layer_{i}/activation_stdev"] < 10 and 0 <= r[f"nn/layer_{i}/activation_fraction_zero"] < 0.5
    assert "nn/layer_2/grad_norm" not in r
  assert logged[0]["nn/layer_0/param_norm"] != logged[1]["nn/layer_0/param_norm"]  # measured on the current state


def test_internal_nn_metrics_in_the_looped_layout(tiny_cfg):
  """Unscanned layers (decoder.layers.<i>): the same per-layer figures as the scanned run above."""
  import jax
  from maxtext_like.models.sharding import under_activation_sharding
  from maxtext_like.training import nn_metrics
  from maxtext_like.training.loop import to_global
  tr = Trainer(tiny_cfg("per_device_batch_size=1", "dataset_type=synthetic", "enable_checkpointing=false",
                        "scan_layers=false"))
  state, _ = tr.initial_state()
  probe = nn_metrics.make_probe(tr.layout.graphdef, tr.spec, 0.0,
                                wrap=lambda f: under_activation_sharding(f, tr.mesh, tr.rules))
  with jax.set_mesh(tr.mesh):
    m = nn_metrics.record(probe, state, to_global(next(tr.data), tr.batch_sharding))
  assert sorted(m) == sorted(f"nn/layer_{i}/{k}" for i in range(2) for k in (
      "activation_mean", "activation_stdev", "activation_fraction_zero", "grad_norm", "param_norm"))
  assert all(v > 0 for k, v in m.items() if k.endswith("_norm"))


def test_eta_line_comes_after_the_first_steps(tiny_cfg, capsys):
  Trainer(tiny_cfg("steps=6", "per_device_batch_size=1", "dataset_type=synthetic", "enable_checkpointing=false")).run()
  out = capsys.readouterr().out
  eta = [l for l in out.splitlines() if l.startswith("expected: ")]
  assert len(eta) == 1 and "2 more steps at ~" in eta[0], out
  assert out.index("expected: ") < out.index("step      6/6")


def test_summary_counts_lost_steps_and_downtime():
  a = RunRecord(started_at=0.0, start_step=0, last_step=10, updated_at=100.0, productive_s=50.0,
                buckets={"compile": 20.0, "data": 5.0, "checkpoint": 5.0, "eval": 0.0})
  b = RunRecord(started_at=120.0, start_step=6, last_step=12, updated_at=160.0, productive_s=30.0,
                buckets={"compile": 5.0, "data": 1.0, "checkpoint": 1.0, "eval": 0.0})
  s = summarize([b, a])
  assert s["lost_steps"] == 4 and s["lost_s"] == pytest.approx(20.0)  # 4 of run a's 5 s steps were re-done
  assert s["downtime_s"] == pytest.approx(20.0) and s["wall_s"] == pytest.approx(160.0)
  assert s["goodput"] == pytest.approx((80.0 - 20.0) / 160.0)


def test_step_time_deviation_names_slow_steps(tmp_path):
  lines = []
  g = Goodput(str(tmp_path), 0, 20, record=False, deviation=True, deviation_interval_s=1e9, log=lines.append)
  g.step_times = {0: 9.0, **{s: 0.1 for s in range(1, 10)}, 7: 0.5}
  assert g.check_deviation() == [7]
  assert "step time deviation: 1 step(s)" in lines[0] and "7 (0.500 s)" in lines[0]
  g.step_times[10] = 0.1
  assert g.check_deviation() == []  # steps already reported are not reported again


def test_live_profiler_server_listens(tiny_cfg, tmp_path):
  import portpicker
  port = portpicker.pick_unused_port()
  lines = []
  cfg = tiny_cfg("enable_jax_profiler=true", f"jax_profiler_port={port}")
  p = Profiler(cfg.debug, str(tmp_path), 0, 1, log=lines.append)
  try:
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
  finally:
    p.close(None)
  assert f"port {port}" in lines[0]


def test_cpu_peak_probe_is_robust(tmp_path, monkeypatch):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  figures = iter([40e9, 60e9, 50e9])  # a busy machine: the best of three probes is kept
  peak, how = flops.cpu_peak("cpu", probe=lambda **_: next(figures), now=lambda: 1000.0, boot_time=lambda: 0.0)
  assert peak == 60e9 and "measured now, best of 3" in how
  peak, how = flops.cpu_peak("cpu", probe=lambda **_: 58e9, boot_time=lambda: 0.0)
  assert peak == 60e9 and "cached" in how and "checked now (58.0 GFLOP/s)" in how
  figures = iter([80e9, 70e9, 75e9, 72e9])  # a quick probe clearly beats the cache: re-measured
  peak, how = flops.cpu_peak("cpu", probe=lambda **_: next(figures), now=lambda: 2000.0, boot_time=lambda: 0.0)
  assert peak == 75e9 and "beat the cached 60.0 GFLOP/s" in how
  figures = iter([75e9, 65e9, 66e9, 64e9])  # cache written before this machine booted: re-measured
  peak, how = flops.cpu_peak("cpu", probe=lambda **_: next(figures), boot_time=lambda: 5000.0)
  assert peak == 66e9 and "older than this machine's boot" in how


def test_log_config_shows_only_real_differences(tiny_cfg):
  text = changed_keys_summary(tiny_cfg())
  assert "logical_axis_rules" not in text and "base_emb_dim = 64" in text
  assert "logical_axis_rules" in changed_keys_summary(tiny_cfg('logical_axis_rules=[["vocab", ["tensor"]]]'))


def test_profiler_keys_are_checked(tiny_cfg):
  from maxtext_like.config import ConfigError
  with pytest.raises(ConfigError, match="profile_periodically_period.*at least profiler_steps"):
    tiny_cfg("profiler=xplane", "profiler_steps=5", "profile_periodically_period=2")
  with pytest.raises(ConfigError, match="jax_profiler_port"):
    tiny_cfg("enable_jax_profiler=true", "jax_profiler_port=0")
