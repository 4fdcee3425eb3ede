"""The gpt3 / olmo3 tiny models of the parity table (GPT2LMHeadModel, Olmo2ForCausalLM, Olmo3ForCausalLM): the
mapping writes the architecture, the comparison sees a perturbed layer, a missing sliding window or YaRN, and the
mapping round-trips every tensor bit-exactly. (Logits and greedy generation vs transformers:
families/test_parity.py.)"""

import copy

import numpy as np
import pytest
import torch

import parity_cases as pc
from hf_parity_lib import hf_logits, our_logits, our_model, tokens
from maxtext_like.models.hf_registry import get_hf_mapping, state_dict_to_params

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
