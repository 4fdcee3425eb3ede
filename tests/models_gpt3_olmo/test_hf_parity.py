"""Logits and greedy decoding of our gpt3 / olmo3 equal transformers' (GPT2LMHeadModel, Olmo2ForCausalLM,
Olmo3ForCausalLM) on the same random weights, in the loop and scanned layouts."""

import copy
import functools

import numpy as np
import pytest
import torch

import family_testlib as g
from hf_parity_lib import hf_greedy, our_greedy
from maxtext_like.models.hf_registry import get_hf_mapping

FAMILIES = sorted(g.SPECS)
TOL = 1e-4  # measured: max |diff| ~5e-6 on logits of magnitude 5-10 (docs/models.md)
MEASURED = {}


@functools.cache
def _family(name):
  spec = g.SPECS[name]
  return name, spec, g.hf_model(spec)


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
  return _family(request.param)


# Scanned layout on the main variants only; the unfused gpt3 and OLMo 2 share those code paths (2 shared CPU cores).
LOGIT_CASES = [(name, False) for name in FAMILIES] + [(name, True) for name in FAMILIES if name not in ("gpt3_unfused", "olmo2")]


@pytest.mark.parametrize("name,scan_layers", LOGIT_CASES)
def test_logits_match_transformers(name, scan_layers):
  name, spec, hf = _family(name)
  toks = g.tokens(2, 4 * g.WINDOW)  # longer than the olmo3 sliding window
  want = g.hf_logits(hf, toks)
  model = g.our_model(spec, hf, scan_layers=scan_layers)
  got = g.our_logits(model, toks)
  diff = float(np.abs(got - want).max())
  print(f"{name} ({type(hf).__name__}) scan_layers={scan_layers}: max |logits diff| = {diff:.2e} "
        f"(max |logit| {np.abs(want).max():.2f})")
  assert diff < TOL
  assert np.abs(want).max() > 1.0
  MEASURED[(name, scan_layers)] = diff


def test_hf_architecture(family):
  name, spec, hf = family
  want = {"gpt3": "GPT2LMHeadModel", "gpt3_unfused": "GPT2LMHeadModel", "olmo2": "Olmo2ForCausalLM",
          "olmo3": "Olmo3ForCausalLM"}[name]
  assert type(hf).__name__ == want


def test_comparison_can_fail(family):
  """A perturbed attention output projection, and for olmo3 a missing sliding window or YaRN, are far off."""
  name, spec, hf = family
  toks = g.tokens(1, 4 * g.WINDOW)
  want = g.hf_logits(hf, toks)
  perturbed = copy.deepcopy(hf)
  with torch.no_grad():
    for n, p in perturbed.named_parameters():
      if n.endswith(("layers.0.self_attn.o_proj.weight", "h.0.attn.c_proj.weight")):
        p.add_(0.2 * torch.randn_like(p))  # (not a scaling: OLMo's post-norm would cancel it)
  assert np.abs(g.our_logits(g.our_model(spec, perturbed), toks) - want).max() > 1e-2
  if spec.sliding_window_size:
    no_window = g.our_model(spec.replace(sliding_window_size=0), hf)
    assert np.abs(g.our_logits(no_window, toks) - want).max() > 1e-2
  if spec.rope_type == "yarn":  # YaRN on the full layers is visible
    no_yarn = g.our_model(spec.replace(rope_type="default"), hf)
    assert np.abs(g.our_logits(no_yarn, toks) - want).max() > 1e-2


@pytest.mark.parametrize("name", [n for n in FAMILIES if n not in ("gpt3_unfused", "olmo2")])  # same decoding path
def test_greedy_generation_matches_transformers(name):
  spec = g.SPECS[name]
  hf = g.hf_model(spec, embed_std=0.1)  # small embeddings: the tied gpt3 does not just repeat a token
  prompt = g.tokens(1, 5, seed=3)
  want = hf_greedy(hf, prompt, 20)[0]
  got = our_greedy(g.our_model(spec, hf, scan_layers=True), prompt, 20, max_prefill=8)[0]
  assert got == want, (name, got, want)
  assert len(set(want)) > 2  # not a degenerate repeat of one token


def test_mapping_round_trips_bit_exactly(family):
  name, spec, hf = family
  mapping = get_hf_mapping(spec.decoder_block)
  sd = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
  if spec.logits_via_embedding:
    sd.pop("lm_head.weight")
  ours = g.state_dict_to_params(spec, sd)
  back = dict(mapping.to_hf_many(spec, ours.items()))
  assert sorted(back) == sorted(sd)
  for k, v in sd.items():
    assert back[k].shape == v.shape and np.array_equal(back[k], v), k
