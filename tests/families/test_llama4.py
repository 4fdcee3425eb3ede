"""Llama 4 text (decoder_block 'llama4') against transformers (eager, float32): the HF config's keys, the QK norm
and temperature tuning, the MoE layer alone for every dispatch, and on the parity table's Scout-like and
Maverick-like tiny models (tests/parity_cases.py) KV-cache decode == full forward and the HF mapping both ways in
memory. Logits, greedy generation and preset counts vs transformers: test_parity.py; conversion:
convert/test_convert_gpt_oss_llama4.py.

Both tiny models have chunked attention (chunk 3) on their RoPE layers, NoPE layers (every 2nd / every 4th) and
temperature tuning, whose floor_scale is 4 here instead of 8192 (the family's constant is patched, HF reads its
config) so that it acts within 24 tokens.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from flax import nnx

import parity_cases as pc
from hf_parity_lib import hf_config, jit, our_cached_logits, our_logits, our_model, redraw_llama4, tokens
from maxtext_like.models.hf_registry import HFConfigError, get_hf_mapping


@pytest.fixture(scope="module", autouse=True)
def small_floor_scale():
  with pytest.MonkeyPatch.context() as mp:
    for obj, attr, value in pc.llama4_patches():
      mp.setattr(obj, attr, value)
    yield


@pytest.fixture(scope="module")
def cases():
  return {name: (pc.hf_model("llama4", name), pc.spec("llama4", name)) for name in pc.LLAMA4_CASES}


def test_keys_from_hf_config():
  scout, maverick = (hf_config(pc.hf_model("llama4", name)) for name in ("scout", "maverick"))
  keys = get_hf_mapping("llama4").model_keys_from_hf(scout)
  assert {k: keys[k] for k in ("base_mlp_dim", "base_moe_mlp_dim", "num_experts", "shared_experts",
                               "interleave_moe_layer_step", "nope_layer_interval", "chunk_attn_window_size",
                               "use_qk_norm", "temperature_tuning", "rope_type", "rope_llama31_factor",
                               "rope_llama31_high_freq_factor", "rope_llama31_original_max_position")} == {
      "base_mlp_dim": 48, "base_moe_mlp_dim": 16, "num_experts": 4, "shared_experts": 1,
      "interleave_moe_layer_step": 1, "nope_layer_interval": 2, "chunk_attn_window_size": 3, "use_qk_norm": True,
      "temperature_tuning": True, "rope_type": "llama3.1", "rope_llama31_factor": 16.0,
      "rope_llama31_high_freq_factor": 1.0, "rope_llama31_original_max_position": 64}
  bad = dict(maverick, moe_layers=[0, 3], no_rope_layers=[1, 0, 0, 1], floor_scale=100)
  with pytest.raises(HFConfigError, match="moe_layers.*no_rope_layers.*floor_scale"):
    get_hf_mapping("llama4").model_keys_from_hf(bad)


def test_qk_norm_and_temperature_match_hf():
  """The attention capabilities Llama 4 passes to the shared layer: the scale-free QK norm (norms.rms_normalize)
  == HF's Llama4TextL2Norm, and the query factors of temperature tuning (attention.temperature_scale) == HF's."""
  import jax.numpy as jnp
  from transformers.models.llama4.modeling_llama4 import Llama4TextL2Norm

  from maxtext_like.models.attention import temperature_scale
  from maxtext_like.models.norms import rms_normalize
  x = np.random.RandomState(0).randn(2, 5, 3, 8).astype(np.float32) * 3
  want = Llama4TextL2Norm(1e-5)(torch.tensor(x)).numpy()
  np.testing.assert_allclose(np.asarray(rms_normalize(jnp.asarray(x), 1e-5)), want, atol=1e-6)
  positions = np.arange(20000)[None]
  want = np.log1p(np.floor((positions + 1.0) / 8192)) * 0.1 + 1.0  # HF's attn_scales (arange positions)
  got = np.asarray(temperature_scale(jnp.asarray(positions), 8192.0, 0.1))[..., 0, 0]
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert got[0, 8190] == 1.0 and got[0, 8191] > 1.0


@pytest.mark.parametrize("k", [1, 2])
def test_moe_layer_matches_hf(k, monkeypatch):
  """Our MoeBlock with the Llama 4 router (sigmoid of the top-k logits, weights on the expert inputs) and a shared
  expert == HF's Llama4TextMoe, for every dispatch: the grouped matmul (blocked, ragged_dot), capacity einsums,
  and dense_reference."""
  import jax.numpy as jnp
  from transformers.models.llama4.modeling_llama4 import Llama4TextMoe

  from maxtext_like.models import moe
  from maxtext_like.models.moe import MoeBlock, MoeSpec, dense_reference
  from maxtext_like.models.spec import ModelSpec
  cfg = transformers.Llama4TextConfig(**pc.LLAMA4, **{**pc.LLAMA4_CASES["scout"], "num_experts_per_tok": k})
  hf = redraw_llama4(Llama4TextMoe(cfg).eval(), seed=k)
  D, F, E = 32, 16, 4
  w = {n: p.detach().numpy() for n, p in hf.named_parameters()}
  x = np.random.RandomState(0).randn(2, 9, D).astype(np.float32)
  with torch.no_grad():
    want = hf(torch.tensor(x))[0].numpy().reshape(2, 9, D)
  got = {}
  for dispatch in ("blocked", "ragged_dot", "capacity", "dense_reference"):
    m = MoeSpec(mlp_dim=F, num_experts=E, num_experts_per_tok=k, shared_experts=1,
                sparse_matmul=dispatch != "capacity")
    spec = ModelSpec(emb_dim=D, mlp_dim=48, moe=m, decoder_block="llama4")
    monkeypatch.setattr(moe, "GMM_IMPL", "ragged_dot" if dispatch == "ragged_dot" else "blocked")
    block = nnx.eval_shape(lambda: MoeBlock(spec.mlp_spec, m, rngs=nnx.Rngs(0), sigmoid_topk_router=True,
                                             weights_on_inputs=True))
    ours = {"gate.kernel": w["router.weight"].T, "wi_0": w["experts.gate_up_proj"][..., :F],
            "wi_1": w["experts.gate_up_proj"][..., F:], "wo": w["experts.down_proj"],
            **{f"shared_experts.{o}.kernel": w[f"shared_expert.{h}_proj.weight"].T
               for h, o in (("gate", "wi_0"), ("up", "wi_1"), ("down", "wo"))}}
    graphdef, state = nnx.split(block)
    flat = [(p, v.replace(jnp.asarray(ours[".".join(map(str, p))]))) for p, v in nnx.to_flat_state(state)]
    block = nnx.merge(graphdef, nnx.from_flat_state(flat))
    run = dense_reference if dispatch == "dense_reference" else (lambda b, x: b(x))
    got[dispatch] = np.asarray(jit(lambda s, x: run(nnx.merge(graphdef, s), x))(nnx.state(block), x))
  for dispatch, y in got.items():
    np.testing.assert_allclose(y, want, atol=1e-5, err_msg=dispatch)
  # the routing weight scales the expert's input, not its output: the other way round differs
  block.weights_on_inputs = False
  assert np.abs(np.asarray(block(jnp.asarray(x))) - want).max() > 1e-2


@pytest.mark.parametrize("name,scan", [("scout", True), ("maverick", False)])
def test_cache_decode_equals_full_forward(cases, name, scan):
  hf, spec = cases[name]
  model = our_model(spec, hf, scan_layers=scan)
  toks = tokens(2, 14, seed=2, vocab=spec.vocab_size)
  full = our_logits(model, toks)
  # decoding tokens 5..13 crosses chunk boundaries (3) and the temperature floors (4)
  diff = float(np.abs(our_cached_logits(model, toks, 5, 32) - full).max())
  print(f"llama4 {name}: KV-cache decode vs full forward {diff:.2e}")
  assert diff < 1e-4


@pytest.mark.parametrize("name", list(pc.LLAMA4_CASES))
def test_mapping_round_trips(cases, name):
  hf, spec = cases[name]
  mapping = get_hf_mapping("llama4")
  loop = spec.replace(scan_layers=False)
  tensors = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
  ours = [item for n, a in tensors.items() for item in mapping.to_ours(loop, n, a)]
  back = dict(mapping.to_hf_many(loop, ours))
  assert set(back) == set(tensors)
  for n, a in tensors.items():
    assert np.array_equal(back[n], a), n
  assert mapping.model_keys_from_hf(mapping.hf_config_from(spec)) == mapping.model_keys_from_hf(hf_config(hf))
