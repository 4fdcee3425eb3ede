"""Every gpt3 / olmo3 preset has the published hyperparameters (parameter counts vs transformers:
families/test_parity.py)."""

import pathlib

import pytest

from maxtext_like.config import load_config
from maxtext_like.runtime.model_spec import model_spec

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
