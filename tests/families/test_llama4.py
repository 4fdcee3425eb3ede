"""Llama 4 text (decoder_block 'llama4') against transformers' Llama4ForCausalLM (eager, float32): the MoE layer
alone, logits of a Scout-like (every layer MoE, QK norm, llama3 RoPE scaling with low == high) and a Maverick-like
(MoE every 2nd layer, top-2, plain RoPE) tiny model in the loop and the scanned layout, greedy generation, KV-cache
decode == full forward, the HF mapping both ways (in memory and through convert.to_maxtext / to_hf), and the
presets' parameter counts on the meta device.

Both tiny models have chunked attention (chunk 3) on their RoPE layers, NoPE layers (every 2nd / every 4th) and
temperature tuning, whose floor_scale is 4 here instead of 8192 (the family's constant is patched, HF reads its
config) so that it acts within 24 tokens.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
import yaml
from flax import nnx

from hf_parity_lib import hf_greedy, hf_logits, hf_param_count, jit, our_greedy, our_logits, our_model
from maxtext_like.config import load_config
from maxtext_like.models.families import llama4
from maxtext_like.models.hf_registry import HFConfigError, get_hf_mapping
from maxtext_like.runtime.model_spec import model_spec

VOCAB = 128
BASE = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=16, intermediate_size_mlp=48, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_local_experts=4, rms_norm_eps=1e-5,
            max_position_embeddings=1024, attention_chunk_size=3, attn_temperature_tuning=True, floor_scale=4,
            attn_scale=0.1, tie_word_embeddings=False)
CASES = {
    # Scout: all layers MoE, top-1, QK norm, llama3 RoPE scaling with low == high (16 / 1 / 1; original 64 so that
    # the scaling acts on head_dim 8)
    "scout": dict(num_experts_per_tok=1, interleave_moe_layer_step=1, no_rope_layer_interval=2, use_qk_norm=True,
                  rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 16.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 1.0, "original_max_position_embeddings": 64}),
    # Maverick: MoE every 2nd layer (dense MLPs of intermediate_size_mlp between), no QK norm, plain RoPE; top-2
    "maverick": dict(num_experts_per_tok=2, interleave_moe_layer_step=2, no_rope_layer_interval=4, use_qk_norm=False,
                     rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
}
MEASURED: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def small_floor_scale():
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(llama4, "TEMPERATURE_TUNING", (4.0, 0.1))
    yield


def redraw(model, seed=0):
  """Every weight at O(1) scale: N(0, 1/fan_in) kernels (fan-in: the last axis of a torch Linear, axis 1 of the
  fused [E, in, out] experts), N(0, 1) embeddings, norms 1 + N(0, 0.2^2)."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight"):
        p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
      elif "embed_tokens" in name:
        p.copy_(torch.randn(p.shape, generator=g))
      else:
        fan_in = p.shape[1] if "experts." in name else p.shape[-1]
        p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
  return model


def hf_model(name: str, seed=0):
  cfg = transformers.Llama4TextConfig(**BASE, **CASES[name])
  model = transformers.Llama4ForCausalLM._from_config(cfg, attn_implementation="eager", dtype=torch.float32).eval()
  model.generation_config.eos_token_id = None
  model.generation_config.pad_token_id = 0
  return redraw(model, seed)


def hf_config(name: str) -> dict:
  c = transformers.Llama4TextConfig(**BASE, **CASES[name]).to_dict()
  c["architectures"] = ["Llama4ForCausalLM"]
  return c


def spec_of(keys: dict, tmp_path, *overrides):
  """Our spec through the config system, as the converter's model.yml would give it."""
  yml = tmp_path / "model.yml"
  yml.write_text(yaml.safe_dump(keys))
  return model_spec(load_config(["base.yml", f"model_name={yml}", "attention=dot_product", "remat_policy=none",
                                 *overrides], env={}))


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
  out = {}
  for name in CASES:
    keys = get_hf_mapping("llama4").model_keys_from_hf(hf_config(name))
    out[name] = (hf_model(name), spec_of(keys, tmp_path_factory.mktemp(name), "max_target_length=48",
                                        "max_prefill_predict_length=8"))
  return out


def tokens(b, t, seed=0):
  return np.random.RandomState(seed).randint(0, VOCAB, (b, t)).astype(np.int32)


def test_keys_from_hf_config():
  keys = get_hf_mapping("llama4").model_keys_from_hf(hf_config("scout"))
  assert {k: keys[k] for k in ("base_mlp_dim", "base_moe_mlp_dim", "num_experts", "shared_experts",
                               "interleave_moe_layer_step", "nope_layer_interval", "chunk_attn_window_size",
                               "use_qk_norm", "temperature_tuning", "rope_type", "rope_llama31_factor",
                               "rope_llama31_high_freq_factor", "rope_llama31_original_max_position")} == {
      "base_mlp_dim": 48, "base_moe_mlp_dim": 16, "num_experts": 4, "shared_experts": 1,
      "interleave_moe_layer_step": 1, "nope_layer_interval": 2, "chunk_attn_window_size": 3, "use_qk_norm": True,
      "temperature_tuning": True, "rope_type": "llama3.1", "rope_llama31_factor": 16.0,
      "rope_llama31_high_freq_factor": 1.0, "rope_llama31_original_max_position": 64}
  bad = dict(hf_config("maverick"), moe_layers=[0, 3], no_rope_layers=[1, 0, 0, 1], floor_scale=100)
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
  import jax
  import jax.numpy as jnp
  from transformers.models.llama4.modeling_llama4 import Llama4TextMoe

  from maxtext_like.models import moe
  from maxtext_like.models.moe import MoeBlock, MoeSpec, dense_reference
  from maxtext_like.models.spec import ModelSpec
  cfg = transformers.Llama4TextConfig(**BASE, **{**CASES["scout"], "num_experts_per_tok": k})
  hf = redraw(Llama4TextMoe(cfg).eval(), seed=k)
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


@pytest.mark.parametrize("scan", [False, True])
@pytest.mark.parametrize("name", list(CASES))
def test_logits_match_transformers(cases, name, scan):
  hf, spec = cases[name]
  toks = tokens(2, 24)  # 8 chunks of 3; temperature tuning scales queries from position 3 on
  ref = hf_logits(hf, toks)
  diff = float(np.abs(our_logits(our_model(spec, hf, scan_layers=scan), toks) - ref).max())
  MEASURED[f"{name} scan={scan}"] = diff
  print(f"llama4 {name} scan_layers={scan}: max |logits diff| = {diff:.2e} (logits up to {np.abs(ref).max():.1f})")
  assert diff < 1e-4


@pytest.mark.parametrize("name,scan", [("scout", True), ("maverick", False)])
def test_cache_decode_and_greedy_generation(cases, name, scan):
  hf, spec = cases[name]
  model = our_model(spec, hf, scan_layers=scan)
  toks = tokens(2, 14, seed=2)
  graphdef, state = nnx.split(model)
  full = np.asarray(jit(lambda s, t: nnx.merge(graphdef, s)(t))(state, toks))
  prefill = jit(lambda s, t: nnx.merge(graphdef, s).prefill(t, max_length=32))
  step = jit(lambda s, t, c: nnx.merge(graphdef, s).decode_step(t, c))
  logits, cache = prefill(state, toks[:, :5])
  steps = [np.asarray(logits)]
  for t in range(5, 14):  # decoding crosses chunk boundaries (3) and the temperature floors (4)
    logits, cache = step(state, toks[:, t:t + 1], cache)
    steps.append(np.asarray(logits))
  diff = float(np.abs(np.concatenate(steps, axis=1) - full).max())
  print(f"llama4 {name}: KV-cache decode vs full forward {diff:.2e}")
  assert diff < 1e-4
  prompts = tokens(2, 6, seed=1)
  assert our_greedy(model, prompts, 10) == hf_greedy(hf, prompts, 10)


@pytest.mark.parametrize("name", list(CASES))
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
  assert mapping.model_keys_from_hf(mapping.hf_config_from(spec)) == mapping.model_keys_from_hf(hf_config(name))


def test_convert_round_trip(cases, tmp_path):
  """save_pretrained -> convert.to_maxtext (scanned: units of 4 layers) -> logits == HF's; convert.to_hf (experts
  re-fused into gate_up_proj) -> from_pretrained -> logits == ours."""
  import orbax.checkpoint as ocp

  from maxtext_like.convert import to_hf, to_maxtext
  from maxtext_like.models import build_model
  hf, _ = cases["maverick"]
  hf.save_pretrained(tmp_path / "hf")
  out = to_maxtext(str(tmp_path / "hf"), str(tmp_path / "ours"), ["scan_layers=true"])
  argv = ["base.yml", f"model_name={out}/model.yml", "scan_layers=true", "attention=dot_product",
          "remat_policy=none"]
  spec = model_spec(load_config(argv, env={}))
  model = nnx.eval_shape(lambda: build_model(spec, nnx.Rngs(0)))
  restored = ocp.StandardCheckpointer().restore(out, {"params": nnx.state(model, nnx.Param)})
  nnx.update(model, restored["params"])
  toks = tokens(2, 20, seed=3)
  ours = our_logits(model, toks)
  d1 = float(np.abs(ours - hf_logits(hf, toks)).max())
  back_dir = to_hf(str(tmp_path / "back"), [*argv, f"load_parameters_path={out}"])
  back = transformers.AutoModelForCausalLM.from_pretrained(back_dir, attn_implementation="eager").float().eval()
  d2 = float(np.abs(ours - hf_logits(back, toks)).max())
  MEASURED["convert hf->ours"], MEASURED["convert ours->hf"] = d1, d2
  print(f"llama4 convert: hf->ours {d1:.2e}, ours->hf {d2:.2e}")
  assert type(back).__name__ == "Llama4ForCausalLM" and d1 < 1e-4 and d2 < 1e-4


@pytest.mark.parametrize("preset,published", [("llama4-17b-16e", 107_769_861_120),
                                              ("llama4-17b-128e", 400_711_848_960)])
def test_preset_param_count_equals_transformers(preset, published):
  """The text model of Scout (109B with the vision tower) / Maverick (400B)."""
  from maxtext_like.models import count_params
  spec = model_spec(load_config(["base.yml", f"model_name={preset}"], env={}))
  ours, theirs = count_params(spec), hf_param_count(spec, buffers=True)
  print(f"{preset}: ours {ours:,} transformers {theirs:,}")
  assert ours == theirs == published
