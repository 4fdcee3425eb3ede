"""The family registry: the modules of `maxtext_like/models/families/`, each declaring `FAMILY = Family(...)`.

The folder is the list. Config validation runs before JAX is imported, so this module imports nothing heavy: it
reads each family module's `names=`, `moe=` and `config_keys=` (literals) from its source without importing it (`declared`), and
imports a module only when its family is asked for (`get_family`). A test checks the two views agree.

    declared()                  {decoder_block: Declared(module, moe)}, without importing JAX
    get_family('llama2')        the `Family` record (imports maxtext_like.models.families.llama)
    all_families()              every Family, each once
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import pathlib

FAMILIES_DIR = pathlib.Path(__file__).parent / "families"


class ModelSpecError(ValueError):
  """A model description that cannot be built (unknown decoder_block, inconsistent fields): bad input, exit code 2."""


@dataclasses.dataclass(frozen=True)
class Declared:
  """What a family module declares about itself, read from its source."""

  module: str  # 'maxtext_like.models.families.llama'
  moe: bool  # its layers include mixtures of experts (the MoE config keys apply)
  config_keys: tuple[str, ...] = ()  # config keys only this family reads (ModelSpec.option)


def _declaration(path: pathlib.Path) -> tuple[tuple[str, ...], bool, tuple[str, ...]]:
  for node in ast.parse(path.read_text(), str(path)).body:
    if (isinstance(node, ast.Assign) and len(node.targets) == 1 and getattr(node.targets[0], "id", None) == "FAMILY"
        and isinstance(node.value, ast.Call)):
      kw = {k.arg: k.value for k in node.value.keywords}
      try:
        names = tuple(ast.literal_eval(kw["names"]))
        moe = bool(ast.literal_eval(kw["moe"])) if "moe" in kw else False
        keys = tuple(ast.literal_eval(kw["config_keys"])) if "config_keys" in kw else ()
      except (KeyError, ValueError) as e:
        raise ValueError(f"{path}: FAMILY = Family(names=(...), moe=..., config_keys=(...)) must spell them as "
                         "literals") from e
      return names, moe, keys
  raise ValueError(f"{path} declares no `FAMILY = Family(...)`")


@functools.cache
def declared() -> dict[str, Declared]:
  out: dict[str, Declared] = {}
  for path in sorted(FAMILIES_DIR.glob("*.py")):
    if path.name.startswith("_"):
      continue
    names, moe, keys = _declaration(path)
    for name in names:
      if name in out:
        raise ValueError(f"decoder_block {name!r} is declared by both {out[name].module} and {path.stem}")
      out[name] = Declared(f"maxtext_like.models.families.{path.stem}", moe, keys)
  return out


def built_decoder_blocks() -> frozenset[str]:
  return frozenset(declared())


def moe_decoder_blocks() -> frozenset[str]:
  return frozenset(name for name, d in declared().items() if d.moe)


def family_config_keys() -> dict[str, frozenset[str]]:
  """config key -> the decoder blocks whose family reads it (`Family.config_keys`)."""
  out: dict[str, set[str]] = {}
  for name, d in declared().items():
    for key in d.config_keys:
      out.setdefault(key, set()).add(name)
  return {k: frozenset(v) for k, v in out.items()}


def get_family(name: str):
  """The `Family` registered as decoder_block `name` (ModelSpecError naming the built ones)."""
  d = declared().get(name)
  if d is None:
    raise ModelSpecError(f"decoder_block {name!r} is not built; available: {sorted(declared())}")
  family = importlib.import_module(d.module).FAMILY
  if name not in family.names or family.moe != d.moe or family.config_keys != d.config_keys:
    raise AssertionError(f"{d.module}.FAMILY does not match its declaration")
  return family


def all_families() -> list:
  """Every Family once, in module order."""
  seen: dict[str, object] = {}
  for d in declared().values():
    seen.setdefault(d.module, importlib.import_module(d.module).FAMILY)
  return list(seen.values())
