"""Load a config: base.yml (+ its base_config chain) -> model preset -> CLI key=value -> env M_<KEY>.

Pure data: nothing here imports JAX or looks at devices.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pydantic

from maxtext_like.config import derived as derived_mod
from maxtext_like.config import parse, paths, rules, schema, unsupported
from maxtext_like.config.errors import ConfigError, Problem, did_you_mean
from maxtext_like.config.sections import SECTIONS
from maxtext_like.config.sections.derived import DerivedSection
from maxtext_like.config.yaml_io import NESTED_BLOCKS, flat_key, read_flat_yaml

Layer = dict[str, tuple[Any, str]]  # key -> (value, source)
ENV_PREFIX = "M_"
_MAX_CHAIN = 16


@functools.lru_cache(maxsize=64)
def _read_cached(path: str, mtime_ns: int, prefix: str) -> tuple[tuple[tuple[str, tuple[Any, str]], ...], tuple[Problem, ...]]:
  values, problems = read_flat_yaml(Path(path))
  return tuple((k, (v, prefix + s)) for k, (v, s) in values.items()), tuple(problems)


def _read(path: Path, prefix: str = "") -> tuple[Layer, list[Problem]]:
  try:
    mtime = path.stat().st_mtime_ns
  except OSError:
    mtime = 0
  items, problems = _read_cached(str(path), mtime, prefix)
  return {k: (_copy(v), s) for k, (v, s) in items}, list(problems)


def _copy(v: Any) -> Any:
  """Values from the parse cache are shared: hand out copies of containers."""
  if isinstance(v, list):
    return [_copy(x) for x in v]
  if isinstance(v, dict):
    return {k: _copy(x) for k, x in v.items()}
  return v


def shipped_defaults() -> dict[str, Any]:
  """The shipped base.yml values: the defaults every 'not supported yet' check compares against."""
  layer, _ = _read(paths.configs_dir() / "base.yml")
  return {k: parse.normalise(k, v) for k, (v, _) in layer.items()}


def _file_chain(path: Path, problems: list[Problem]) -> list[Layer]:
  """The layers of a config file and its base_config parents, parents first."""
  chain: list[Layer] = []
  seen: set[Path] = set()
  while path is not None and len(chain) < _MAX_CHAIN:
    if path in seen:
      problems.append(Problem("base_config", "forms a cycle", str(path)))
      break
    seen.add(path)
    layer, p = _read(path)
    problems.extend(p)
    chain.insert(0, layer)
    parent = layer.get("base_config", (None, ""))[0]
    if not parent:
      break
    parent_path = (path.parent / parent) if (path.parent / parent).is_file() else paths.resolve_config_file(str(parent))
    if parent_path is None:
      problems.append(Problem("base_config", "names a file that does not exist", parent, layer["base_config"][1]))
      break
    path = parent_path.resolve()
  return chain


def _split_argv(argv: Sequence[str], problems: list[Problem]) -> tuple[Path | None, Layer]:
  config_path: Path | None = None
  cli: Layer = {}
  for i, arg in enumerate(argv):
    if "=" not in arg and arg.endswith((".yml", ".yaml")) and i == 0:
      config_path = paths.resolve_config_file(arg)
      if config_path is None:
        problems.append(Problem("config file", f"not found (looked at {arg!r} and the shipped configs/{Path(arg).name})", arg, "command line"))
      continue
    key, sep, raw = arg.partition("=")
    key = key.strip().lstrip("-")
    block, dot, rest = key.partition(".")
    key = flat_key(block, rest) if dot and block in NESTED_BLOCKS else key  # MaxText's lora.lora_rank=8, dpo.algo=orpo
    if not sep or not key:
      problems.append(Problem(arg, "is not a key=value override", source="command line", allowed="key=value, after an optional first config.yml"))
      continue
    cli.pop(key, None)  # a repeated key: the later one wins (scripts append overrides)
    cli[key] = (raw, "cli")
  return config_path, cli


def _env_layer(env: Mapping[str, str]) -> Layer:
  return {k[len(ENV_PREFIX):].lower(): (v, f"env {k}") for k, v in env.items() if k.startswith(ENV_PREFIX) and len(k) > len(ENV_PREFIX)}


def _unknown_keys(layer: Layer, problems: list[Problem]) -> None:
  for key in list(layer):
    if key not in schema.ALL_KEYS:
      value, src = layer.pop(key)
      hint = did_you_mean(key, schema.ALL_KEYS)
      what = "is derived and cannot be set" if key in DerivedSection.model_fields else "is not a config key"
      problems.append(Problem(key, what + ("; " + hint if hint else ""), value, src))


def _typed(layer: Layer) -> Layer:
  """Parse CLI/env strings by the schema's type."""
  return {k: (parse.parse_override(k, v) if isinstance(v, str) else v, s) for k, (v, s) in layer.items()}


def _merge_rules(old: list, new: Any) -> Any:
  """logical_axis_rules merge by logical name: a new rule replaces the old one(s) of that name."""
  if not isinstance(old, list) or not isinstance(new, list) or not all(isinstance(r, (list, tuple)) and r for r in new):
    return new
  names = {r[0] for r in new}
  kept = [r for r in old if not (isinstance(r, (list, tuple)) and r and r[0] in names)]
  return list(new) + kept


def load_config(argv: Sequence[str], env: Mapping[str, str] | None = None) -> schema.Config:
  """Load, merge and validate a config; raises ConfigError listing every problem."""
  env = os.environ if env is None else env
  problems: list[Problem] = []
  config_path, cli = _split_argv(list(argv), problems)
  config_path = config_path or paths.configs_dir() / "base.yml"
  layers: list[tuple[str, Layer]] = [("file", l) for l in _file_chain(config_path, problems)]
  env_layer = _env_layer(env)
  for layer in [l for _, l in layers] + [cli, env_layer]:
    _unknown_keys(layer, problems)
  cli, env_layer = _typed(cli), _typed(env_layer)

  # The preset is named by the last layer that sets model_name.
  model_name = "default"
  for layer in [l for _, l in layers] + [cli, env_layer]:
    if "model_name" in layer:
      model_name = layer["model_name"][0]
  preset: Layer = {}
  if isinstance(model_name, str) and model_name:
    preset_path = paths.resolve_preset(model_name)
    if preset_path is None:
      src = next((l["model_name"][1] for l in [env_layer, cli] + [l for _, l in reversed(layers)] if "model_name" in l), "")
      problems.append(Problem("model_name", "has no preset" + ("; " + did_you_mean(model_name, paths.preset_names()) if did_you_mean(model_name, paths.preset_names()) else ""), model_name, src,
                              allowed="a file name in configs/models/ (python -m maxtext_like.config --presets) or a path to a model .yml"))
    else:
      preset, p = _read(preset_path, prefix="preset ")
      problems.extend(p)
      _unknown_keys(preset, problems)
      preset.pop("model_name", None)
  layers += [("preset", preset), ("cli", cli), ("env", env_layer)]

  values: dict[str, Any] = {}
  sources: dict[str, str] = {}
  history: dict[str, list[tuple[Any, str]]] = {}
  rules_override = False
  for layer_kind, layer in layers:
    if "override_logical_axis_rules" in layer:
      rules_override = bool(layer["override_logical_axis_rules"][0])
  for layer_kind, layer in layers:
    for key, (value, src) in layer.items():
      value = parse.normalise(key, value)
      if key in values:
        history.setdefault(key, []).append((values[key], sources[key]))
        if key == "logical_axis_rules" and not rules_override:
          value = _merge_rules(values[key], value)
      values[key] = value
      sources[key] = src

  override_model = bool(values.get("override_model_config", False))
  if not override_model:
    for key, (pv, psrc) in preset.items():
      for layer in (cli, env_layer):
        if key in layer and parse.normalise(key, layer[key][0]) != parse.normalise(key, pv):
          problems.append(Problem(key, f"conflicts with the model preset ({pv!r} at {psrc}); pass override_model_config=true to override it",
                                  layer[key][0], layer[key][1]))

  missing = [k for k in schema.KEY_TO_SECTION if k not in values]
  for key in missing:
    problems.append(Problem(key, "has no value: the config file chain must start from the shipped base.yml", source=str(config_path)))
  if missing:
    raise ConfigError(problems)

  # Keep going after earlier problems so that one ConfigError lists everything wrong at once.
  n_before = len(problems)
  sections = _validate_sections(values, sources, problems)
  _check_supported(values, sources, problems)
  if len(problems) == n_before or all(p.key not in schema.ALL_KEYS for p in problems[n_before:]):
    values = {k: getattr(sections[s], k) for k, s in schema.KEY_TO_SECTION.items()} if len(sections) == len(SECTIONS) else values
  if len(sections) == len(SECTIONS):
    d, found = derived_mod.derive(values)
    if not found:
      found = rules.check(values, d, sources)
    problems.extend(p if p.source or p.key not in sources else Problem(p.key, p.message, p.value, sources[p.key], p.allowed) for p in found)
  if problems:
    raise ConfigError(problems)
  cfg = schema.Config(**sections, derived=DerivedSection(**d))
  cfg._sources.update(sources)
  cfg._overridden.update(history)
  return cfg


def _validate_sections(values: dict[str, Any], sources: dict[str, str], problems: list[Problem]) -> dict[str, Any]:
  out = {}
  for name, cls in SECTIONS.items():
    data = {k: values[k] for k in cls.model_fields}
    try:
      out[name] = cls.model_validate(data)
    except pydantic.ValidationError as e:
      by_key: dict[str, list[str]] = {}
      for err in e.errors():
        key = str(err["loc"][0]) if err["loc"] else name
        by_key.setdefault(key, []).append(err["msg"][0].lower() + err["msg"][1:])
      for key, msgs in by_key.items():
        msg = msgs[0] if len(msgs) == 1 else f"is not a valid {schema.describe_type(key)}"
        problems.append(Problem(key, msg, values.get(key), sources.get(key, ""), schema.describe_type(key) if key in values else ""))
  return out


def _check_supported(values: dict[str, Any], sources: dict[str, str], problems: list[Problem]) -> None:
  """Keys whose feature is not built yet accept only their default (or the listed values); presets are exempt."""
  defaults = shipped_defaults()
  for key in sorted(unsupported.UNSUPPORTED | set(unsupported.PARTIAL)):
    if sources.get(key, "").startswith("preset "):
      continue
    value = values[key]
    ok = [defaults.get(key), *sorted(set(unsupported.PARTIAL.get(key, ())) - {defaults.get(key)} if key in unsupported.PARTIAL else ())]
    if not any(value == o for o in ok):
      allowed = ", ".join(repr(x) for x in ok) if key in unsupported.PARTIAL else f"only the default {defaults.get(key)!r}"
      problems.append(Problem(key, "is not supported yet", value, sources.get(key, ""), allowed=allowed))
