"""Test-wide setup: 8 fake CPU devices, no hub access, and no silent skips; the shared test libraries here
(hf_parity_lib, parity_cases) import from every folder whatever pytest's import mode."""

import atexit
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
if "--xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
# Test programs are tiny: XLA:CPU backend (LLVM) optimisations cost more compile time than they save on them;
# the assertions are unchanged. Subprocess tests pass this flag on to the processes they start.
if "--xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=0"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# A persistent compilation cache shared by this session and the subprocesses it starts (they inherit the environment):
# many tests compile the same tiny programs in fresh Trainers or fresh processes. Always a new, empty directory per
# session, so a run never reuses executables from an earlier run or another checkout; every compile is cached
# (thresholds 0), and a size limit turns on jax's file lock, so concurrent processes (the two-process training test)
# never read a half-written entry.
_CACHE = {"JAX_COMPILATION_CACHE_DIR": tempfile.mkdtemp(prefix="maxtext_like_test_jax_cache_"),
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
          "JAX_COMPILATION_CACHE_MAX_SIZE": str(8 << 30)}
atexit.register(shutil.rmtree, _CACHE["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.update(_CACHE)
if "jax" in sys.modules:  # imported before this file (a plugin): jax read its environment already
  import jax
  for _k, _v in _CACHE.items():
    jax.config.update(_k.lower(), type(jax.config.values[_k.lower()])(_v))

# Skips that are expected on this kind of machine, by test node id substring -> reason. Anything else fails the run.
ALLOWED_SKIPS: dict[str, str] = {}


def pytest_sessionfinish(session, exitstatus):
  reporter = session.config.pluginmanager.get_plugin("terminalreporter")
  if reporter is None:
    return
  unexpected = [r for r in reporter.stats.get("skipped", []) if not any(s in r.nodeid for s in ALLOWED_SKIPS)]
  if unexpected and session.exitstatus == 0:
    reporter.write_line(f"FAILED: {len(unexpected)} unexpected skip(s): " + ", ".join(r.nodeid for r in unexpected), red=True)
    session.exitstatus = 1
