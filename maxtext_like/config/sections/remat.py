"""Rematerialisation (activation checkpointing) and host offload."""

from typing import Any, Literal

from maxtext_like.config.sections._base import F, NonNegFloat, NonNegInt, PosFloat, PosInt, Section


class RematSection(Section):
  """Rematerialisation (activation checkpointing) and host offload. (MaxText: RematAndOffload.)"""

  section_name = "remat"

  remat_policy: Literal['none', 'full', 'minimal', 'minimal_with_context', 'save_dot_with_context_except_mlp', 'save_dot_except_mlpwi', 'save_dot_except_mlp', 'save_qkv_proj', 'qkv_proj_offloaded', 'custom', 'minimal_offloaded', 'save_out_proj'] = F("The rematerialization policy, trading off speed and memory. maxtext_like adds 'none' (no rematerialisation).")
  remat_policy_for_vit: str = F("Remat policy for multimodal model's vision encoder.")
  decoder_layer_input: Literal['remat', 'device', 'offload'] = F("Remat policy for the decoder layer's input.")
  context: Literal['remat', 'device', 'offload'] = F('Remat policy for the attention context.')
  mlpwi: Literal['remat', 'device', 'offload'] = F("Remat policy for the first MLP layer's intermediate output.")
  mlpwi_0: Literal['remat', 'device', 'offload'] = F("Remat policy for the first part of a gated MLP's output.")
  mlpwi_1: Literal['remat', 'device', 'offload'] = F("Remat policy for the second part of a gated MLP's output.")
  mlpwo: Literal['remat', 'device', 'offload'] = F("Remat policy for the second MLP layer's output.")
  moe_mlpwi_0: Literal['remat', 'device', 'offload'] = F("Remat policy for the first part of a gated MoE's output.")
  moe_mlpwi_1: Literal['remat', 'device', 'offload'] = F("Remat policy for the second part of a gated MoE's output.")
  moe_mlpwo: Literal['remat', 'device', 'offload'] = F("Remat policy for the second MoE layer's output.")
  query_proj: Literal['remat', 'device', 'offload'] = F('Remat policy for the query projection.')
  key_proj: Literal['remat', 'device', 'offload'] = F('Remat policy for the key projection.')
  value_proj: Literal['remat', 'device', 'offload'] = F('Remat policy for the value projection.')
  query_wa_proj: Literal['remat', 'device', 'offload'] = F('Remat policy for the MLA query weighted attention projection.')
  kv_wa_proj: Literal['remat', 'device', 'offload'] = F('Remat policy for the MLA key and value weighted attention projection.')
  qkv_proj: Literal['remat', 'device', 'offload'] = F('Remat policy for fused QKV projection.')
  out_proj: Literal['remat', 'device', 'offload'] = F('Remat policy for the attention output projection.')
  mla_q: Literal['remat', 'device', 'offload'] = F("Remat policy for the mla's query projectiont.")
  mla_kv: Literal['remat', 'device', 'offload'] = F("Remat policy for the mla's key and value projection.")
  attention_out: Literal['remat', 'device', 'offload'] = F('Remat policy for the attention output.')
  engram: Literal['remat', 'device', 'offload'] = F('Remat policy for the engram output.')
  optimizer_memory_host_offload: bool = F('Offload optimizer state to host memory.')
  parameter_memory_host_offload: bool = F('Offload parameters to host memory.')
