"""HF config <-> our config keys for the gemma families: a converted checkpoint's model.yml rebuilds the spec."""

import pytest
import transformers
import yaml

import parity_cases as pc
from maxtext_like.config import load_config
from maxtext_like.models.hf_registry import HFConfigError, get_hf_mapping
from maxtext_like.runtime.model_spec import model_spec

ARCH_FIELDS = ("decoder_block", "vocab_size", "emb_dim", "num_query_heads", "num_kv_heads", "head_dim", "mlp_dim",
               "num_decoder_layers", "mlp_activations", "normalization_layer_epsilon", "logits_via_embedding",
               "final_logits_soft_cap", "attn_logits_soft_cap", "sliding_window_size", "use_post_attn_norm",
               "use_post_ffw_norm", "query_pre_attn_scalar", "rope_max_timescale", "local_rope_max_timescale",
               "rope_linear_scaling_factor")


@pytest.mark.parametrize("name", sorted(pc.GEMMA_SPECS))
def test_model_keys_from_hf_rebuild_the_spec(name, tmp_path):
  spec = pc.GEMMA_SPECS[name]
  mapping = get_hf_mapping(name)
  hf_cfg = mapping.hf_config_from(spec)
  # transformers accepts the config and reads back the fields we rely on
  loaded = transformers.AutoConfig.for_model(**{k: v for k, v in hf_cfg.items() if k != "architectures"})
  assert loaded.num_hidden_layers == (2 if name == "gemma2" else 1) * spec.num_decoder_layers
  keys = mapping.model_keys_from_hf(loaded.to_dict())
  (tmp_path / "model.yml").write_text(yaml.safe_dump(keys))
  rebuilt = model_spec(load_config(["base.yml", f"model_name={tmp_path / 'model.yml'}"], env={}))
  want = {f: getattr(spec, f) for f in ARCH_FIELDS}
  got = {f: getattr(rebuilt, f) for f in ARCH_FIELDS}
  if name != "gemma3":  # only gemma3 reads the local RoPE base
    got["local_rope_max_timescale"] = want["local_rope_max_timescale"]
  assert got == want


def test_unrepresentable_configs_are_refused():
  m2 = get_hf_mapping("gemma2")
  c = m2.hf_config_from(pc.GEMMA_SPECS["gemma2"])
  with pytest.raises(HFConfigError, match="layer_types"):
    m2.model_keys_from_hf({**c, "layer_types": ["full_attention"] * c["num_hidden_layers"]})
  m3 = get_hf_mapping("gemma3")
  c = m3.hf_config_from(pc.GEMMA_SPECS["gemma3"])
  bad = {**c, "rope_parameters": {**c["rope_parameters"], "full_attention": {"rope_type": "yarn", "factor": 4.0}}}
  with pytest.raises(HFConfigError, match="rope"):
    m3.model_keys_from_hf(bad)


def test_gemma_only_fields_are_refused_by_other_blocks():
  from maxtext_like.models import ModelSpec
  with pytest.raises(ValueError, match="use_post_attn_norm=True is not used by decoder_block='llama2'"):
    ModelSpec(use_post_attn_norm=True)
  with pytest.raises(ValueError, match="local_rope_max_timescale"):
    ModelSpec(decoder_block="gemma2", local_rope_max_timescale=10_000)
  ModelSpec(decoder_block="gemma3", local_rope_max_timescale=10_000, use_post_ffw_norm=True)
