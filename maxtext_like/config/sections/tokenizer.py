"""Tokenizer and vocabulary."""

from typing import Any, Literal

from maxtext_like.config.sections._base import F, NonNegFloat, NonNegInt, PosFloat, PosInt, Section


class TokenizerSection(Section):
  """Tokenizer and vocabulary. (MaxText: Tokenizer.)"""

  section_name = "tokenizer"

  vocab_size: int = F('The size of the vocabulary.')
  tokenizer_path: None | str = F('Path to the tokenizer model file.')
  tokenizer_type: Literal['sentencepiece', 'huggingface', 'tiktoken'] = F('The type of tokenizer.')
  use_chat_template: bool = F('Whether to use the chat template for tokenization.')
  chat_template_path: str = F('Path to chat template json file.')
  chat_template: str = F('Chat template to use with HF tokenizers. It should be a valid Jinja2-formatted template.')
  tokenize_train_data: bool = F('If False, assumes the training dataset is pre-tokenized.')
  tokenize_eval_data: bool = F('If False, assumes the evaluation dataset is pre-tokenized.')
  add_bos: bool = F('Whether to add a beginning-of-sentence token.')
  add_eos: bool = F('Whether to add an end-of-sentence token.')
  use_truncation: bool = F('If False, use chunking for long sequences instead of truncation.')
  num_vocab_tiling: int = F('Enables memory-saving optimization by tiling cross-entropy loss computation. >1 to enable.')
