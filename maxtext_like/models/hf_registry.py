"""Hugging Face <-> maxtext_like mapping protocol, one `HFMapping` per family, keyed by `decoder_block`.

A family module (models/families/) also owns how its weights and config look in Hugging Face `transformers`.
It subclasses `HFMapping` and names an instance in its Family record (`FAMILY = Family(..., hf=LlamaHF())`):

  class LlamaHF(HFMapping):
    architectures = ("LlamaForCausalLM", "MistralForCausalLM")
    def model_keys_from_hf(self, hf_config): ...
    def hf_config_from(self, spec): ...
    def to_ours(self, spec, hf_name, array): ...
    def to_hf(self, spec, our_path, array): ...

The generic converter (`maxtext_like/convert/`) does everything else: reading/writing safetensors shard by
shard, checking that every parameter is produced exactly once with the right shape (one error listing all
problems), dtype casts, scanned stacking, orbax writing. A mapping never sees files, dtypes or the scanned layout.

Conventions (read these before writing a mapping)
- Arrays are numpy arrays (float32 for tests; whatever the file holds otherwise). Return numpy arrays; do not
  cast dtypes (the converter casts to `weight_dtype` on the way in and to the checkpoint's dtype on the way out).
- Our parameter paths are dotted strings of the *unscanned* (scan_layers=False, loop) layout, i.e. the keys of
  `nnx.to_flat_state(nnx.state(model, nnx.Param))` joined with '.':
      token_embedder.embedding                        [V, D]
      decoder.layers.{i}.self_attention.query.kernel  [D, N, H]
      decoder.layers.{i}.mlp.wi_0.kernel              [D, F]
      decoder.decoder_norm.scale                      [D]
      decoder.logits_dense.kernel                     [D, V]   (absent when logits_via_embedding)
  For scan_layers=True the converter strips the '{i}.' and stacks layer i at `spec.param_scan_axis`; a
  mapping therefore always produces/consumes one layer's tensor with the layer index in the path.
- HF names are the safetensors keys `save_pretrained` writes, e.g. 'model.layers.3.self_attn.q_proj.weight'.
- `to_ours(spec, hf_name, array) -> list[(our_path, array)] | None`:
    one HF tensor -> zero or more of ours. Return None for a name the family does not know (the converter
    reports it as unexpected), [] for a known tensor that has no counterpart (e.g. 'rotary_emb.inv_freq', or
    'lm_head.weight' of a tied checkpoint). Numeric quirks live here (transposes, head reshapes, Gemma's
    `1 + scale` norms, scaling of embeddings...). A path may address one index of a parameter's axis 0,
    `'decoder.layers.3.mlp.wi_0[5]'` (one HF tensor per expert of a stacked [E, D, F] kernel, see mixtral.py):
    the converter writes that slice and requires every index exactly once.
- `to_hf(spec, our_path, array) -> list[(hf_name, array)]`: the exact inverse, one of ours -> one or more
  HF tensors. Raise KeyError for a path the family does not know.
- `to_hf(to_ours(x))` must round-trip bit-exactly (tested for every family); a tensor that must be split or
  fused across several names should still be expressible one tensor at a time (e.g. a fused HF qkv tensor
  maps to three of ours via to_ours; the reverse needs `to_hf` of all three, so such a family overrides
  `to_hf_many`, which by default calls `to_hf` per tensor).
- `model_keys_from_hf(hf_config: dict) -> dict`: the flat maxtext_like config keys (base.yml names) that
  describe this checkpoint's architecture: decoder_block, base_emb_dim, base_num_query_heads,
  base_num_kv_heads, head_dim, base_mlp_dim, base_num_decoder_layers, vocab_size,
  normalization_layer_epsilon, rope_max_timescale, rope_type, logits_via_embedding, sliding_window_size,
  mlp_activations, and family keys (attention_bias, use_qk_norm, ...). Written as OUTPUT/model.yml, it is a
  preset (`model_name=OUTPUT/model.yml`). Raise `HFConfigError` for a config the family cannot represent
  (e.g. an unsupported rope_scaling type), naming the field.
- `hf_config_from(spec: ModelSpec) -> dict`: a config.json that `transformers.AutoConfig` loads into the
  matching `*ForCausalLM` with the same architecture (include "architectures", "model_type",
  the dtype field may be left to the converter). Tests compare parameter counts of the meta-device HF model
  built from it with ours, for every preset of the family.
- `architectures`: HF `architectures[0]` values this mapping accepts for conversion to ours.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from typing import Any

import numpy as np

from maxtext_like.models.spec import ModelSpec


class HFConfigError(ValueError):
  """A Hugging Face config.json this family cannot represent."""


class HFMapping(abc.ABC):
  """Base class of a family's HF mapping; see the module docstring for the contract. The four methods below are
  abstract: the family module instantiates the class, so a family missing one fails when it is imported."""

  architectures: tuple[str, ...] = ()
  decoder_blocks: tuple[str, ...] = ()  # filled in by the Family that holds it

  @abc.abstractmethod
  def model_keys_from_hf(self, hf_config: dict) -> dict[str, Any]:
    """The flat config keys describing this checkpoint's architecture."""

  @abc.abstractmethod
  def hf_config_from(self, spec: ModelSpec) -> dict[str, Any]:
    """A config.json for `spec`."""

  @abc.abstractmethod
  def to_ours(self, spec: ModelSpec, hf_name: str, array: np.ndarray) -> list[tuple[str, np.ndarray]] | None:
    """One HF tensor -> zero or more of ours (None: a name the family does not know)."""

  @abc.abstractmethod
  def to_hf(self, spec: ModelSpec, our_path: str, array: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """One of ours -> one or more HF tensors (KeyError: a path the family does not know)."""

  def to_hf_many(self, spec: ModelSpec, items: Iterable[tuple[str, np.ndarray]]):
    """Yields (hf_name, array) for (our_path, array) items; override to fuse several of ours into one HF tensor."""
    for path, array in items:
      yield from self.to_hf(spec, path, array)


def hf_mappings() -> dict[str, HFMapping]:
  """decoder_block -> its family's mapping, for every family that has one."""
  from maxtext_like.models.registry import all_families
  return {name: f.hf for f in all_families() if f.hf is not None for name in f.names}


def get_hf_mapping(decoder_block: str) -> HFMapping:
  from maxtext_like.models.registry import ModelSpecError, get_family
  try:
    mapping = get_family(decoder_block).hf
  except ModelSpecError:
    mapping = None
  if mapping is None:
    raise HFConfigError(f"decoder_block {decoder_block!r} has no Hugging Face mapping; "
                        f"families with one: {sorted(hf_mappings())}") from None
  return mapping


def mapping_for_architecture(architecture: str) -> HFMapping:
  mappings = hf_mappings().values()
  for m in mappings:
    if architecture in m.architectures:
      return m
  known = sorted({a for m in mappings for a in m.architectures})
  raise HFConfigError(f"Hugging Face architecture {architecture!r} is not supported; supported: {known}")


def state_dict_to_params(spec: ModelSpec, state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Our loop-layout flat params ('decoder.layers.0....') from an HF state_dict, via the family's mapping."""
  mapping = get_hf_mapping(spec.decoder_block)
  out: dict[str, np.ndarray] = {}
  for name, array in state_dict.items():
    produced = mapping.to_ours(spec, name, np.asarray(array))
    if produced is None:
      raise KeyError(f"unexpected HF tensor {name!r}")
    for path, value in produced:
      if path in out:
        raise KeyError(f"{path!r} produced twice")
      out[path] = value
  return out


# ---- helpers shared by families whose attention/MLP use torch Linear layouts --------------------------------

def linear_to_kernel(w: np.ndarray, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> np.ndarray:
  """torch Linear weight [out, in] -> our kernel in_shape + out_shape."""
  return np.ascontiguousarray(w.T).reshape(*in_shape, *out_shape)


def kernel_to_linear(k: np.ndarray, n_in: int) -> np.ndarray:
  """Our kernel (first n_in axes are inputs) -> torch Linear weight [out, in]."""
  n_i = int(np.prod(k.shape[:n_in]))
  return np.ascontiguousarray(k.reshape(n_i, -1).T)
