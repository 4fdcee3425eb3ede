"""Data pipeline: documents -> tokens -> packed, batched LM batches (grain).

Public entry points (plain keyword arguments, no config object):
  make_text_iterator(...)       text files -> checkpointable batch iterator
  make_synthetic_iterator(...)  random tokens, same batch layout
  build_tokenizer(...)          'sentencepiece' | 'huggingface' | 'tiktoken'
  packing_efficiency(batch)     fraction of non-padding tokens

The batch layout (MaxText names) is documented in `features`.
"""

from maxtext_like.data.features import BATCH_KEYS, packing_efficiency
from maxtext_like.data.synthetic import make_synthetic_iterator
from maxtext_like.data.text_pipeline import PACKING_TYPES, make_text_iterator
from maxtext_like.data.tokenizers import Tokenizer, build_tokenizer, tokenizer_types

__all__ = [
    "BATCH_KEYS",
    "PACKING_TYPES",
    "Tokenizer",
    "build_tokenizer",
    "make_synthetic_iterator",
    "make_text_iterator",
    "packing_efficiency",
    "tokenizer_types",
]
