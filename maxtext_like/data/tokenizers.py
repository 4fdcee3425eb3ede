"""Tokenizers behind one interface, chosen by `tokenizer_type` through a registry.

    tok = build_tokenizer("sentencepiece", assets.tokenizer_path(),
                          add_bos=True, add_eos=True)
    ids = tok.encode("Hello")          # [bos, ..., eos]
    tok.decode(ids) == "Hello"         # special ids are dropped

Registered types:
  * "sentencepiece": a `.model` file (e.g. the embedded `embedded_sp4096.model`).
  * "huggingface": a `tokenizer.json` file (loaded with `tokenizers`) or a
    local directory (loaded with `transformers.AutoTokenizer`, offline).
  * "tiktoken": a local `.tiktoken` BPE ranks file, laid out like Llama 3 (the
    regex split pattern and 256 special tokens after the ranks; bos is
    `<|begin_of_text|>`, eos `<|end_of_text|>`, pad `<|finetune_right_pad_id|>`).

Every tokenizer pickles by path, so it can be sent to grain worker processes.
"""

from __future__ import annotations

import abc
import difflib
import os
from typing import Callable, Sequence


class Tokenizer(abc.ABC):
  """Text <-> token ids. `encode` adds bos/eos as configured at build time."""

  def __init__(self, path: str, add_bos: bool, add_eos: bool):
    self.path, self.add_bos, self.add_eos = path, add_bos, add_eos

  def __reduce__(self):
    return (type(self), (self.path, self.add_bos, self.add_eos))

  @property
  @abc.abstractmethod
  def vocab_size(self) -> int: ...

  @property
  @abc.abstractmethod
  def bos_id(self) -> int: ...

  @property
  @abc.abstractmethod
  def eos_id(self) -> int: ...

  @property
  @abc.abstractmethod
  def pad_id(self) -> int: ...

  @abc.abstractmethod
  def _encode(self, text: str) -> list[int]:
    """Ids of `text` without bos/eos."""

  @abc.abstractmethod
  def _decode(self, ids: list[int]) -> str:
    """Text of `ids` (special ids already removed)."""

  def encode(
      self,
      text: str,
      *,
      add_bos: bool | None = None,
      add_eos: bool | None = None,
  ) -> list[int]:
    """Ids of `text`; `add_bos`/`add_eos` override the build-time flags."""
    ids = self._encode(text)
    if self.add_bos if add_bos is None else add_bos:
      ids = [self._special("bos", self.bos_id)] + ids
    if self.add_eos if add_eos is None else add_eos:
      ids = ids + [self._special("eos", self.eos_id)]
    return ids

  def _special(self, name: str, token_id: int) -> int:
    if token_id < 0:
      raise ValueError(f"{self.path}: the tokenizer has no {name} token")
    return token_id

  def decode(self, ids: Sequence[int]) -> str:
    special = {self.bos_id, self.eos_id, self.pad_id}
    return self._decode([int(i) for i in ids if int(i) not in special])

  def __repr__(self) -> str:
    return (
        f"{type(self).__name__}(path={self.path!r}, vocab_size="
        f"{self.vocab_size}, bos={self.bos_id}, eos={self.eos_id},"
        f" pad={self.pad_id}, add_bos={self.add_bos}, add_eos={self.add_eos})"
    )


_REGISTRY: dict[str, Callable[[str, bool, bool], Tokenizer]] = {}


def register_tokenizer(name: str):
  """Class decorator adding a `Tokenizer` subclass under `tokenizer_type=name`."""

  def wrap(cls):
    _REGISTRY[name] = cls
    return cls

  return wrap


def tokenizer_types() -> tuple[str, ...]:
  return tuple(sorted(_REGISTRY))


def build_tokenizer(
    tokenizer_type: str,
    tokenizer_path: str,
    add_bos: bool = True,
    add_eos: bool = True,
) -> Tokenizer:
  """Builds the tokenizer registered as `tokenizer_type` from a local path."""
  if tokenizer_type not in _REGISTRY:
    close = difflib.get_close_matches(tokenizer_type, _REGISTRY, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"unknown tokenizer_type {tokenizer_type!r}; expected one of"
        f" {tokenizer_types()}{hint}"
    )
  if not tokenizer_path or not os.path.exists(tokenizer_path):
    raise FileNotFoundError(
        f"tokenizer_path {tokenizer_path!r} (tokenizer_type={tokenizer_type!r})"
        " does not exist. Give a local file or directory; nothing is"
        " downloaded. The embedded default is"
        " maxtext_like.assets.tokenizer_path()."
    )
  return _REGISTRY[tokenizer_type](
      os.fspath(tokenizer_path), bool(add_bos), bool(add_eos)
  )


@register_tokenizer("sentencepiece")
class SentencePieceTokenizer(Tokenizer):
  """A sentencepiece `.model` file."""

  def __init__(self, path: str, add_bos: bool, add_eos: bool):
    super().__init__(path, add_bos, add_eos)
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top

    self._sp = spm.SentencePieceProcessor(model_file=path)

  vocab_size = property(lambda self: self._sp.vocab_size())
  bos_id = property(lambda self: self._sp.bos_id())
  eos_id = property(lambda self: self._sp.eos_id())
  pad_id = property(lambda self: self._sp.pad_id())

  def _encode(self, text: str) -> list[int]:
    return self._sp.encode(text)

  def _decode(self, ids: list[int]) -> str:
    return self._sp.decode(ids)


_BOS_NAMES = ("<|begin_of_text|>", "<s>", "<bos>", "[CLS]", "<|endoftext|>")
_EOS_NAMES = ("<|end_of_text|>", "</s>", "<eos>", "[SEP]", "<|endoftext|>")
_PAD_NAMES = ("<pad>", "[PAD]", "<|finetune_right_pad_id|>", "<|pad|>")


@register_tokenizer("huggingface")
class HuggingFaceTokenizer(Tokenizer):
  """A local `tokenizer.json` file or a local Hugging Face tokenizer directory.

  For a bare `tokenizer.json` the special ids are found by their usual names
  (`<s>`, `<|begin_of_text|>`, ...); pad falls back to eos when absent.
  """

  def __init__(self, path: str, add_bos: bool, add_eos: bool):
    super().__init__(path, add_bos, add_eos)
    if os.path.isdir(path):
      import transformers  # pylint: disable=g-import-not-at-top

      hf = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
      self._encode_fn = lambda text: hf.encode(text, add_special_tokens=False)
      self._decode_fn = lambda ids: hf.decode(ids, skip_special_tokens=False)
      self._vocab = len(hf)
      bos, eos, pad = hf.bos_token_id, hf.eos_token_id, hf.pad_token_id
    else:
      import tokenizers  # pylint: disable=g-import-not-at-top

      tok = tokenizers.Tokenizer.from_file(path)
      self._encode_fn = lambda text: tok.encode(text, add_special_tokens=False).ids
      self._decode_fn = lambda ids: tok.decode(ids, skip_special_tokens=False)
      self._vocab = tok.get_vocab_size(with_added_tokens=True)
      bos, eos, pad = (
          next((i for n in names if (i := tok.token_to_id(n)) is not None), None)
          for names in (_BOS_NAMES, _EOS_NAMES, _PAD_NAMES)
      )
    self._bos = -1 if bos is None else bos
    self._eos = -1 if eos is None else eos
    self._pad = pad if pad is not None else self._eos

  vocab_size = property(lambda self: self._vocab)
  bos_id = property(lambda self: self._bos)
  eos_id = property(lambda self: self._eos)
  pad_id = property(lambda self: self._pad)

  def _encode(self, text: str) -> list[int]:
    return list(self._encode_fn(text))

  def _decode(self, ids: list[int]) -> str:
    return self._decode_fn(ids)


_LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3_SPECIALS = (
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>",
    "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>",
    "<|python_tag|>",
)
_NUM_SPECIALS = 256


@register_tokenizer("tiktoken")
class TiktokenTokenizer(Tokenizer):
  """A `.tiktoken` ranks file with Llama 3's split pattern and special tokens.

  Text that looks like a special token is encoded as plain text.
  """

  def __init__(self, path: str, add_bos: bool, add_eos: bool):
    super().__init__(path, add_bos, add_eos)
    import tiktoken  # pylint: disable=g-import-not-at-top
    from tiktoken import load as tiktoken_load  # pylint: disable=g-import-not-at-top

    ranks = tiktoken_load.load_tiktoken_bpe(path)
    n = len(ranks)
    names = list(_LLAMA3_SPECIALS) + [
        f"<|reserved_special_token_{i}|>"
        for i in range(2, _NUM_SPECIALS - len(_LLAMA3_SPECIALS) + 2)
    ]
    specials = {name: n + i for i, name in enumerate(names)}
    self._enc = tiktoken.Encoding(
        name=os.path.basename(path),
        pat_str=_LLAMA3_PATTERN,
        mergeable_ranks=ranks,
        special_tokens=specials,
    )
    self._bos = specials["<|begin_of_text|>"]
    self._eos = specials["<|end_of_text|>"]
    self._pad = specials["<|finetune_right_pad_id|>"]

  vocab_size = property(lambda self: self._enc.n_vocab)
  bos_id = property(lambda self: self._bos)
  eos_id = property(lambda self: self._eos)
  pad_id = property(lambda self: self._pad)

  def _encode(self, text: str) -> list[int]:
    return self._enc.encode(text, allowed_special=set(), disallowed_special=())

  def _decode(self, ids: list[int]) -> str:
    return self._enc.decode(ids)
