"""Turn CLI / environment strings and raw YAML values into what the schema expects."""

from __future__ import annotations

from typing import Any

import yaml

from maxtext_like.config import schema

_NONE_WORDS = {"none", "null", "~"}


def parse_override(key: str, raw: str) -> Any:
  """A `key=value` string typed by the schema: text keys stay text; others parse as YAML scalars or flow lists."""
  if schema.accepts_none(key) and raw.strip().lower() in _NONE_WORDS:
    return None
  if schema.is_plain_string(key):
    return raw
  try:
    return yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) if raw.strip() else raw
  except yaml.YAMLError:
    return raw


def normalise(key: str, value: Any) -> Any:
  """MaxText-style YAML writes `None` for optional keys; treat it as null."""
  if isinstance(value, str) and value.strip().lower() in _NONE_WORDS and schema.accepts_none(key):
    return None
  return value
