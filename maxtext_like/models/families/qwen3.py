"""Qwen3 dense (decoder_block 'qwen3'): the llama block with QK-norm (`use_qk_norm`): an RMSNorm over
head_dim of every query and key head, before RoPE; small models tie the output logits to the embedding.

Hugging Face `Qwen3ForCausalLM` maps as llama (see llama.py) plus
  model.layers.i.self_attn.q_norm.weight   ....self_attention.query_norm.scale  [H]
  model.layers.i.self_attn.k_norm.weight   ....self_attention.key_norm.scale    [H]
Qwen3's optional sliding window and `attention_bias=true` (which also biases o_proj) are not supported.
"""

from __future__ import annotations

from maxtext_like.models.family import Family
from maxtext_like.models.hf_registry import HFConfigError
from maxtext_like.models.families.llama import LlamaDecoderLayer, LlamaHF
from maxtext_like.models.spec import ModelSpec


class Qwen3HF(LlamaHF):
  architectures = ("Qwen3ForCausalLM",)

  def decoder_block_for(self, hf: dict) -> str:
    return "qwen3"

  def family_keys(self, hf: dict, keys: dict) -> list[str]:
    keys["use_qk_norm"] = True
    return ["use_sliding_window=true is not supported"] if hf.get("use_sliding_window") else []

  def hf_config_from(self, spec: ModelSpec) -> dict:
    if not spec.use_qk_norm:
      raise HFConfigError("Qwen3ForCausalLM always normalises q and k: set use_qk_norm=true")
    if spec.attention_bias:
      raise HFConfigError("Qwen3ForCausalLM has no q/k/v-only bias: set attention_bias=false")
    return {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", **self._common_config(spec),
            "attention_bias": False, "use_sliding_window": False, "sliding_window": None,
            "max_window_layers": spec.num_decoder_layers}


FAMILY = Family(names=("qwen3",), block=LlamaDecoderLayer, hf=Qwen3HF())
