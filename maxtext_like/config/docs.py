"""JSON Schema and docs/config.md, generated from the sections (a test fails when docs/config.md is stale)."""

from __future__ import annotations

import json

from maxtext_like.config import schema
from maxtext_like.config.loader import shipped_defaults
from maxtext_like.config.sections import SECTIONS
from maxtext_like.config.unsupported import PARTIAL, UNSUPPORTED


def json_schema() -> dict:
  """A flat JSON Schema (the YAML files are flat) with each key's type, description and default."""
  defaults = shipped_defaults()
  props = {}
  for name, cls in SECTIONS.items():
    sub = cls.model_json_schema()["properties"]
    for key, prop in sub.items():
      prop = dict(prop)
      prop.pop("title", None)
      prop["default"] = json.loads(json.dumps(defaults.get(key), default=str))
      prop["x-section"] = name
      props[key] = prop
  return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "maxtext_like config", "type": "object",
          "properties": props, "additionalProperties": False}


def _cell(v) -> str:
  return json.dumps(json.loads(json.dumps(v, default=str))).replace("|", "\\|")


def markdown() -> str:
  defaults = shipped_defaults()
  out = ["# Config reference", "",
         "Generated from the schema by `python -m maxtext_like.config --write-docs docs/config.md`; do not edit by hand.", "",
         "Every key is flat in `configs/base.yml` and lives in one section: `cfg.<section>.<key>`. "
         "Keys marked *not yet* accept only their default (or the listed values) until their feature lands.", ""]
  for name, cls in SECTIONS.items():
    out += [f"## `{name}`", "", cls.__doc__.strip(), "", "| key | type | default | description |", "|---|---|---|---|"]
    for key, info in cls.model_fields.items():
      note = ""
      if key in UNSUPPORTED:
        note = " *not yet*"
      elif key in PARTIAL:
        note = " *so far: " + ", ".join(repr(v) for v in sorted(PARTIAL[key], key=str)) + "*"
      out.append(f"| `{key}` | {schema.describe_type(key).replace('|', chr(92) + '|')} | `{_cell(defaults.get(key))}` | {info.description}{note} |")
    out.append("")
  return "\n".join(out)
