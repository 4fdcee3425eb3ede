"""`python -m maxtext_like.config`: print, explain, diff and describe configs."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from maxtext_like.config import docs, paths, schema
from maxtext_like.config.errors import ConfigError, did_you_mean
from maxtext_like.config.loader import load_config

USAGE = """python -m maxtext_like.config [CONFIG.yml] [key=value ...] [options]

Prints the resolved config with the source of every value.
  --explain KEY        value, source, what it overrode, description and allowed values of one key
  --diff OTHER.yml     keys whose value differs between this config and OTHER.yml (with its own key=value after --)
  --format json        {"key": {"value": ..., "source": ...}} for every key
  --schema             JSON Schema of the config (with descriptions; for editor completion)
  --presets            the model presets found in configs/models/
  --write-docs PATH    regenerate docs/config.md"""


def _jsonable(v):
  return json.loads(json.dumps(v, default=str))


def _shown(cfg: schema.Config, key: str):
  """A key's value for printing: secrets (schema.SECRET_KEYS) are masked when set."""
  value = cfg.get(key)
  return "***" if key in schema.SECRET_KEYS and value else _jsonable(value)


def print_config(cfg: schema.Config, out) -> None:
  for section in schema.SECTIONS_ORDER:
    out.write(f"# {section}\n")
    for key in schema.section_keys(section):
      if section == "derived":
        out.write(f"{key}: {json.dumps(_jsonable(getattr(cfg.derived, key)))}  # derived\n")
      else:
        out.write(f"{key}: {json.dumps(_shown(cfg, key))}  # {cfg.source(key)}\n")


def explain(cfg: schema.Config, key: str) -> str:
  if key not in schema.ALL_KEYS:
    raise ConfigError([schema_problem(key)])
  info = schema.field_info(key)
  lines = [f"{key} = {json.dumps(_shown(cfg, key))}", f"  section: {schema.KEY_TO_SECTION[key]}",
           f"  from: {cfg.source(key) or 'derived'}"]
  for value, src in reversed(cfg.history(key)):
    lines.append(f"  overrode: {json.dumps(_jsonable(value))} from {src}")
  lines.append(f"  description: {info.description}")
  lines.append(f"  allowed: {schema.describe_type(key)}")
  return "\n".join(lines)


def schema_problem(key: str):
  from maxtext_like.config.errors import Problem
  return Problem(key, "is not a config key" + ("; " + did_you_mean(key, schema.ALL_KEYS) if did_you_mean(key, schema.ALL_KEYS) else ""))


def diff(a: schema.Config, b: schema.Config) -> list[str]:
  out = []
  for key in schema.ALL_KEYS:
    if a.get(key) != b.get(key):
      out.append(f"{key}: {json.dumps(_shown(a, key))} ({a.source(key)}) -> {json.dumps(_shown(b, key))} ({b.source(key)})")
  return sorted(out)


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  p = argparse.ArgumentParser(prog="python -m maxtext_like.config", usage=USAGE, add_help=True)
  p.add_argument("--explain")
  p.add_argument("--diff")
  p.add_argument("--format", choices=["text", "json"], default="text")
  p.add_argument("--schema", action="store_true")
  p.add_argument("--presets", action="store_true")
  p.add_argument("--write-docs")
  args, rest = p.parse_known_args(argv)
  other_overrides: list[str] = []
  if "--" in rest:
    i = rest.index("--")
    rest, other_overrides = rest[:i], rest[i + 1:]
  if args.schema:
    print(json.dumps(docs.json_schema(), indent=1))
    return 0
  if args.presets:
    print("\n".join(paths.preset_names()))
    return 0
  if args.write_docs:
    open(args.write_docs, "w").write(docs.markdown())
    return 0
  try:
    cfg = load_config(rest)
    if args.explain:
      print(explain(cfg, args.explain))
    elif args.diff:
      other = load_config([args.diff, *other_overrides])
      print("\n".join(diff(cfg, other)) or "no differences")
    elif args.format == "json":
      flat = {k: {"value": _shown(cfg, k), "source": cfg.source(k)} for k in schema.ALL_KEYS}
      flat.update({f"derived.{k}": {"value": _jsonable(v), "source": "derived"} for k, v in cfg.derived.model_dump().items()})
      print(json.dumps(flat, indent=1, sort_keys=True))
    else:
      print_config(cfg, sys.stdout)
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0
