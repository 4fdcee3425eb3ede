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

Lower-case h is H / 2 (rotary frequency pairs).

Entry points:

  spec = ModelSpec(vocab_size=128, emb_dim=64, ...)
  model = build_model(spec, nnx.Rngs(0))         # registry by spec.decoder_block
  logits_BTV = model(tokens_BT, positions_BT, segment_ids_BT, deterministic=True)
  logits_BTV, cache = model.prefill(prompt_BT, max_length=64)
  logits_B1V, cache = model.decode_step(next_B1, cache)
  count_params(spec)                              # via nnx.eval_shape

Sharding: parameters carry logical axis names ('vocab', 'embed', 'mlp',
'heads', 'kv_heads', 'kv', 'norm', 'layers'); see `sharding.py` for the
mapping to a mesh and for activation constraints.
"""

from maxtext_like.models import llama2  # noqa: F401  (registers 'llama2', 'mistral')
from maxtext_like.models import gemma, gemma2, gemma3  # noqa: F401  (register 'gemma', 'gemma2', 'gemma3')
from maxtext_like.models import qwen2, qwen3  # noqa: F401  (register 'qwen2', 'qwen3')
from maxtext_like.models import mixtral, qwen3_moe  # noqa: F401  (register 'mixtral', 'qwen3_moe')
from maxtext_like.models import gpt3, olmo  # noqa: F401  (register 'gpt3', 'olmo3')
from maxtext_like.models import deepseek  # noqa: F401  (registers 'deepseek')
from maxtext_like.models import gpt_oss  # noqa: F401  (registers 'gpt_oss')
from maxtext_like.models.kv_cache import KVCache
from maxtext_like.models.registry import DECODER_BLOCKS, register_decoder_block
from maxtext_like.models.spec import ModelSpec
from maxtext_like.models.transformer import Transformer, build_model, count_params

__all__ = [
    "DECODER_BLOCKS",
    "KVCache",
    "ModelSpec",
    "Transformer",
    "build_model",
    "count_params",
    "register_decoder_block",
]
