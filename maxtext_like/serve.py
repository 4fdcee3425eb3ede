"""`python -m maxtext_like.serve base.yml [key=value ...] [--host 127.0.0.1] [--port 8000] [--metrics]
[--served-model-name NAME]`: an OpenAI-compatible HTTP server on the inference engine.

Parameters load as in decode (load_parameters_path, else the latest checkpoint of run_name, else the seeded init).
Routes: POST /v1/completions, POST /v1/chat/completions (streamed with "stream": true), GET /v1/models,
GET /health, and GET /metrics (Prometheus) with --metrics or prometheus_port=N (which also serves them on port N).
Concurrent requests share the engine's slots (per_device_batch_size of them). See docs/serving.md.
"""

from __future__ import annotations

import argparse
import sys

from maxtext_like.cli_common import HELP_FLAGS, run_entry_point


def _server_flags(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
  """The server's own flags; everything else is the config (base.yml and key=value)."""
  p = argparse.ArgumentParser(add_help=False)
  p.add_argument("--host", default="127.0.0.1")
  p.add_argument("--port", type=int, default=8000)
  p.add_argument("--metrics", action="store_true")
  p.add_argument("--served-model-name", default=None)
  return p.parse_known_args(argv)


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  flags, rest = _server_flags([a for a in argv if a not in HELP_FLAGS])
  if any(a in HELP_FLAGS for a in argv):
    rest = argv  # run_entry_point prints the usage
  unknown = [a for a in rest if a.startswith("--") and a not in HELP_FLAGS]
  if unknown:
    print(f"serve: unknown flag(s) {' '.join(unknown)}; flags: --host, --port, --metrics, --served-model-name",
          file=sys.stderr)
    return 2

  def body(cfg):
    from maxtext_like.serving.app import serve
    serve(cfg, host=flags.host, port=flags.port, metrics=flags.metrics, model_name=flags.served_model_name)
  return run_entry_point("serve", rest, body)


if __name__ == "__main__":
  sys.exit(main())
