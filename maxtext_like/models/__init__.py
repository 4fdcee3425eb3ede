"""maxtext_like.models: decoder-only transformers in flax NNX.

Shape letters, used as name suffixes (`x_BTD`, `q_BTNH`, `k_LBSKH`) and in
docstrings throughout this package:

  B  batch                     N  query heads
  T  query sequence length     K  key/value heads
  S  key/value sequence length (= T in training; cache slots when decoding)
  D  embedding (emb_dim)       G  query heads per kv head (N = K * G)
  H  head_dim                  F  MLP hidden (mlp_dim)
  V  vocabulary                L  decoder layers
  C  a key block of the blocked ('flash') attention kernel
  J  parts of a cache entry's head_dim with their own quantization scale (models/kv_cache.py)

Lower-case h is H / 2 (rotary frequency pairs).

Entry points:

  spec = ModelSpec(vocab_size=128, emb_dim=64, ...)
  model = build_model(spec, nnx.Rngs(0))         # spec.decoder_block names a family (models/families/)
  logits_BTV = model(tokens_BT, positions_BT, segment_ids_BT, deterministic=True)
  logits_BTV, cache = model.prefill(prompt_BT, max_length=64)
  logits_B1V, cache = model.decode_step(next_B1, cache)
  count_params(spec)                              # via nnx.eval_shape

Sharding: parameters carry logical axis names ('vocab', 'embed', 'mlp',
'heads', 'kv_heads', 'kv', 'norm', 'layers'); see `sharding.py` for the
mapping to a mesh and for activation constraints.
"""

import importlib

# Imported on first use (PEP 562), so `maxtext_like.models.registry` stays importable without JAX (config validation).
_LAZY = {
    "KVCache": "maxtext_like.models.kv_cache",
    "ModelSpec": "maxtext_like.models.spec",
    "Transformer": "maxtext_like.models.transformer",
    "build_model": "maxtext_like.models.transformer",
    "count_params": "maxtext_like.models.transformer",
    "Family": "maxtext_like.models.family",
    "get_family": "maxtext_like.models.registry",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'maxtext_like.models' has no attribute {name!r}")
