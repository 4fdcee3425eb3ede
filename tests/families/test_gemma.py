"""gemma / gemma2 / gemma3: KV-cache decoding equals the full forward pass across local/global layers (gemma2 pairs,
gemma3 5:1), the flash kernel equals dot_product; HF config <-> our config keys (a converted checkpoint's model.yml
rebuilds the spec, what HF configs we cannot represent are refused); every preset holds the published
hyperparameters (gemma4 presets are out of scope). Logits, greedy generation and preset parameter counts vs
transformers: test_parity.py."""

import pathlib

import numpy as np
import pytest
import transformers
import yaml

import parity_cases as pc
from hf_parity_lib import our_cached_logits, our_logits, random_model, tokens
from maxtext_like.config import load_config
from maxtext_like.models.hf_registry import HFConfigError, get_hf_mapping
from maxtext_like.runtime.model_spec import model_spec


# ---- KV cache and kernels ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,scan_layers", [("gemma2", True), ("gemma2", False), ("gemma3", True)])
def test_prefill_then_decode_equals_full_forward(name, scan_layers):
  spec = pc.GEMMA_SPECS[name].replace(scan_layers=scan_layers, max_target_length=32)
  model = random_model(spec)
  T, P = 3 * pc.GEMMA_WINDOW, 5  # decode crosses the sliding window
  toks = tokens(2, T, seed=7)
  full = our_logits(model, toks)
  np.testing.assert_allclose(our_cached_logits(model, toks, P, T), full, atol=2e-5, rtol=0)


@pytest.mark.parametrize("name", ["gemma2", "gemma3"])
def test_flash_kernel_equals_dot_product(name):
  """The blocked kernel gets gemma3's traced per-layer window under scan; both layouts of remat'd layers."""
  spec = pc.GEMMA_SPECS[name].replace(scan_layers=True, remat_policy="full")
  toks = tokens(2, 3 * pc.GEMMA_WINDOW)
  want = our_logits(random_model(spec), toks)
  got = our_logits(random_model(spec.replace(attention="flash", flash_block_size=pc.GEMMA_WINDOW)), toks)
  np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)


# ---- HF config <-> our keys -------------------------------------------------------------------------------------

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


# ---- presets ----------------------------------------------------------------------------------------------------

PRESETS = sorted(p.stem for p in (pathlib.Path(__file__).parents[2] / "configs" / "models").glob("gemma*.yml")
                 if not p.stem.startswith("gemma4"))

# Published HF configs (config.json of google/<name>; text_config for the multimodal gemma3 4b/12b/27b):
# hidden, heads, kv heads, head_dim, intermediate, real layers, sliding window, query_pre_attn_scalar.
PUBLISHED = {
    "gemma-2b": (2048, 8, 1, 256, 16384, 18, 0, None),
    "gemma-7b": (3072, 16, 16, 256, 24576, 28, 0, None),
    "gemma2-2b": (2304, 8, 4, 256, 9216, 26, 4096, 256),
    "gemma2-9b": (3584, 16, 8, 256, 14336, 42, 4096, 256),
    "gemma2-27b": (4608, 32, 16, 128, 36864, 46, 4096, 144),
    "gemma3-4b": (2560, 8, 4, 256, 10240, 34, 1024, 256),
    "gemma3-12b": (3840, 16, 8, 256, 15360, 48, 1024, 256),
    "gemma3-27b": (5376, 32, 16, 128, 21504, 62, 1024, 168),
}
# vocab_size: presets keep MaxText's values (gemma/gemma2: 256128 = HF's 256000 padded to a multiple of 128;
# gemma3: 262144, the tokenizer's size, where HF's multimodal checkpoints carry 262208 rows).
VOCAB = {"gemma": (256000, 256128), "gemma2": (256000, 256128), "gemma3": (262144, 262208)}


def test_all_presets_listed():
  assert PRESETS == sorted(PUBLISHED)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_hyperparameters_are_published(name):
  s = model_spec(load_config(["base.yml", f"model_name={name}"], env={}))
  hidden, heads, kv, head_dim, inter, layers, window, qpas = PUBLISHED[name]
  real_layers = 2 * s.num_decoder_layers if s.decoder_block == "gemma2" else s.num_decoder_layers
  got = (s.emb_dim, s.num_query_heads, s.num_kv_heads, s.head_dim, s.mlp_dim, real_layers, s.sliding_window_size,
         s.query_pre_attn_scalar or (head_dim if qpas else None))
  assert got == (hidden, heads, kv, head_dim, inter, layers, window, qpas)
  assert s.vocab_size in VOCAB[s.decoder_block]
  assert s.logits_via_embedding and s.mlp_activations == ("gelu", "linear")
  if s.decoder_block == "gemma2":
    assert (s.attn_logits_soft_cap, s.final_logits_soft_cap) == (50.0, 30.0)
  if s.decoder_block == "gemma3":
    assert (s.local_rope_max_timescale, s.rope_max_timescale, s.rope_linear_scaling_factor) == (10_000, 1_000_000, 8.0)
