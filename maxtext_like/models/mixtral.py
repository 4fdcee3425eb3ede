"""Mixtral (decoder_block 'mixtral'): the llama block with its MLP replaced by a `moe.MoeBlock`.

Routing is softmax over all experts, top-k, renormalised (`norm_topk_prob: true` in the presets; MaxText
hard-codes this for mixtral). `MoeDecoderLayer` is shared with qwen3_moe (which adds QK-norm through
`use_qk_norm`); `first_num_dense_layers` puts that many dense llama layers first (`dense_layers` stack, then
`moe_layers`; the HF mappings here refuse such checkpoints); `interleave_moe_layer_step` = k > 1 makes layer i MoE iff
(i + 1) % k == 0 (loop layout only; HF qwen3_moe's `decoder_sparse_step`), the others dense llama MLPs of mlp_dim.

Hugging Face `MixtralForCausalLM` (save_pretrained layout of transformers 5.23, per-expert tensors) maps as
llama (see llama2.py) plus, with W.T the transposed torch Linear weight:
  model.layers.i.block_sparse_moe.gate.weight          decoder.layers.i.mlp.gate.kernel = W.T   [D, E]
  model.layers.i.block_sparse_moe.experts.e.w1.weight  decoder.layers.i.mlp.wi_0[e] = W.T       [D, F]
  model.layers.i.block_sparse_moe.experts.e.w3.weight  ....mlp.wi_1[e] = W.T
  model.layers.i.block_sparse_moe.experts.e.w2.weight  ....mlp.wo[e] = W.T                        [F, D]
One HF tensor fills one expert's slice of our stacked [E, ...] kernel: `to_ours` returns the path
`decoder.layers.i.mlp.wi_0[e]` (the converter's slice address: index e of axis 0); `to_hf` splits the stacked tensor.
"""

from __future__ import annotations

import re

import jax
import numpy as np
from flax import nnx

from maxtext_like.models.hf_registry import HFConfigError, register_hf_mapping
from maxtext_like.models.llama2 import LlamaDecoderLayer, LlamaHF
from maxtext_like.models.mlp import MlpBlock
from maxtext_like.models.moe import MoeBlock, is_moe_layer
from maxtext_like.models.registry import register_decoder_block
from maxtext_like.models.spec import ModelSpec


def moe_layer_stacks(spec: ModelSpec):
  """One stack of MoE layers, or `dense_layers` then `moe_layers` with first_num_dense_layers; with
  interleave_moe_layer_step > 1 (loop layout only) one stack whose layers choose by index (`moe.is_moe_layer`)."""
  m = spec.moe
  if m is None:
    raise ValueError(f"decoder_block={spec.decoder_block!r} needs spec.moe (a MoeSpec)")
  if m.interleave_moe_layer_step != 1:
    if spec.scan_layers:
      raise ValueError("interleave_moe_layer_step > 1 mixes dense and MoE layers, which the scanned layout (one stacked "
                       "layer) cannot hold yet: set scan_layers=false")
    return [("layers", spec.num_decoder_layers, {})]
  n_dense = min(m.first_num_dense_layers, spec.num_decoder_layers)
  if n_dense == 0:
    return [("layers", spec.num_decoder_layers, {})]
  return [("dense_layers", n_dense, {"moe": False}), ("moe_layers", spec.num_decoder_layers - n_dense, {"moe": True})]


@register_decoder_block("mixtral")
class MoeDecoderLayer(LlamaDecoderLayer):
  """x + attn(norm(x)), then + moe(norm(.)) (or a dense MLP with moe=False)."""

  reads_spec_fields = ("moe",)
  layer_stacks = staticmethod(moe_layer_stacks)
  init_takes_layer_index = True  # loop layout: built with layer_index (interleave_moe_layer_step)

  def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs, moe: bool = True, layer_index: int | None = None):
    super().__init__(spec, rngs=rngs)
    if moe and (layer_index is None or spec.moe.interleave_moe_layer_step == 1 or is_moe_layer(spec, layer_index)):
      self.mlp = MoeBlock(spec, rngs=rngs)


# ---- Hugging Face mapping ----------------------------------------------------------------------------------

_EXPERT_HF = {"w1": "wi_0", "w3": "wi_1", "w2": "wo"}
_HF_EXPERT = re.compile(r"model\.layers\.(\d+)\.block_sparse_moe\.experts\.(\d+)\.(w[123])\.weight")
_HF_GATE = re.compile(r"model\.layers\.(\d+)\.block_sparse_moe\.gate\.weight")
_OUR_MOE = re.compile(r"decoder\.layers\.(\d+)\.mlp\.(gate\.kernel|wi_0|wi_1|wo)")


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


@register_hf_mapping("mixtral")
class MixtralHF(MoeHFMixin, LlamaHF):
  architectures = ("MixtralForCausalLM",)
  expert_re, gate_re, expert_names, moe_prefix = _HF_EXPERT, _HF_GATE, _EXPERT_HF, "block_sparse_moe"

  def decoder_block_for(self, hf: dict) -> str:
    return "mixtral"

  def family_keys(self, hf: dict, keys: dict) -> list[str]:
    keys.update(self.moe_keys(hf, "num_local_experts"))
    keys["base_moe_mlp_dim"] = keys["base_mlp_dim"]
    keys["norm_topk_prob"] = True
    keys["sliding_window_size"] = int(hf.get("sliding_window") or 0)
    return []

  def hf_config_from(self, spec: ModelSpec) -> dict:
    m = spec.moe
    if m is None or not m.norm_topk_prob or m.routed_score_func not in ("", "softmax") or m.shared_experts or \
        m.routed_bias or m.n_routing_groups > 0 or m.first_num_dense_layers or m.routed_scaling_factor != 1.0 or \
        m.interleave_moe_layer_step != 1:
      raise HFConfigError("MixtralForCausalLM routes by softmax, top-k, renormalised (norm_topk_prob=true), no "
                          "shared experts, routed bias, groups, dense layers or routed scaling")
    cfg = {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", **self._common_config(spec),
           "num_local_experts": m.num_experts, "num_experts_per_tok": m.num_experts_per_tok,
           "sliding_window": spec.sliding_window_size or None, "router_jitter_noise": 0.0,
           "output_router_logits": False, "router_aux_loss_coef": m.load_balance_loss_weight}
    cfg["intermediate_size"] = m.mlp_dim
    return cfg
