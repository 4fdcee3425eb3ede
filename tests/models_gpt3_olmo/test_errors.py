"""What the gpt3 / olmo3 mappings and blocks cannot represent is refused by name, not converted wrongly."""

import pytest
from flax import nnx

import parity_cases as pc
from maxtext_like.models import ModelSpec, build_model
from maxtext_like.models.hf_registry import HFConfigError, get_hf_mapping, mapping_for_architecture


def test_architectures_route_to_the_families():
  assert mapping_for_architecture("GPT2LMHeadModel") is get_hf_mapping("gpt3")
  assert mapping_for_architecture("Olmo2ForCausalLM") is mapping_for_architecture("Olmo3ForCausalLM") \
      is get_hf_mapping("olmo3")


def test_gpt2_config_problems_listed_together():
  c = get_hf_mapping("gpt3").hf_config_from(pc.GPT_OLMO_SPECS["gpt3"])
  with pytest.raises(HFConfigError, match=r"activation_function='relu'.*scale_attn_by_inverse_layer_idx"):
    get_hf_mapping("gpt3").model_keys_from_hf({**c, "activation_function": "relu",
                                                "scale_attn_by_inverse_layer_idx": True})
  with pytest.raises(HFConfigError, match="head_dim \\* heads == emb_dim"):
    get_hf_mapping("gpt3").hf_config_from(pc.GPT_OLMO_SPECS["gpt3"].replace(head_dim=16))


def test_olmo3_rope_and_layer_types_checked():
  m = get_hf_mapping("olmo3")
  c = m.hf_config_from(pc.GPT_OLMO_SPECS["olmo3"])
  keys = m.model_keys_from_hf(c)
  assert (keys["rope_type"], keys["rope_factor"], keys["rope_attention_scaling"], keys["sliding_window_size"]) \
      == ("yarn", 8.0, True, pc.OLMO_WINDOW)
  bad = {**c, "rope_parameters": {**c["rope_parameters"], "sliding_attention": {"rope_type": "default",
                                                                                  "rope_theta": 10000.0}}}
  with pytest.raises(HFConfigError, match="sliding-layer rope_parameters"):
    m.model_keys_from_hf(bad)
  with pytest.raises(HFConfigError, match="layer_types"):
    m.model_keys_from_hf({**c, "layer_types": ["full_attention", "sliding_attention"] * 2 + ["full_attention"]})
  assert m.model_keys_from_hf({**c, "layer_types": ["full_attention"] * 5})["sliding_window_size"] == 0


def abstract(spec):
  return nnx.eval_shape(lambda: build_model(spec, nnx.Rngs(0)))


def test_blocks_refuse_what_they_do_not_read():
  with pytest.raises(ValueError, match="fused_qkv"):
    ModelSpec(decoder_block="llama2", fused_qkv=True)
  with pytest.raises(ValueError, match="mlp_activations"):
    abstract(pc.GPT_OLMO_SPECS["gpt3"].replace(mlp_activations=("silu", "linear")))
  with pytest.raises(ValueError, match="rope_interleave"):
    abstract(pc.GPT_OLMO_SPECS["olmo3"].replace(rope_interleave=True))
