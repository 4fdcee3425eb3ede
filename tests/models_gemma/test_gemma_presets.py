"""Every gemma/gemma2/gemma3 preset holds the published hyperparameters (parameter counts vs transformers:
families/test_parity.py). gemma4 presets are out of scope."""

import pathlib

import pytest

from maxtext_like.config import load_config
from maxtext_like.runtime.model_spec import model_spec

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
