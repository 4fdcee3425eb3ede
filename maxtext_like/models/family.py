"""`Family`: what one decoder_block family declares, as typed fields (the shared layers never look a family up).

A family module (`models/families/<name>.py`) builds its decoder block from the shared layers, passing its quirks
to them as constructor arguments, and declares the few things the shared model needs to know about it here:

    FAMILY = Family(names=("gemma",), block=GemmaDecoderLayer, hf=GemmaHF(),
                    scale_embedding=True, norm_scale_offset=1.0, spec_fields=("use_post_attn_norm", ...))

`names`, `moe` and `config_keys` must be literals: the config reads them without importing JAX (models/registry.py).
docs/adding-a-family.md is the checklist.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from maxtext_like.models.spec import ModelSpec


@dataclasses.dataclass(frozen=True)
class LayerStack:
  """A run of layers built from the family's block with the same keyword arguments.

  `cycle` > 1: the layers differ with period `cycle` (e.g. MoE every k-th layer, NoPE every 4th): each layer is
  built with `layer_index=` (its index within the stack modulo nothing in the loop layout; within its unit when
  scanned), and the scanned layout scans units of `cycle` consecutive layers.
  """

  name: str  # attribute of the decoder holding the stack: 'layers', 'dense_layers', 'moe_layers'
  num_layers: int
  kwargs: tuple[tuple[str, Any], ...] = ()  # block keyword arguments, as sorted items (hashable)
  cycle: int = 1

  @property
  def block_kwargs(self) -> dict[str, Any]:
    return dict(self.kwargs)


def stack(name: str, num_layers: int, cycle: int = 1, **kwargs) -> LayerStack:
  return LayerStack(name, num_layers, tuple(sorted(kwargs.items())), cycle)


@dataclasses.dataclass(frozen=True)
class Family:
  """One decoder-block family. Every field but `names` and `block` has the plain llama behaviour as default."""

  names: tuple[str, ...]  # decoder_block values this family builds
  block: type  # the decoder layer: block(spec, *, rngs, **stack kwargs) -> (y_BTD, cache) = layer(x, pos, seg, ...)
  hf: Any = None  # its hf_registry.HFMapping instance, or None (no conversion)
  moe: bool = False  # layers include mixtures of experts: spec.moe is filled and the MoE config keys apply
  spec_fields: tuple[str, ...] = ()  # family-only ModelSpec fields it reads (spec.FAMILY_FIELDS); others must stay inert
  config_keys: tuple[str, ...] = ()  # config keys only this family reads, as spec.option(key) (a literal: see above)
  scale_embedding: bool = False  # token embeddings * sqrt(emb_dim) (Gemma)
  norm_scale_offset: float = 0.0  # every RMSNorm computes x * (offset + w), the final norm included (Gemma: 1)
  final_norm: Callable[[ModelSpec, Any], Any] | None = None  # (spec, rngs) -> the decoder's final norm (default RMSNorm)
  layer_stacks: Callable[[ModelSpec], Sequence[LayerStack]] | None = None  # default: one stack of all layers
  layer_index_at_call: bool = False  # the block's __call__ takes `layer_index=` (traced when scanned)
  kv_caches_per_layer: int = 1  # a block holding P attention layers gets P * head_dim per cache entry (gemma2)
  kv_cache_dims: Callable[[ModelSpec], tuple[int, int, int]] | None = None  # (K, Hk, Hv) when not (K, H, H) (MLA)

  def __post_init__(self):
    if self.hf is not None:
      self.hf.decoder_blocks = self.names

  def stacks(self, spec: ModelSpec) -> tuple[LayerStack, ...]:
    """The layer stacks in run order (empty ones dropped)."""
    stacks = (stack("layers", spec.num_decoder_layers),) if self.layer_stacks is None else self.layer_stacks(spec)
    return tuple(s for s in stacks if s.num_layers > 0)


def family_of(spec: ModelSpec) -> Family:
  from maxtext_like.models.registry import get_family
  return get_family(spec.decoder_block)
