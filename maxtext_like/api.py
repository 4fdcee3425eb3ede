"""The public Python API of maxtext_like.

- `load_config(argv)`: the validated `Config` from the same arguments the entry points take; raises `ConfigError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from maxtext_like.config import Config, ConfigError
from maxtext_like.config import load_config as _load_config

__all__ = ["Config", "ConfigError", "load_config"]


def load_config(argv: Sequence[str], env: Mapping[str, str] | None = None) -> Config:
  """Load and validate a config from `argv` (e.g. `["base.yml", "model_name=llama3-8b", "steps=10"]`).

  `env` defaults to `os.environ` (for `M_<KEY>` overrides). Raises `ConfigError` listing every problem.
  """
  return _load_config(list(argv), env=env)
