"""Test-wide setup: 8 fake CPU devices, no hub access, and no silent skips; the shared test libraries here
(hf_parity_lib, parity_cases) import from every folder whatever pytest's import mode."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
if "--xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

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
