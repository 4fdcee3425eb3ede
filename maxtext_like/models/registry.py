"""Decoder-block registry keyed by `ModelSpec.decoder_block`."""

from __future__ import annotations

from collections.abc import Callable

DECODER_BLOCKS: dict[str, type] = {}


class ModelSpecError(ValueError):
  """A model description that cannot be built (unknown decoder_block, inconsistent fields): bad input, exit code 2."""


def register_decoder_block(*names: str) -> Callable[[type], type]:
  """Class decorator: `@register_decoder_block('llama2', 'mistral')`."""

  def register(cls: type) -> type:
    for name in names:
      if name in DECODER_BLOCKS and DECODER_BLOCKS[name] is not cls:
        raise ValueError(f"decoder_block {name!r} already registered to {DECODER_BLOCKS[name].__name__}")
      DECODER_BLOCKS[name] = cls
    return cls

  return register


def get_decoder_block(name: str) -> type:
  try:
    return DECODER_BLOCKS[name]
  except KeyError:
    raise ModelSpecError(f"decoder_block {name!r} is not built; available: {sorted(DECODER_BLOCKS)}") from None
