"""The generic mixture-of-experts decoder layer and its Hugging Face mixin, shared by MoE families.

`moe_decoder_layer` is the llama block (pre-norm attention + MLP) whose MLP is a `moe.MoeBlock`, or a dense
`MlpBlock` for the layers that stay dense: the `dense_layers` stack of `first_num_dense_layers`, and with
`interleave_moe_layer_step` = k > 1 every layer i with (i + 1) % k != 0. Interleaved layers form a stack with
`cycle=k`, so the scanned layout scans units of k layers (k - 1 dense, then one MoE) and the loop layout builds
each layer with its index.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
from flax import nnx

from maxtext_like.models.family import LayerStack, stack
from maxtext_like.models.families.llama import LlamaDecoderLayer
from maxtext_like.models.mlp import MlpBlock
from maxtext_like.models.moe import MoeBlock, is_moe_layer
from maxtext_like.models.spec import ModelSpec

_OUR_MOE = re.compile(r"decoder\.layers\.(\d+)\.mlp\.(gate\.kernel|wi_0|wi_1|wo)")


def moe_layer_stacks(spec: ModelSpec) -> list[LayerStack]:
  """One stack of MoE layers; `dense_layers` then `moe_layers` with first_num_dense_layers; with
  interleave_moe_layer_step = k > 1 one stack of period k whose layers choose by index (`moe.is_moe_layer`)."""
  m = spec.moe
  if m is None:
    raise ValueError(f"decoder_block={spec.decoder_block!r} needs spec.moe (a MoeSpec)")
  if m.interleave_moe_layer_step != 1:
    return [stack("layers", spec.num_decoder_layers, cycle=m.interleave_moe_layer_step)]
  n_dense = min(m.first_num_dense_layers, spec.num_decoder_layers)
  return [stack("dense_layers", n_dense, moe=False), stack("moe_layers", spec.num_decoder_layers - n_dense, moe=True)] \
      if n_dense else [stack("layers", spec.num_decoder_layers)]


def moe_decoder_layer(spec: ModelSpec, *, rngs: nnx.Rngs, moe: bool = True, layer_index: int | None = None,
                      attention: Callable[[nnx.Rngs], nnx.Module] | None = None, **moe_options) -> LlamaDecoderLayer:
  """The llama block with a MoeBlock (or, for a dense layer, an MlpBlock); `moe_options` go to the MoeBlock."""
  if moe and (layer_index is None or is_moe_layer(spec, layer_index)):
    mlp = lambda r: MoeBlock(spec.mlp_spec, spec.moe, rngs=r, **moe_options)  # noqa: E731
  else:
    mlp = lambda r: MlpBlock(spec.mlp_spec, rngs=r)  # noqa: E731
  return LlamaDecoderLayer(spec, rngs=rngs, attention=attention, mlp=mlp)


class MoeHFMixin:
  """Per-expert HF tensors <-> our stacked expert kernels. A family sets the patterns, the expert names and
  `moe_prefix`, the HF module under each layer that holds the experts and the router gate."""

  expert_re: re.Pattern
  gate_re: re.Pattern
  expert_names: dict[str, str]  # HF short name -> ours (wi_0 / wi_1 / wo)
  moe_prefix: str  # 'block_sparse_moe' (Mixtral) or 'mlp' (Qwen3-MoE)

  def _expert_name(self, i: int, e: int, ours: str) -> str:
    hf_short = next(k for k, v in self.expert_names.items() if v == ours)
    return f"model.layers.{i}.{self.moe_prefix}.experts.{e}.{hf_short}.weight"

  def _gate_name(self, i: int) -> str:
    return f"model.layers.{i}.{self.moe_prefix}.gate.weight"

  def moe_to_ours(self, spec: ModelSpec, hf_name: str, array: np.ndarray):
    m = self.expert_re.fullmatch(hf_name)
    if m:
      i, e, w = m.groups()
      return [(f"decoder.layers.{i}.mlp.{self.expert_names[w]}[{e}]", np.ascontiguousarray(array.T))]
    m = self.gate_re.fullmatch(hf_name)
    if m:
      return [(f"decoder.layers.{m.group(1)}.mlp.gate.kernel", np.ascontiguousarray(array.T))]
    return None

  def moe_to_hf(self, spec: ModelSpec, our_path: str, array: np.ndarray):
    m = _OUR_MOE.fullmatch(our_path)
    if not m:
      return None
    i, kind = int(m.group(1)), m.group(2)
    if kind == "gate.kernel":
      return [(self._gate_name(i), np.ascontiguousarray(array.T))]
    return [(self._expert_name(i, e, kind), np.ascontiguousarray(array[e].T)) for e in range(array.shape[0])]

  def to_ours(self, spec, hf_name, array):
    out = self.moe_to_ours(spec, hf_name, array)
    return out if out is not None else super().to_ours(spec, hf_name, array)

  def to_hf(self, spec, our_path, array):
    out = self.moe_to_hf(spec, our_path, array)
    return out if out is not None else super().to_hf(spec, our_path, array)

  def moe_keys(self, hf: dict, num_experts_key: str) -> dict:
    E = hf.get(num_experts_key) or hf.get("num_local_experts") or hf.get("num_experts")
    return {"num_experts": int(E), "num_experts_per_tok": int(hf["num_experts_per_tok"])}
