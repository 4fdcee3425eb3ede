"""Data pipeline: documents -> tokens -> packed, batched LM batches (grain).

Public entry points (plain keyword arguments, no config object):
  make_text_iterator(...)       text files -> checkpointable batch iterator
  make_synthetic_iterator(...)  random tokens, same batch layout
  build_tokenizer(...)          'sentencepiece' | 'huggingface' | 'tiktoken'
  packing_efficiency(batch)     fraction of non-padding tokens
  global_batch.to_global_batch  per-process rows -> global jax.Arrays (imports JAX)

The batch layout (MaxText names) is documented in `features`. Typical use with
the embedded corpus and tokenizer (`maxtext_like.assets`):

    tok = build_tokenizer("sentencepiece", assets.tokenizer_path(),
                          add_bos=True, add_eos=True)
    train = make_text_iterator(
        files=[assets.corpus_path("train")], tokenizer=tok, seq_len=512,
        global_batch_size=8, shuffle=True, seed=0, packing=True,
        num_epoch=-1, process_index=jax.process_index(),
        process_count=jax.process_count())
    batch = next(train); state = train.get_state()   # JSON; save with ckpt
    evals = make_text_iterator(files=[assets.corpus_path("eval")], ...,
                               shuffle=False, num_epoch=1)   # finite
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
