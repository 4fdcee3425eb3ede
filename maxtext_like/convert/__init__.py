"""Checkpoint conversion between Hugging Face `transformers` (safetensors + config.json) and maxtext_like
(orbax params usable as `load_parameters_path`), both ways; see docs/convert.md.

  python -m maxtext_like.convert to_maxtext --hf_path DIR --output DIR [base.yml] [model_name=NAME] [k=v ...]
  python -m maxtext_like.convert to_hf --output DIR [base.yml] model_name=NAME load_parameters_path=DIR [k=v ...]

The per-family tensor mapping lives with the family (`maxtext_like/models/hf_registry.py` for the protocol);
this package only streams tensors, checks them and writes the files.
"""

from maxtext_like.convert.errors import ConvertError
from maxtext_like.convert.to_hf import to_hf
from maxtext_like.convert.to_maxtext import to_maxtext

__all__ = ["ConvertError", "to_hf", "to_maxtext"]
