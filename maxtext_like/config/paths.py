"""Where the shipped configs live (a checkout or an installed wheel) and which model presets exist."""

from __future__ import annotations

import functools
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


@functools.cache
def configs_dir() -> Path:
  """The shipped `configs/` directory: inside the wheel (`maxtext_like/_configs`) or the checkout root."""
  for candidate in (_PACKAGE_DIR / "_configs", _PACKAGE_DIR.parent / "configs"):
    if (candidate / "base.yml").is_file():
      return candidate
  raise FileNotFoundError(f"shipped configs not found next to {_PACKAGE_DIR}")


def presets_dir() -> Path:
  return configs_dir() / "models"


def preset_names() -> list[str]:
  """Every model preset, discovered by file name (no hand-kept list)."""
  return sorted(p.stem for p in presets_dir().glob("*.yml"))


def resolve_config_file(name: str) -> Path | None:
  """A config path as given, else the shipped file of that name (so a bare `base.yml` works anywhere)."""
  p = Path(name)
  if p.is_file():
    return p.resolve()
  shipped = configs_dir() / p.name
  if shipped.is_file() and (len(p.parts) == 1 or p.parts[0] == "configs"):
    return shipped
  return None


def resolve_preset(model_name: str) -> Path | None:
  """`model_name` is a preset name or a path to a model .yml (e.g. one written by convert)."""
  if model_name.endswith((".yml", ".yaml")):
    p = Path(model_name)
    return p.resolve() if p.is_file() else None
  p = presets_dir() / f"{model_name}.yml"
  return p if p.is_file() else None
