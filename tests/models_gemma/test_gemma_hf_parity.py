"""Logits and greedy decoding of our gemma/gemma2/gemma3 equal transformers' on the same random weights."""

import numpy as np
import pytest

import gemma_testlib as g
from hf_parity_lib import hf_greedy, our_greedy

FAMILIES = sorted(g.SPECS)
TOL = 1e-4  # measured: max |diff| 4e-6 .. 6e-6 on logits of magnitude 3-6 (docs/models.md)


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
  spec = g.SPECS[request.param]
  return request.param, spec, g.hf_model(spec)


@pytest.mark.parametrize("scan_layers", [False, True], ids=["loop", "scan"])
def test_logits_match_transformers(family, scan_layers):
  name, spec, hf = family
  toks = g.tokens(2, 3 * g.WINDOW)  # longer than the sliding window
  want = g.hf_logits(hf, toks)
  got = g.our_logits(g.our_model(spec, hf, scan_layers=scan_layers), toks)
  diff = float(np.abs(got - want).max())
  print(f"{name} scan_layers={scan_layers}: max |logits diff| = {diff:.2e} (max |logit| {np.abs(want).max():.2f})")
  assert diff < TOL
  # the comparison can fail: a model with one weight perturbed is far off
  assert np.abs(want).max() > 1.0


def test_greedy_generation_matches_transformers(family):
  name, spec, _ = family
  hf = g.hf_model(spec, embed_std=0.05)  # small embeddings: the tied model does not just repeat a token
  prompt = g.tokens(1, 5, seed=3)
  want = hf_greedy(hf, prompt, 20)[0]
  got = our_greedy(g.our_model(spec, hf, scan_layers=True), prompt, 20, max_prefill=8)[0]
  assert got == want, (name, got, want)
  assert len(set(want)) > 2  # not a degenerate repeat of one token
