"""Qwen3 MoE (decoder_block 'qwen3_moe'): mixtral's MoE layer with Qwen3's QK-norm (`use_qk_norm`) and
`norm_topk_prob` taken from the checkpoint (true for the published models).

Hugging Face `Qwen3MoeForCausalLM` (save_pretrained layout of transformers 5.23) maps as qwen3 (see qwen3.py) plus
  model.layers.i.mlp.gate.weight                    decoder.layers.i.mlp.gate.kernel = W.T   [D, E]
  model.layers.i.mlp.experts.e.gate_proj.weight     decoder.layers.i.mlp.wi_0[e] = W.T       [D, F]
  model.layers.i.mlp.experts.e.up_proj.weight       ....mlp.wi_1[e] = W.T
  model.layers.i.mlp.experts.e.down_proj.weight     ....mlp.wo[e] = W.T                        [F, D]
F is HF's `moe_intermediate_size` (our base_moe_mlp_dim); HF's dense `intermediate_size` (our base_mlp_dim) sizes the
dense layers of `decoder_sparse_step` = k > 1 (our interleave_moe_layer_step: layer i sparse iff (i + 1) % k == 0,
a stack of period k), whose MLPs map as llama's `mlp.gate_proj/up_proj/down_proj`; `mlp_only_layers` is refused.
"""

from __future__ import annotations

from maxtext_like.models.family import Family
from maxtext_like.models.hf_registry import HFConfigError, Table
from maxtext_like.models.moe_block import hf_expert_rows, hf_moe_keys, moe_decoder_layer, moe_layer_stacks
from maxtext_like.models.families.qwen3 import Qwen3HF
from maxtext_like.models.spec import ModelSpec

class Qwen3MoeHF(Qwen3HF):
  architectures = ("Qwen3MoeForCausalLM",)
  layer_table = Table(Qwen3HF.layer_table.rows,
                      hf_expert_rows("mlp.", {"gate_proj": "wi_0", "up_proj": "wi_1", "down_proj": "wo"}))

  def decoder_block_for(self, hf: dict) -> str:
    return "qwen3_moe"

  def family_keys(self, hf: dict, keys: dict) -> list[str]:
    problems = super().family_keys(hf, keys)
    keys.update(hf_moe_keys(hf, "num_experts"))
    keys["base_moe_mlp_dim"] = int(hf["moe_intermediate_size"])
    keys["norm_topk_prob"] = bool(hf.get("norm_topk_prob", False))
    if hf.get("mlp_only_layers"):
      problems.append("mlp_only_layers (dense layers at listed indices) is not supported; decoder_sparse_step is")
    step = int(hf.get("decoder_sparse_step", 1) or 1)
    if step != 1:
      keys["interleave_moe_layer_step"] = step  # layer i sparse iff (i + 1) % step == 0
    return problems

  def hf_config_from(self, spec: ModelSpec) -> dict:
    m = spec.moe
    if m is None or m.routed_score_func not in ("", "softmax") or m.shared_experts or m.routed_bias or \
        m.n_routing_groups > 0 or m.first_num_dense_layers or m.routed_scaling_factor != 1.0:
      raise HFConfigError("Qwen3MoeForCausalLM routes by softmax and top-k (norm_topk_prob optional), without "
                          "shared experts, routed bias, groups, dense layers or routed scaling")
    cfg = super().hf_config_from(spec)
    cfg.update({"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
                "num_experts": m.num_experts, "num_experts_per_tok": m.num_experts_per_tok,
                "moe_intermediate_size": m.mlp_dim, "norm_topk_prob": m.norm_topk_prob,
                "decoder_sparse_step": m.interleave_moe_layer_step, "mlp_only_layers": [], "output_router_logits": False,
                "router_aux_loss_coef": m.load_balance_loss_weight})
    return cfg


FAMILY = Family(names=("qwen3_moe",), block=moe_decoder_layer, hf=Qwen3MoeHF(), moe=True, spec_fields=("moe",),
                layer_stacks=moe_layer_stacks)
