"""The family registry: the folder is the list, its JAX-free declarations match the imported records, and every
list the config keeps (built blocks, MoE blocks, enumerated values) derives from it or from models/choices.py."""

import subprocess
import sys
import typing

import pytest

from maxtext_like.config import ConfigError, load_config
from maxtext_like.config import unsupported
from maxtext_like.config.sections.attention import AttentionSection
from maxtext_like.config.sections.model import ModelSection
from maxtext_like.config.sections.remat import RematSection
from maxtext_like.config.sections.rope import RopeSection
from maxtext_like.models import choices, registry
from maxtext_like.models.family import Family


def literal(section, key) -> set:
  return set(typing.get_args(section.model_fields[key].annotation))


def test_declarations_match_the_records():
  for name, declared in registry.declared().items():
    family = registry.get_family(name)
    assert isinstance(family, Family) and name in family.names and family.moe == declared.moe
    if family.hf is not None:
      assert family.hf.decoder_blocks == family.names
  assert registry.moe_decoder_blocks() == {n for f in registry.all_families() for n in f.names if f.moe}


def test_registry_reads_no_jax():
  code = ("import sys; from maxtext_like.models import registry; registry.declared(); "
          "from maxtext_like.config import load_config; load_config(['base.yml', 'decoder_block=mixtral', "
          "'override_model_config=true', 'num_experts=4'], env={}); print('jax' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
  assert out.strip() == "False"


def test_config_lists_derive_from_the_registry():
  built = registry.built_decoder_blocks()
  assert unsupported.PARTIAL["decoder_block"] == built
  assert built <= literal(ModelSection, "decoder_block")  # every built family is a MaxText decoder_block name
  with pytest.raises(ConfigError, match="has no MoE layers.*a MoE decoder_block"):
    load_config(["base.yml", "override_model_config=true", "num_experts=4"], env={})


def test_one_source_for_enumerated_values():
  assert literal(RematSection, "remat_policy") == set(choices.REMAT_POLICIES)
  assert unsupported.PARTIAL["rope_type"] == set(choices.ROPE_TYPES) <= literal(RopeSection, "rope_type")
  assert unsupported.PARTIAL["attention_type"] == set(choices.ATTENTION_TYPES) <= literal(AttentionSection, "attention_type")
  assert unsupported.PARTIAL["attention"] <= set(choices.ATTENTION_VALUES) <= literal(AttentionSection, "attention")
  assert set(choices.REMAT_NAMES) <= set(RematSection.model_fields)  # each remat location is a key


def test_minimal_with_context_from_the_command_line():
  cfg = load_config(["base.yml", "remat_policy=minimal_with_context"], env={})
  from maxtext_like.runtime.model_spec import model_spec
  assert model_spec(cfg).remat_policy == "minimal_with_context"


def test_family_config_keys_reach_only_their_family():
  """Config keys a family declares (Family.config_keys, here llama4's) are refused for other families at validation,
  reach the spec as family options, and an undeclared key is an error, never a silent default."""
  from maxtext_like.models import ModelSpec
  from maxtext_like.runtime.model_spec import model_spec
  assert registry.family_config_keys()["chunk_attn_window_size"] == {"llama4"}
  with pytest.raises(ConfigError, match="chunk_attn_window_size.*read only by decoder_block llama4"):
    load_config(["base.yml", "chunk_attn_window_size=8"], env={})
  spec = model_spec(load_config(["base.yml", "model_name=llama4-17b-16e", "override_model_config=true",
                                 "chunk_attn_window_size=64"], env={}))
  assert spec.option("chunk_attn_window_size") == 64 and spec.option("nope_layer_interval") == 4
  assert ModelSpec(decoder_block="llama4").option("nope_layer_interval") == -1  # base.yml's default
  with pytest.raises(KeyError, match="declares no config key 'sliding_window'"):
    spec.option("sliding_window")
