"""The typed config: one frozen pydantic section per group, and the flat-key -> section map built from them."""

from __future__ import annotations

import functools
import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, PrivateAttr

from maxtext_like.config.sections import SECTIONS
from maxtext_like.config.sections.derived import DerivedSection


class Config(BaseModel):
  """The validated config. `cfg.<section>.<flat_key>`; `cfg.source(key)` says where a value came from."""

  model_config = ConfigDict(frozen=True, protected_namespaces=())

  run: SECTIONS["run"]
  checkpointing: SECTIONS["checkpointing"]
  dtypes: SECTIONS["dtypes"]
  quantization: SECTIONS["quantization"]
  model: SECTIONS["model"]
  attention: SECTIONS["attention"]
  moe: SECTIONS["moe"]
  mesh: SECTIONS["mesh"]
  dcn: SECTIONS["dcn"]
  ici: SECTIONS["ici"]
  pipeline: SECTIONS["pipeline"]
  remat: SECTIONS["remat"]
  tokenizer: SECTIONS["tokenizer"]
  dataset: SECTIONS["dataset"]
  finetune: SECTIONS["finetune"]
  training: SECTIONS["training"]
  optimizer: SECTIONS["optimizer"]
  rope: SECTIONS["rope"]
  inference: SECTIONS["inference"]
  aot: SECTIONS["aot"]
  debug: SECTIONS["debug"]
  metrics: SECTIONS["metrics"]
  multimodal: SECTIONS["multimodal"]
  rl: SECTIONS["rl"]
  derived: DerivedSection

  _sources: dict[str, str] = PrivateAttr(default_factory=dict)
  _overridden: dict[str, list[tuple[object, str]]] = PrivateAttr(default_factory=dict)

  def get(self, key: str) -> Any:
    """The value of a flat key, wherever its section is."""
    return getattr(getattr(self, KEY_TO_SECTION[key]), key)

  def source(self, key: str) -> str:
    return self._sources.get(key, "")

  def history(self, key: str) -> list[tuple[object, str]]:
    """Earlier (value, source) pairs that later layers replaced, oldest first."""
    return list(self._overridden.get(key, []))

  def flat(self) -> dict[str, Any]:
    """Every user-settable key and its value (derived values excluded)."""
    return {k: self.get(k) for k in KEY_TO_SECTION}


def _build_key_map() -> dict[str, str]:
  out: dict[str, str] = {}
  for name, cls in SECTIONS.items():
    for key in cls.model_fields:
      assert key not in out, f"{key} is in both {out[key]} and {name}"
      out[key] = name
  return out


KEY_TO_SECTION: dict[str, str] = _build_key_map()
# Values never printed or saved in clear (config records, checkpoints): shown as MASKED when set.
SECRET_KEYS: frozenset[str] = frozenset({"hf_access_token"})
MASKED = "***"
ALL_KEYS: frozenset[str] = frozenset(KEY_TO_SECTION)


def field_info(key: str):
  return SECTIONS[KEY_TO_SECTION[key]].model_fields[key]


@functools.cache
def accepts_none(key: str) -> bool:
  ann = field_info(key).annotation
  return ann is type(None) or (typing.get_origin(ann) in (typing.Union, types.UnionType) and type(None) in typing.get_args(ann))


@functools.cache
def is_plain_string(key: str) -> bool:
  """True when the key holds free text, so a CLI value is taken literally instead of parsed as YAML."""
  ann = field_info(key).annotation
  args = [a for a in typing.get_args(ann) if a is not type(None)] if typing.get_origin(ann) in (typing.Union, types.UnionType) else [ann]
  return args == [str]


@functools.cache
def allowed_values(key: str) -> tuple | None:
  """The Literal choices of a key, if it has them."""
  ann = field_info(key).annotation
  for a in (typing.get_args(ann) if typing.get_origin(ann) in (typing.Union, types.UnionType) else (ann,)):
    if typing.get_origin(a) is typing.Literal:
      return typing.get_args(a)
  return None


def describe_type(key: str) -> str:
  choices = allowed_values(key)
  if choices is not None:
    return ", ".join(repr(c) for c in choices) + (" or None" if accepts_none(key) else "")
  ann = field_info(key).annotation
  text = getattr(ann, "__name__", None) if not typing.get_args(ann) else None
  text = text or str(ann).replace("typing.", "")
  for m in field_info(key).metadata:
    for attr, sym in (("ge", ">="), ("gt", ">")):
      if getattr(m, attr, None) is not None:
        text += f" {sym} {getattr(m, attr)}"
  return text


SECTIONS_ORDER: tuple[str, ...] = (*SECTIONS, "derived")


def section_keys(section: str) -> list[str]:
  return list((DerivedSection if section == "derived" else SECTIONS[section]).model_fields)
