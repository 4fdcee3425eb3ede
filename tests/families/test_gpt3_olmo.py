"""gpt3 / olmo3 (GPT2LMHeadModel, Olmo2ForCausalLM, Olmo3ForCausalLM) on the parity table's tiny models: the
mapping writes the architecture, the comparison sees a perturbed layer, a missing sliding window or YaRN, the
mapping round-trips every tensor bit-exactly; what the mappings and blocks cannot represent is refused by name, not
converted wrongly; every preset has the published hyperparameters. Logits, greedy generation and preset parameter
counts vs transformers: test_parity.py."""

import copy
import pathlib

import numpy as np
import pytest
import torch
from flax import nnx

import parity_cases as pc
from hf_parity_lib import hf_logits, our_logits, our_model, tokens
from maxtext_like.config import load_config
from maxtext_like.models import ModelSpec, build_model
from maxtext_like.models.hf_registry import (HFConfigError, get_hf_mapping, mapping_for_architecture,
                                            state_dict_to_params)
from maxtext_like.runtime.model_spec import model_spec

ARCH = {"gpt3": "GPT2LMHeadModel", "gpt3_unfused": "GPT2LMHeadModel", "olmo2": "Olmo2ForCausalLM",
        "olmo3": "Olmo3ForCausalLM"}


@pytest.fixture(params=sorted(pc.GPT_OLMO_SPECS))
def family(request):
  name = request.param
  spec = pc.GPT_OLMO_SPECS[name]
  return name, spec, pc.hf_model(spec.decoder_block, name)


def test_hf_architecture(family):
  name, spec, hf = family
  assert type(hf).__name__ == ARCH[name]


def test_comparison_can_fail(family):
  """A perturbed attention output projection, and for olmo3 a missing sliding window or YaRN, are far off."""
  name, spec, hf = family
  toks = tokens(1, 4 * pc.OLMO_WINDOW)
  want = hf_logits(hf, toks)
  perturbed = copy.deepcopy(hf)
  with torch.no_grad():
    for n, p in perturbed.named_parameters():
      if n.endswith(("layers.0.self_attn.o_proj.weight", "h.0.attn.c_proj.weight")):
        p.add_(0.2 * torch.randn_like(p))  # (not a scaling: OLMo's post-norm would cancel it)
  assert np.abs(our_logits(our_model(spec, perturbed), toks) - want).max() > 1e-2
  if spec.sliding_window_size:
    no_window = our_model(spec.replace(sliding_window_size=0), hf)
    assert np.abs(our_logits(no_window, toks) - want).max() > 1e-2
  if spec.rope_type == "yarn":  # YaRN on the full layers is visible
    no_yarn = our_model(spec.replace(rope_type="default"), hf)
    assert np.abs(our_logits(no_yarn, toks) - want).max() > 1e-2


def test_mapping_round_trips_bit_exactly(family):
  name, spec, hf = family
  mapping = get_hf_mapping(spec.decoder_block)
  sd = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
  if spec.logits_via_embedding:
    sd.pop("lm_head.weight")
  ours = state_dict_to_params(spec, sd)
  back = dict(mapping.to_hf_many(spec, ours.items()))
  assert sorted(back) == sorted(sd)
  for k, v in sd.items():
    assert back[k].shape == v.shape and np.array_equal(back[k], v), k


# ---- what cannot be represented ---------------------------------------------------------------------------------

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


# ---- presets ----------------------------------------------------------------------------------------------------

MODELS = pathlib.Path(__file__).parents[2] / "configs" / "models"
PRESETS = sorted(p.stem for pattern in ("gpt3-*.yml", "olmo3-*.yml") for p in MODELS.glob(pattern))

# emb, heads, kv heads, head_dim, mlp, layers, vocab, positions (gpt3) / sliding window (olmo3).
# gpt3-175b is GPT-3 175B (Brown et al. 2020, table 2.1: d_model 12288, 96 layers x 96 heads of 128, BPE vocab
# 50257 padded to 50304 as MaxText; positions: MaxText's 16384 rows, the paper's context is 2048).
# gpt3-6b / gpt3-22b / gpt3-52k are MaxText's own sizes (not the paper's 6.7B / 13B models).
# olmo3-*: config.json of allenai/Olmo-3-1025-7B (7b, 7b-pt) and allenai/Olmo-3-1125-32B.
PUBLISHED = {
    "gpt3-175b": (12288, 96, 96, 128, 49152, 96, 50304, 16384),
    "gpt3-22b": (6144, 24, 24, 256, 24576, 48, 32768, 16384),
    "gpt3-6b": (3072, 12, 12, 256, 12288, 48, 32768, 16384),
    "gpt3-52k": (16, 2, 2, 8, 64, 1, 1024, 2048),
    "olmo3-7b": (4096, 32, 32, 128, 11008, 32, 100278, 4096),
    "olmo3-7b-pt": (4096, 32, 32, 128, 11008, 32, 100278, 4096),
    "olmo3-32b": (5120, 40, 8, 128, 27648, 64, 100278, 4096),
}
def test_all_presets_listed():
  assert PRESETS == sorted(PUBLISHED)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_hyperparameters(name):
  s = model_spec(load_config(["base.yml", f"model_name={name}"], env={}))
  last = s.trainable_position_size if s.decoder_block == "gpt3" else s.sliding_window_size
  got = (s.emb_dim, s.num_query_heads, s.num_kv_heads, s.head_dim, s.mlp_dim, s.num_decoder_layers, s.vocab_size,
         last)
  assert got == PUBLISHED[name]
  if s.decoder_block == "gpt3":
    assert s.fused_qkv and s.logits_via_embedding and s.mlp_activations == ("gelu",)
  else:
    assert s.use_qk_norm and not s.logits_via_embedding and s.mlp_activations == ("silu", "linear")
    assert s.normalization_layer_epsilon == 1e-6 and s.rope_max_timescale == 500_000
    rope = (s.rope_type, s.rope_factor, s.original_max_position_embeddings, s.rope_attention_scaling,
            s.rope_interleave)
    # YaRN x8 from 8192 with HF's attention factor 0.1 ln 8 + 1 (allenai/Olmo-3-*: rope_scaling), halves rotated
    assert rope[0] == "default" if name == "olmo3-7b-pt" else rope == ("yarn", 8.0, 8192, True, False)
