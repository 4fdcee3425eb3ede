"""The typed config system: load, merge, validate and explain. Pure data; no JAX."""

from maxtext_like.config.errors import ConfigError, Problem
from maxtext_like.config.loader import load_config
from maxtext_like.config.schema import Config

__all__ = ["Config", "ConfigError", "Problem", "load_config"]
