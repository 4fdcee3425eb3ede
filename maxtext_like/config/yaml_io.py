"""Read a flat YAML config keeping the line of every key."""

from __future__ import annotations

from pathlib import Path

import yaml

from maxtext_like.config.errors import Problem

try:
  _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - libyaml missing
  _Loader = yaml.SafeLoader


def _display(path: Path) -> str:
  try:
    return str(path.relative_to(Path.cwd()))
  except ValueError:
    return str(path)


# MaxText groups these keys in a nested block (`lora:` with enable_lora, lora_rank, ...; `dpo:` with algo, dpo_beta,
# ...); here they are flat keys, and a block in a file (or `lora.lora_rank=8` on the command line, config/loader.py)
# sets the same flat keys; NESTED_RENAMES names the flat key of an inner name that would be ambiguous on its own.
NESTED_BLOCKS = ("lora", "dpo")
NESTED_RENAMES = {"dpo": {"algo": "dpo_algo"}}


def flat_key(block: str, key: str) -> str:
  """The flat key of `key` inside MaxText's nested `block`."""
  return NESTED_RENAMES.get(block, {}).get(key, key)


def _flatten_blocks(pairs):
  """(key node, value node) pairs with each NESTED_BLOCKS mapping replaced by its own pairs."""
  for key_node, value_node in pairs:
    if isinstance(key_node, yaml.ScalarNode) and key_node.value in NESTED_BLOCKS and isinstance(value_node, yaml.MappingNode):
      for inner, value in value_node.value:
        if isinstance(inner, yaml.ScalarNode) and flat_key(key_node.value, inner.value) != inner.value:
          inner = yaml.ScalarNode(inner.tag, flat_key(key_node.value, inner.value), inner.start_mark, inner.end_mark)
        yield inner, value
    else:
      yield key_node, value_node


def read_flat_yaml(path: Path, text: str | None = None) -> tuple[dict[str, tuple[object, str]], list[Problem]]:
  """{key: (value, "file:line")} of a flat YAML mapping, and the problems found reading it."""
  where = _display(path)
  if text is None:
    try:
      text = path.read_text()
    except OSError as e:
      return {}, [Problem("config file", f"cannot be read: {e.strerror or e}", str(path))]
  out: dict[str, tuple[object, str]] = {}
  problems: list[Problem] = []
  loader = _Loader(text)
  try:
    node = loader.get_single_node()
    if node is None:
      return {}, []
    if not isinstance(node, yaml.MappingNode):
      return {}, [Problem("config file", "must be a mapping of key: value lines", source=where)]
    for key_node, value_node in _flatten_blocks(node.value):
      src = f"{where}:{key_node.start_mark.line + 1}"
      if not isinstance(key_node, yaml.ScalarNode):
        problems.append(Problem("config file", "keys must be plain names", source=src))
        continue
      key = str(key_node.value)
      if key in out:
        problems.append(Problem(key, f"is set twice (first at {out[key][1]})", source=src))
      out[key] = (loader.construct_object(value_node, deep=True), src)
  except yaml.YAMLError as e:
    mark = getattr(e, "problem_mark", None)
    src = f"{where}:{mark.line + 1}" if mark else where
    problems.append(Problem("config file", f"is not valid YAML ({getattr(e, 'problem', None) or e})", source=src))
  finally:
    loader.dispose()
  return out, problems
