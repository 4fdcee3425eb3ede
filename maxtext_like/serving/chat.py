"""Chat templates: find the model's template, render messages with it, and encode the result.

The template comes from the config's `chat_template` (Jinja text), else `chat_template_path` (a Jinja file, or a
JSON file with a "chat_template" key), else the Hugging Face tokenizer's own (`chat_template.jinja` or the
"chat_template" of `tokenizer_config.json` next to `tokenizer_path`). It renders as `transformers` renders it
(sandboxed Jinja, trim_blocks / lstrip_blocks, `raise_exception`, `tojson`, `strftime_now`), so a Hub template
gives the same prompt here as in `tokenizer.apply_chat_template`.

Rendered text holds special tokens as text (`<|eot_id|>`, `<s>`). Hugging Face tokenizers match their added tokens
themselves; for sentencepiece (control pieces) and tiktoken (the special-token table) `encode_with_specials`
splits them out, so a template's `bos_token` becomes the bos id and not the characters "<s>".
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import re

from maxtext_like.config import Config
from maxtext_like.data.tokenizers import SentencePieceTokenizer, TiktokenTokenizer, Tokenizer


class ChatTemplateError(ValueError):
  """No template, or one that does not load or render."""


def _hf_dir(tokenizer_path: str) -> str | None:
  if os.path.isdir(tokenizer_path):
    return tokenizer_path
  if tokenizer_path.endswith(".json"):
    return os.path.dirname(tokenizer_path) or "."
  return None


def _read_json(path: str) -> dict:
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def find_template(cfg: Config, tokenizer_path: str) -> tuple[str | None, str]:
  """(template text or None, where it came from)."""
  t = cfg.tokenizer
  if t.chat_template:
    return t.chat_template, "chat_template"
  if t.chat_template_path:
    path = t.chat_template_path
    if not os.path.isfile(path):
      raise FileNotFoundError(f"chat_template_path {path!r} does not exist")
    if path.endswith(".json"):
      data = _read_json(path)
      text = data if isinstance(data, str) else data.get("chat_template")
      if not isinstance(text, str):
        raise ChatTemplateError(f"chat_template_path {path}: a JSON file needs a string 'chat_template' field")
      return text, path
    with open(path, encoding="utf-8") as f:
      return f.read(), path
  if t.tokenizer_type == "huggingface" and (d := _hf_dir(tokenizer_path)) is not None:
    jinja = os.path.join(d, "chat_template.jinja")
    if os.path.isfile(jinja):
      with open(jinja, encoding="utf-8") as f:
        return f.read(), jinja
    conf = os.path.join(d, "tokenizer_config.json")
    if os.path.isfile(conf):
      text = _read_json(conf).get("chat_template")
      if isinstance(text, list):  # named templates: the default one
        text = next((x["template"] for x in text if x.get("name") == "default"), None)
      if isinstance(text, str):
        return text, conf
  return None, "none"


@functools.cache
def _compile(template: str):
  import jinja2
  import jinja2.ext
  from jinja2.sandbox import ImmutableSandboxedEnvironment

  def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)

  def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

  env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
  env.filters["tojson"] = tojson
  env.globals["raise_exception"] = raise_exception
  env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
  try:
    return env.from_string(template)
  except jinja2.exceptions.TemplateError as e:
    raise ChatTemplateError(f"the chat template does not parse: {e}") from None


def special_tokens(tok: Tokenizer) -> dict[str, int]:
  """Special-token text -> id, for tokenizers whose `encode` treats that text as plain characters."""
  if isinstance(tok, SentencePieceTokenizer):
    sp = tok._sp  # pylint: disable=protected-access
    return {sp.id_to_piece(i): i for i in range(sp.vocab_size()) if sp.is_control(i)}
  if isinstance(tok, TiktokenTokenizer):
    enc = tok._enc  # pylint: disable=protected-access
    return {name: enc.encode_single_token(name) for name in enc.special_tokens_set}
  return {}


def special_token_text(tok: Tokenizer, token_id: int) -> str:
  """A special token's text (bos_token / eos_token in templates); '' when the tokenizer has none."""
  if token_id < 0:
    return ""
  for text, i in special_tokens(tok).items():
    if i == token_id:
      return text
  if tok.path.endswith(".json") or os.path.isdir(tok.path):
    import tokenizers
    path = os.path.join(tok.path, "tokenizer.json") if os.path.isdir(tok.path) else tok.path
    if os.path.isfile(path):
      return tokenizers.Tokenizer.from_file(path).id_to_token(token_id) or ""
  return ""


class ChatFormatter:
  """Messages -> prompt ids with one model's template and tokenizer."""

  @classmethod
  def for_config(cls, cfg: Config, tok: Tokenizer) -> "ChatFormatter":
    """The formatter of the config's template (`find_template`) for its tokenizer."""
    from maxtext_like.runtime.tokenizer import tokenizer_path
    return cls(*find_template(cfg, tokenizer_path(cfg)), tok)

  def __init__(self, template: str | None, source: str, tok: Tokenizer):
    self.template, self.source, self.tok = template, source, tok
    self._compiled = None if template is None else _compile(template)
    self._specials = special_tokens(tok)
    self._split = None if not self._specials else re.compile(
        "(" + "|".join(re.escape(s) for s in sorted(self._specials, key=len, reverse=True)) + ")")
    self.bos_token, self.eos_token = special_token_text(tok, tok.bos_id), special_token_text(tok, tok.eos_id)

  def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
    if self._compiled is None:
      raise ChatTemplateError("this model has no chat template: set chat_template or chat_template_path, or use a "
                              "Hugging Face tokenizer directory that carries one")
    import jinja2
    try:
      return self._compiled.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                   bos_token=self.bos_token, eos_token=self.eos_token)
    except jinja2.exceptions.TemplateError as e:
      raise ChatTemplateError(f"the chat template refused these messages: {e}") from None

  def encode(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
    """The rendered conversation's ids; no bos/eos beyond what the template writes (as apply_chat_template)."""
    return encode_with_specials(self.tok, self.render(messages, add_generation_prompt), self._split, self._specials)


def encode_with_specials(tok: Tokenizer, text: str, split: re.Pattern | None, specials: dict[str, int]) -> list[int]:
  if split is None:
    return tok.encode(text, add_bos=False, add_eos=False)
  ids: list[int] = []
  for piece in split.split(text):
    if piece in specials:
      ids.append(specials[piece])
    elif piece:
      ids.extend(tok.encode(piece, add_bos=False, add_eos=False))
  return ids


def generation_stop_ids(cfg: Config, tokenizer_path: str) -> tuple[int, ...]:
  """Extra end-of-turn ids a Hugging Face model declares (generation_config.json's eos_token_id), so a chat reply
  ends at `<|eot_id|>` / `<|im_end|>` and not only at the tokenizer's eos."""
  if cfg.tokenizer.tokenizer_type != "huggingface" or (d := _hf_dir(tokenizer_path)) is None:
    return ()
  path = os.path.join(d, "generation_config.json")
  if not os.path.isfile(path):
    return ()
  eos = _read_json(path).get("eos_token_id")
  return tuple(int(i) for i in ([eos] if isinstance(eos, int) else (eos or [])))
