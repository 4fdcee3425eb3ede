"""Mixtral (decoder_block 'mixtral'): the llama block with its MLP replaced by a `moe.MoeBlock`.

Routing is softmax over all experts, top-k, renormalised (`norm_topk_prob: true` in the presets; MaxText
hard-codes this for mixtral). The block (`moe_block.moe_decoder_layer`) is shared with qwen3_moe (which adds QK-norm through
`use_qk_norm`); `first_num_dense_layers` puts that many dense llama layers first (`dense_layers` stack, then
`moe_layers`; the HF mappings here refuse such checkpoints); `interleave_moe_layer_step` = k > 1 makes layer i MoE iff
(i + 1) % k == 0 (HF qwen3_moe's `decoder_sparse_step`), the others dense llama MLPs of mlp_dim.

Hugging Face `MixtralForCausalLM` (save_pretrained layout of transformers 5.23, per-expert tensors) maps as
llama (see llama.py) plus, with W.T the transposed torch Linear weight:
  model.layers.i.block_sparse_moe.gate.weight          decoder.layers.i.mlp.gate.kernel = W.T   [D, E]
  model.layers.i.block_sparse_moe.experts.e.w1.weight  decoder.layers.i.mlp.wi_0[e] = W.T       [D, F]
  model.layers.i.block_sparse_moe.experts.e.w3.weight  ....mlp.wi_1[e] = W.T
  model.layers.i.block_sparse_moe.experts.e.w2.weight  ....mlp.wo[e] = W.T                        [F, D]
One HF tensor fills one expert's slice of our stacked [E, ...] kernel: `to_ours` returns the path
`decoder.layers.i.mlp.wi_0[e]` (the converter's slice address: index e of axis 0); `to_hf` splits the stacked tensor.
"""

from __future__ import annotations

from maxtext_like.models.family import Family
from maxtext_like.models.hf_registry import HFConfigError, Table
from maxtext_like.models.families.llama import LlamaHF
from maxtext_like.models.moe_block import hf_expert_rows, hf_moe_keys, moe_decoder_layer, moe_layer_stacks
from maxtext_like.models.spec import ModelSpec


# ---- Hugging Face mapping ----------------------------------------------------------------------------------

class MixtralHF(LlamaHF):
  architectures = ("MixtralForCausalLM",)
  layer_table = Table(LlamaHF.layer_table.rows,
                      hf_expert_rows("block_sparse_moe.", {"w1": "wi_0", "w3": "wi_1", "w2": "wo"}))

  def decoder_block_for(self, hf: dict) -> str:
    return "mixtral"

  def family_keys(self, hf: dict, keys: dict) -> list[str]:
    keys.update(hf_moe_keys(hf, "num_local_experts"))
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


FAMILY = Family(names=("mixtral",), block=moe_decoder_layer, hf=MixtralHF(), moe=True, spec_fields=("moe",),
                layer_stacks=moe_layer_stacks)
