"""Qwen2 / Qwen2.5 (decoder_block 'qwen2'): the llama block with learned q/k/v biases (`attention_bias`).

Hugging Face `Qwen2ForCausalLM` maps as llama (see llama.py) plus
  model.layers.i.self_attn.{q,k,v}_proj.bias   ....self_attention.{query,key,value}.bias  [N*H] -> [N, H]
Qwen2's optional per-layer sliding window (`use_sliding_window`) is not supported.
"""

from __future__ import annotations

from maxtext_like.models.family import Family
from maxtext_like.models.hf_registry import HFConfigError
from maxtext_like.models.families.llama import LlamaDecoderLayer, LlamaHF
from maxtext_like.models.spec import ModelSpec


class Qwen2HF(LlamaHF):
  architectures = ("Qwen2ForCausalLM",)
  qkv_bias = True

  def decoder_block_for(self, hf: dict) -> str:
    return "qwen2"

  def family_keys(self, hf: dict, keys: dict) -> list[str]:
    keys["attention_bias"] = True
    return ["use_sliding_window=true is not supported"] if hf.get("use_sliding_window") else []

  def hf_config_from(self, spec: ModelSpec) -> dict:
    if not spec.attention_bias:
      raise HFConfigError("Qwen2ForCausalLM always has q/k/v biases: set attention_bias=true")
    return {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", **self._common_config(spec),
            "use_sliding_window": False, "sliding_window": None, "max_window_layers": spec.num_decoder_layers}


FAMILY = Family(names=("qwen2",), block=LlamaDecoderLayer, hf=Qwen2HF())
