"""DeepSeek-V2/V3 (MLA + YaRN + MoE) on the parity table's tiny models: KV caches (naive and latent) == the full
forward, and the latent cache holds the compressed latent. (Logits, greedy generation and preset counts vs
transformers: families/test_parity.py.)"""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

import parity_cases as pc
from hf_parity_lib import our_cached_logits, our_logits, our_model, tokens
from maxtext_like.models import build_model


@pytest.mark.parametrize("naive", [True, False])
@pytest.mark.parametrize("name", list(pc.DEEPSEEK_CASES))
def test_cache_decode_equals_full_forward(name, naive):
  spec = pc.spec("deepseek", name).replace(mla_naive_kvcache=naive, max_target_length=40)
  model = our_model(spec, pc.hf_model("deepseek", name), scan_layers=True)
  toks = tokens(2, 14, seed=2, vocab=spec.vocab_size)
  full = our_logits(model, toks)
  diff = float(np.abs(our_cached_logits(model, toks, 8, 40) - full).max())
  print(f"{name} naive={naive}: cache decode vs full max diff {diff:.2e}")
  assert diff < 1e-5


def test_latent_cache_is_compressed():
  spec = pc.spec("deepseek", "v3").replace(mla_naive_kvcache=False)
  cache = nnx.eval_shape(lambda: build_model(spec, nnx.Rngs(0))).init_cache(1, 8)
  assert cache.k_LBSKH.shape[-2:] == (1, 16) and cache.v_LBSKH.shape[-2:] == (1, 8)  # [c (R), k_rope (Hr)]
